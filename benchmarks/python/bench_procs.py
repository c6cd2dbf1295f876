"""Two processes splitting the layers versus one process, measured on this machine
(issue 4, item 9): the wall time of an MGRIT forward solve to tolerance (Peaks
network with N = 1024 layers, cold start) and of a simultaneous-mode training
iteration of examples/peaks.toml (N = 32). Every process runs one thread; one
process with two threads is shown for comparison. Medians of repeats.

Usage:
  python benchmarks/python/bench_procs.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _env(threads: int) -> dict:
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS=str(threads))
    return e


def worker(args: argparse.Namespace) -> None:
    """Under mpiexec: time the solve and the training iterations, print JSON on rank 0."""
    import numpy as np
    from mpi4py import MPI

    from layerparallel import _core
    from layerparallel.config import load_config
    from layerparallel.data import load_dataset
    from layerparallel.model import as_matrix
    from layerparallel.parallel import core_comm, ProcessGrid
    from layerparallel.train import build_model, train

    comm = MPI.COMM_WORLD
    P = comm.Get_size()
    _core.set_num_threads(args.threads)
    out = {}
    # 1. MGRIT forward solve, N = 1024, to tolerance from the default guess.
    cfg = load_config(ROOT / "examples" / "peaks.toml", ["model.layers=1024", "data.train_size=1000",
                                                         "data.val_size=10"])
    data = load_dataset(cfg.data, cfg.base_dir)
    model = build_model(cfg, data)
    c = cfg.mgrit
    opts = {"cfactor": c.cfactor, "min_coarse": c.min_coarse, "relax": c.relax, "threads": args.threads}
    core = core_comm(comm) if P > 1 else None
    s = _core.ResNetMgrit(model.core, 1000, opts, opts, core)
    s.set_relative_tolerance(1e-9)
    X, y = as_matrix(data.train_x), data.train_y
    times = []
    for k in range(args.repeats + 2):
        s.reset()
        comm.Barrier()
        t0 = time.perf_counter()
        d = s.evaluate(model.theta, X, y, 0.0, 0.0, 0.0, -1, -1, False)
        t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        if k >= 2:
            times.append(t)
    out["solve"] = statistics.median(times)
    out["solve_cycles"] = d["forward"]["cycles"]
    # 2. Simultaneous training iterations of the Peaks example.
    cfg = load_config(ROOT / "examples" / "peaks.toml", ['train.mode="simultaneous"', f"train.threads={args.threads}",
                                                         f"optimizer.max_iter={args.iterations}",
                                                         f"parallel.layer_procs={P}", "train.eval_every=1000000"])
    data = load_dataset(cfg.data, cfg.base_dir)
    per_it = []
    for _ in range(max(3, args.repeats // 3)):
        model = build_model(cfg, data)
        grid = ProcessGrid.create(comm, P, 1)
        comm.Barrier()
        res = train(model, data, cfg, grid=grid)
        per_it.append(comm.allreduce(res.seconds, op=MPI.MAX) / max(1, res.iterations))
    out["iteration"] = statistics.median(per_it)
    out["val_accuracy"] = res.final["val_accuracy"]
    if comm.Get_rank() == 0:
        print(json.dumps(out))


def run(procs: int, threads: int, repeats: int, iterations: int) -> dict:
    exe = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    cmd = [exe, "--bind-to", "none", "-n", str(procs), sys.executable, str(Path(__file__).resolve()), "--worker", "--threads",
           str(threads), "--repeats", str(repeats), "--iterations", str(iterations)]
    r = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    one = run(1, 1, args.repeats, args.iterations)
    two = run(2, 1, args.repeats, args.iterations)
    threads = run(1, 2, args.repeats, args.iterations)
    print("| run | MGRIT solve, N = 1024 | simultaneous iteration, Peaks |")
    print("|---|---|---|")
    print(f"| 1 process, 1 thread | {one['solve'] * 1e3:.1f} ms ({one['solve_cycles']} cycles) | "
          f"{one['iteration'] * 1e3:.2f} ms |")
    print(f"| 2 processes, 1 thread each | {two['solve'] * 1e3:.1f} ms ({two['solve_cycles']} cycles) | "
          f"{two['iteration'] * 1e3:.2f} ms |")
    print(f"| 1 process, 2 threads | {threads['solve'] * 1e3:.1f} ms | {threads['iteration'] * 1e3:.2f} ms |")
    print(f"| **2 processes vs 1** | **{one['solve'] / two['solve']:.2f}x** | "
          f"**{one['iteration'] / two['iteration']:.2f}x** |")
    print(f"\nvalidation accuracy after {args.iterations} iterations: 1 process {one['val_accuracy']:.3f}, "
          f"2 processes {two['val_accuracy']:.3f}")


if __name__ == "__main__":
    main()
