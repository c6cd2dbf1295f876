"""MGRIT cost and speed on the Peaks network (width 8, smooth ReLU, 5000 examples).

1. The cost of one simultaneous-mode gradient evaluation (fwd_iterations forward
   and bwd_iterations adjoint cycles, warm-started) relative to a serial one: in
   step evaluations (serial = 2N) and in seconds, same process, one thread.
2. The cost of two forward MGRIT cycles in serial forward sweeps (steps / N and
   seconds / serial-sweep seconds), one thread.
3. The MGRIT forward solve (fixed cycles) of a deep network (N = 1024) with 2
   threads over the intervals against 1 thread.
4. Seconds per simultaneous-mode training iteration of examples/peaks.toml.

Medians of repeats after warm-up; every ratio is measured in the same run.

    python benchmarks/python/bench_mgrit.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from timing import median_seconds

from layerparallel import _core, show_config
from layerparallel.config import load_config, relax_levels
from layerparallel.data import generate_peaks, load_dataset
from layerparallel.model import Regularization, ResNet
from layerparallel.train import build_model, train

ROOT = Path(__file__).resolve().parents[2]


def options(cfactor, relax, min_coarse, threads=1, max_levels=10):
    return {"cfactor": cfactor, "relax": relax_levels(relax), "min_coarse": min_coarse, "threads": threads,
            "max_levels": max_levels, "max_iter": 100}


def peaks_model(layers, seed=0):
    model = ResNet(2, 5, 8, layers, 5.0, "smooth_relu", "dense", regularization=Regularization(1e-7, 1e-7, 1e-7))
    rng = np.random.default_rng(seed)
    model.theta[:] = rng.normal(scale=0.1, size=model.size)
    return model


def cost_rows(repeats, data):
    rows = []
    model = peaks_model(32)
    X, y = data.train_x, data.train_y
    _core.set_num_threads(1)
    t_serial = median_seconds(lambda: model.evaluate(X, y), repeats)
    # The serial forward sweep as the engine runs it on one level: the same opening,
    # classifier and reused buffers as the MGRIT forward-only evaluation it is compared
    # with (forward_states allocates its output on every call, which made the ratio
    # swing between runs).
    one = options(2, "F", 10, max_levels=1)
    serial_fwd = _core.ResNetMgrit(model.core, X.shape[0], one, one)
    r0 = model.regularization
    t_fwd = median_seconds(lambda: serial_fwd.evaluate(model.theta, X, y, r0.tikhonov, r0.classifier, r0.ddt, -1, -1,
                                                       False), repeats)
    N = model.layers
    for cf, relax, mc in ((2, "F,FCF", 10), (4, "F,FCF", 10), (4, "F", 2), (2, "F,FCF", 2)):
        opts = options(cf, relax, mc)
        solver = _core.ResNetMgrit(model.core, X.shape[0], opts, opts)
        r = model.regularization

        def sim():
            return solver.evaluate(model.theta, X, y, r.tikhonov, r.classifier, r.ddt, 2, 2, True)

        d = sim()
        t_sim = median_seconds(sim, repeats)
        fwd_only = lambda: solver.evaluate(model.theta, X, y, r.tikhonov, r.classifier, r.ddt, 2, 2, False)
        dfo = fwd_only()
        t_fwd2 = median_seconds(fwd_only, repeats)
        rows.append({
            "case": "peaks N=32 s=5000, 1 thread", "cfactor": cf, "relax": relax, "min_coarse": mc,
            "levels": solver.levels,
            "sim_steps_over_serial": (d["forward"]["steps"] + d["adjoint"]["steps"]) / (2 * N),
            "sim_seconds_over_serial": t_sim / t_serial,
            "two_fwd_cycles_in_sweeps_steps": dfo["forward"]["steps"] / N,
            "two_fwd_cycles_in_sweeps_seconds": t_fwd2 / t_fwd,
            "serial_ms": 1e3 * t_serial, "sim_ms": 1e3 * t_sim,
        })
    return rows


def thread_rows(repeats, data, layers=1024, examples=5000):
    model = peaks_model(layers)
    X, y = data.train_x[:examples], data.train_y[:examples]
    out = []
    for cf, relax, mc in ((4, "F,FCF", 10), (2, "F,FCF", 10)):
        times = {}
        for threads in (1, 2):
            _core.set_num_threads(threads)
            opts = options(cf, relax, mc, threads=threads)
            solver = _core.ResNetMgrit(model.core, X.shape[0], opts, opts)
            r = model.regularization
            times[threads] = median_seconds(
                lambda: solver.evaluate(model.theta, X, y, r.tikhonov, r.classifier, r.ddt, 2, 2, False), repeats)
        out.append({"case": f"forward solve, 2 cycles, N={layers}, s={examples}", "cfactor": cf, "relax": relax,
                    "t1_ms": 1e3 * times[1], "t2_ms": 1e3 * times[2], "speedup_2_over_1": times[1] / times[2]})
    _core.set_num_threads(0)
    return out


def training_rows(config, iterations, threads_list=(1, 2)):
    out = []
    for threads in threads_list:
        for mode in ("serial", "simultaneous"):
            cfg = load_config(config, [f'train.mode="{mode}"', f"optimizer.max_iter={iterations}",
                                       f"train.threads={threads}"])
            data = load_dataset(cfg.data, cfg.base_dir)
            model = build_model(cfg, data)
            res = train(model, data, cfg)
            out.append({"case": f"{Path(config).name} training", "mode": mode, "threads": threads,
                        "iterations": res.iterations, "seconds_per_iteration": res.seconds / max(1, res.iterations),
                        "val_accuracy": res.final["val_accuracy"]})
    _core.set_num_threads(0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=100, help="training iterations for part 4")
    ap.add_argument("--config", default=str(ROOT / "examples" / "peaks.toml"))
    args = ap.parse_args(argv)
    show_config(file=sys.stdout, mpi=False, prefix="# ")
    data = generate_peaks(5000, 200, seed=0)
    for row in cost_rows(args.repeats, data):
        print(json.dumps(row))
    for row in thread_rows(max(3, args.repeats // 3), data):
        print(json.dumps(row))
    for row in training_rows(args.config, args.iterations):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
