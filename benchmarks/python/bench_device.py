"""Training on a device against the CPU: the wall time of one simultaneous-mode
gradient (the work of one training iteration whose line search takes the first
step) and of whole training iterations, for the Peaks example (width 8, the
one-thread-per-example kernels) and a wide network (width 128, the cuBLAS path).

On a machine with a usable CUDA device the "cuda" rows are measured and the
ratios to the CPU printed. Without one they are skipped with the reason from
the compiled library (no GPU figure is ever made up). Before timing, every
device's objective and gradient are checked against the CPU's; the "emulator"
device (the CUDA kernel bodies run on the CPU) takes part in that check only,
its times are not a performance figure.

Usage:
  python benchmarks/python/bench_device.py [--repeats 7] [--examples 5000]
"""
from __future__ import annotations

import argparse
import json
import sys
import statistics
import time
from pathlib import Path

import numpy as np

from layerparallel import _core, show_config
from layerparallel.config import load_config
from layerparallel.data import load_dataset
from layerparallel.device import cuda_available
from layerparallel.model import as_matrix
from layerparallel.train import build_model, train

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "peaks (w 8, N 32)": ["model.layers=32", "model.width=8"],
    "wide (w 128, N 64)": ["model.layers=64", "model.width=128"],
}


def solver_for(model, s, cfg, device):
    c = cfg.mgrit
    opts = {"cfactor": c.cfactor, "min_coarse": c.min_coarse, "relax": c.relax, "threads": 0,
            "max_levels": c.max_levels}
    solver = _core.ResNetMgrit(model.core, s, opts, opts, None, device)
    solver.set_relative_tolerance(c.tol)
    return solver


def time_gradient(solver, model, X, y, r, repeats):
    solver.evaluate(model.theta, X, y, r.tikhonov, r.classifier, r.ddt, -1, -1)  # warm start, exact
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        solver.evaluate(model.theta, X, y, r.tikhonov, r.classifier, r.ddt, 2, 2)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_training(cfg_overrides, device, iterations):
    cfg = load_config(ROOT / "examples" / "peaks.toml",
                      cfg_overrides + [f'train.device="{device}"', 'train.mode="simultaneous"',
                                       f"optimizer.max_iter={iterations}", "train.eval_every=1000000"])
    data = load_dataset(cfg.data, cfg.base_dir)
    model = build_model(cfg, data)
    t0 = time.perf_counter()
    result = train(model, data, cfg)
    return (time.perf_counter() - t0) / max(result.iterations, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--iterations", type=int, default=10, help="training iterations timed per device")
    args = ap.parse_args()
    show_config(file=sys.stdout, mpi=False, prefix="# ")
    devices = ["cpu"] + (["cuda"] if cuda_available() else [])
    out = {"cuda": _core.cuda_status(), "cases": {}}
    if not cuda_available():
        print(f"cuda: skipped ({_core.cuda_status()})")
    for name, overrides in CASES.items():
        ov = overrides + [f"data.train_size={args.examples}", "data.val_size=10"]
        cfg = load_config(ROOT / "examples" / "peaks.toml", ov)
        data = load_dataset(cfg.data, cfg.base_dir)
        model = build_model(cfg, data)
        model.theta += np.random.default_rng(0).normal(scale=0.05, size=model.size)
        X, y = as_matrix(data.train_x), data.train_y
        s = X.shape[0]
        r = model.regularization
        # Agreement first: every device (the emulator on a small slice) against the CPU.
        check = {}
        for dev in devices[1:] + ["emulator"]:
            k = s if dev != "emulator" else min(s, 200)
            a = solver_for(model, k, cfg, "cpu").evaluate(model.theta, X[:k], y[:k], r.tikhonov, r.classifier,
                                                           r.ddt, -1, -1)
            b = solver_for(model, k, cfg, dev).evaluate(model.theta, X[:k], y[:k], r.tikhonov, r.classifier,
                                                         r.ddt, -1, -1)
            err = float(np.abs(b["gradient"] - a["gradient"]).max() / np.abs(a["gradient"]).max())
            check[dev] = err
            assert err < 1e-9, f"{dev} gradient differs from the CPU's by {err:.2e} (relative)"
        row = {"examples": s, "gradient_check_max_rel_error": check}
        for dev in devices:
            row[f"{dev}_gradient_s"] = time_gradient(solver_for(model, s, cfg, dev), model, X, y, r, args.repeats)
            row[f"{dev}_iteration_s"] = time_training(ov, dev, args.iterations)
        if "cuda" in devices:
            row["cuda_speedup_gradient"] = row["cpu_gradient_s"] / row["cuda_gradient_s"]
            row["cuda_speedup_iteration"] = row["cpu_iteration_s"] / row["cuda_iteration_s"]
        out["cases"][name] = row
        print(name, json.dumps(row))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
