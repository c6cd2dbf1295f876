"""Strong scaling of one gradient evaluation over processes splitting the layers,
predicted from traced runs (issue 4), plus the measured 2-versus-1-process ratio.

Sub-commands (the ``run`` and ``pingpong`` ones are started by the others
under mpiexec; you normally call ``all``):

  run       under ``mpiexec -n P``: Peaks network with N layers; for each mode
            (serial pipeline, exact MGRIT from a cold start, simultaneous with
            the example's budget of 2 + 2 warm-started cycles) times R gradient
            evaluations, each traced by core_comm (compute spans in thread CPU
            time, every message and collective); rank 0 writes a JSON file.
  pingpong  under ``mpiexec -n 2``: latency and bandwidth of this machine's MPI
            (median half round trip for 8 B and 4 MiB messages).
  all       runs everything and prints the tables for benchmarks/RESULTS.md;
            writes the plot.

Every process runs one thread (``train.threads = 1``): the trace then holds
all of a process's compute. Oversubscribed runs (P > 2 on two cores) yield
valid traces because thread CPU time does not count time spent descheduled;
their wall time is not meaningful and is not reported.

Usage:
  python benchmarks/python/bench_scaling.py all --procs 1 2 4 8 16 32 64 --layers 1024 4096
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODES = ("serial", "exact", "simultaneous")
#: The modelled cluster interconnect for the predictions (a typical InfiniBand-class
#: network: 2 microseconds latency, 10 GB/s per link). The validation at P = 1, 2 uses
#: the parameters measured on this machine instead.
CLUSTER = {"latency": 2e-6, "bandwidth": 10e9}


def _env() -> dict:
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
             PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
             # Waiting processes yield the core instead of spinning (oversubscribed runs).
             OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")
    e.pop("GOMP_SPINCOUNT", None)
    return e


def _mpiexec() -> str:
    exe = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    if not Path(exe).exists():
        raise SystemExit("mpiexec not found: pip install 'layerparallel[mpi]'")
    return exe


# ---------------------------------------------------------------------- under mpiexec

def cmd_run(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from layerparallel.config import load_config
    from layerparallel.data import load_dataset
    from layerparallel.parallel import core_comm, LayerParallelSolver, ProcessGrid
    from layerparallel.train import build_model, make_solver
    from layerparallel.model import as_matrix
    from layerparallel import _core

    comm = MPI.COMM_WORLD
    P, rank = comm.Get_size(), comm.Get_rank()
    _core.set_num_threads(1)
    out = {"procs": P, "layers": args.layers, "examples": args.examples, "modes": {}}
    if P == 1:
        # The baseline: ordinary backpropagation, the fused serial sweeps of the
        # serial mode on one process (no MGRIT machinery, no messages).
        cfg = load_config(ROOT / "examples" / "peaks.toml",
                          [f"model.layers={args.layers}", f"data.train_size={args.examples}", "data.val_size=10",
                           "train.threads=1"])
        data = load_dataset(cfg.data, cfg.base_dir)
        model = build_model(cfg, data)
        X, y = as_matrix(data.train_x), data.train_y
        core = core_comm(comm)
        model.evaluate(X, y, gradient=True)
        walls, traces = [], []
        for _ in range(args.repeats):
            core.start_trace()
            t0 = time.perf_counter()
            model.evaluate(X, y, gradient=True)
            walls.append(time.perf_counter() - t0)
            traces.append([core.stop_trace()])
        out["modes"]["sweeps"] = {"walls": walls, "traces": traces, "cycles": None}
    for mode in args.modes:
        cfg = load_config(ROOT / "examples" / "peaks.toml",
                          [f"model.layers={args.layers}", f"data.train_size={args.examples}", "data.val_size=10",
                           f'train.mode="{mode}"', "train.threads=1", f"parallel.layer_procs={P}", *args.set])
        data = load_dataset(cfg.data, cfg.base_dir)
        model = build_model(cfg, data)
        grid = ProcessGrid.create(comm, P, 1)
        core = core_comm(grid.layer_comm)
        solver = LayerParallelSolver(make_solver(cfg, model, comm=core), grid, core)
        X, y = as_matrix(data.train_x), data.train_y
        theta = solver.shard.local(model.theta)
        inner = solver.inner

        def evaluate() -> None:
            if mode == "exact":  # a cold start: the solve's full cost
                for s in inner._solvers.values():
                    s.reset()
            solver(theta, X, y)

        evaluate()  # warm-up (and, for the simultaneous mode, the warm start)
        walls, traces = [], []
        for _ in range(args.repeats):
            comm.Barrier()
            core.start_trace()
            t0 = time.perf_counter()
            evaluate()
            t1 = time.perf_counter()
            traces.append(core.stop_trace())
            walls.append(comm.allreduce(t1 - t0, op=MPI.MAX))
        rep = inner.last_report if hasattr(inner, "last_report") else {}
        gathered = comm.gather(traces, root=0)
        if rank == 0:
            out["modes"][mode] = {
                "walls": walls,
                "traces": [[gathered[r][k] for r in range(P)] for k in range(args.repeats)],
                "cycles": [rep.get("forward", {}).get("cycles"), rep.get("adjoint", {}).get("cycles")]
                if rep else None,
            }
    if rank == 0:
        Path(args.out).write_text(json.dumps(out))


def cmd_pingpong(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    res = {}
    for nbytes in (8, 4 << 20):
        buf = np.zeros(nbytes // 8)
        times = []
        for it in range(args.repeats + 5):
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(20):
                if rank == 0:
                    comm.Send(buf, dest=1, tag=1)
                    comm.Recv(buf, source=1, tag=2)
                else:
                    comm.Recv(buf, source=0, tag=1)
                    comm.Send(buf, dest=0, tag=2)
            if it >= 5:
                times.append((time.perf_counter() - t0) / 40)  # one-way
        res[nbytes] = statistics.median(times)
    if rank == 0:
        lat = res[8]
        bw = (4 << 20) / max(res[4 << 20] - lat, 1e-12)
        Path(args.out).write_text(json.dumps({"latency": lat, "bandwidth": bw}))


# ---------------------------------------------------------------------- driver

def _launch(procs: int, argv: list[str], timeout: float) -> None:
    cmd = [_mpiexec(), "--oversubscribe", "-n", str(procs), sys.executable, str(Path(__file__).resolve()), *argv]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")


def cmd_all(args: argparse.Namespace) -> None:
    from layerparallel.scaling import Interconnect, replay, trace_summary

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pp = work / "pingpong.json"
    _launch(2, ["pingpong", "--out", str(pp), "--repeats", "30"], 600)
    here = json.loads(pp.read_text())
    local, cluster = Interconnect(**here), Interconnect(**CLUSTER)
    if args.set:
        print("MGRIT settings changed from examples/peaks.toml: " + ", ".join(args.set))
    print(f"MPI on this machine (shared memory): latency {here['latency'] * 1e6:.2f} us, "
          f"bandwidth {here['bandwidth'] / 1e9:.2f} GB/s")
    results = {}
    for N in args.layers:
        for P in args.procs:
            f = work / f"run_N{N}_P{P}.json"
            if not (args.reuse and f.exists()):
                t = time.perf_counter()
                _launch(P, ["run", "--layers", str(N), "--examples", str(args.examples), "--repeats",
                            str(args.repeats), "--out", str(f), "--modes", *MODES,
                            *(["--set", *args.set] if args.set else [])], 7200)
                print(f"  ran N={N} P={P} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            results[(N, P)] = json.loads(f.read_text())

    def predicted(N: int, P: int, mode: str, net: Network) -> float:
        m = results[(N, P)]["modes"][mode]
        return statistics.median(replay(tr, net)["wall"] for tr in m["traces"])

    def measured(N: int, P: int, mode: str) -> float:
        return statistics.median(results[(N, P)]["modes"][mode]["walls"])

    # Validation where each process has a core of its own.
    sweeps = {N: statistics.median(results[(N, 1)]["modes"]["sweeps"]["walls"]) for N in args.layers}
    print("\nValidation (measured wall time vs replay with this machine's latency/bandwidth):\n")
    print("| N | P | mode | measured | predicted | error |")
    print("|---|---|---|---|---|---|")
    for N in args.layers:
        for P in [p for p in args.procs if p <= 2]:
            for mode in MODES:
                w, p = measured(N, P, mode), predicted(N, P, mode, local)
                print(f"| {N} | {P} | {mode} | {w * 1e3:.1f} ms | {p * 1e3:.1f} ms | {100 * (p - w) / w:+.1f}% |")
    for N in args.layers:
        print(f"| {N} | 1 | serial sweeps (baseline) | {sweeps[N] * 1e3:.1f} ms | "
              f"{predicted(N, 1, 'sweeps', local) * 1e3:.1f} ms | "
              f"{100 * (predicted(N, 1, 'sweeps', local) - sweeps[N]) / sweeps[N]:+.1f}% |")
    print("\nPredicted strong scaling on dedicated cores (interconnect: latency "
          f"{CLUSTER['latency'] * 1e6:g} us, bandwidth {CLUSTER['bandwidth'] / 1e9:g} GB/s); "
          "speed-up against ordinary serial backpropagation on 1 process (fused serial sweeps, "
          "the serial mode's solver without split layers):\n")
    header = "| N | P | " + " | ".join(f"{m} (ms)" for m in MODES) + " | " + " | ".join(
        f"{m} speed-up" for m in MODES) + " | messages / evaluation (simultaneous) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    table = {}
    for N in args.layers:
        base = predicted(N, 1, "sweeps", cluster)
        print(f"| {N} | 1 | serial sweeps: {base * 1e3:.1f} ms |" + " |" * (header.count("|") - 4))
        for P in args.procs:
            row = {m: predicted(N, P, m, cluster) for m in MODES}
            table[(N, P)] = row
            msgs = trace_summary(results[(N, P)]["modes"]["simultaneous"]["traces"][0])["messages"]
            print(f"| {N} | {P} | " + " | ".join(f"{row[m] * 1e3:.1f}" for m in MODES) + " | " +
                  " | ".join(f"{base / row[m]:.2f}x" for m in MODES) + f" | {msgs} |")
    (work / "table.json").write_text(json.dumps({f"{N},{P}": v for (N, P), v in table.items()}))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(args.layers), figsize=(5.5 * len(args.layers), 4.2), squeeze=False)
        for ax, N in zip(axes[0], args.layers):
            base = predicted(N, 1, "sweeps", cluster)
            for m, style in zip(MODES, ("o-", "s-", "^-")):
                ax.loglog(args.procs, [base / table[(N, P)][m] for P in args.procs], style, label=m)
            ax.loglog(args.procs, args.procs, "k:", lw=0.8, label="ideal")
            ax.axhline(10, color="grey", lw=0.8, ls="--")
            ax.set_title(f"Peaks network, N = {N} layers")
            ax.set_xlabel("processes (layers split)")
            ax.set_ylabel("predicted speed-up vs serial backprop, 1 process")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--layers", type=int, required=True)
    r.add_argument("--examples", type=int, default=5000)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    r.add_argument("--out", required=True)
    r.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. mgrit.cfactor=8")
    q = sub.add_parser("pingpong")
    q.add_argument("--repeats", type=int, default=30)
    q.add_argument("--out", required=True)
    a = sub.add_parser("all")
    a.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    a.add_argument("--layers", type=int, nargs="+", default=[1024, 4096])
    a.add_argument("--examples", type=int, default=5000, help="training examples (the Peaks example has 5000)")
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--workdir", default="build/scaling")
    a.add_argument("--reuse", action="store_true", help="reuse run files already in --workdir")
    a.add_argument("--set", nargs="*", default=[], help="config overrides for the MGRIT modes, e.g. mgrit.cfactor=8")
    a.add_argument("--plot", default=str(HERE.parent / "scaling.png"), help="where to write the plot")
    args = p.parse_args()
    {"run": cmd_run, "pingpong": cmd_pingpong, "all": cmd_all}[args.cmd](args)


if __name__ == "__main__":
    main()
