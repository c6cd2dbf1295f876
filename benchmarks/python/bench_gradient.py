"""Seconds per gradient evaluation: layerparallel against the same network in PyTorch (CPU).

Both compute the full objective (mean cross-entropy + the three regularisers)
and its gradient by forward and backward sweeps, in float64, on the same data
and parameters, in the same process. The gradients are compared before timing.
Reports the median of repeats after warm-up, and the ratio PyTorch / ours.

    pip install torch==2.13.0        # optional benchmark dependency
    python benchmarks/python/bench_gradient.py [--repeats 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np

from timing import median_seconds

from layerparallel import _core, show_config
from layerparallel.model import Regularization, ResNet

REG = Regularization(1e-7, 1e-7, 1e-7)

CASES = {
    "peaks": dict(width=8, layers=32, examples=5000, features=2, classes=5, activation="smooth_relu", T=5.0),
    "peaks_tanh": dict(width=8, layers=32, examples=5000, features=2, classes=5, activation="tanh", T=5.0),
    "peaks_relu": dict(width=8, layers=32, examples=5000, features=2, classes=5, activation="relu", T=5.0),
    "wide": dict(width=256, layers=64, examples=4096, features=2, classes=5, activation="tanh", T=5.0),
}


def torch_objective(torch, params, X, y, case):
    """The network of docs/algorithm.md in PyTorch (dense opening, scalar layer biases)."""
    def act(z):
        if case["activation"] == "tanh":
            return torch.tanh(z)
        if case["activation"] == "relu":
            return torch.relu(z)
        eta = 0.1
        return torch.where(z >= eta, z, torch.where(z <= -eta, torch.zeros_like(z), z * z / (4 * eta) + z / 2 + eta / 4))

    Ko, bo, K, b, W, mu = params
    h = case["T"] / case["layers"]
    u = act(X @ Ko.T + bo)
    for n in range(case["layers"]):
        u = u + h * act(u @ K[n].T + b[n])
    z = u @ W.T + mu
    loss = torch.nn.functional.cross_entropy(z, y)
    tik = (Ko ** 2).sum() + bo ** 2 + (K ** 2).sum() + (b ** 2).sum()
    cls = (W ** 2).sum() + (mu ** 2).sum()
    ddt = (((K[1:] - K[:-1]) ** 2).sum() + ((b[1:] - b[:-1]) ** 2).sum()) / h ** 2
    return loss + 0.5 * REG.tikhonov * tik + 0.5 * REG.classifier * cls + 0.5 * REG.ddt * ddt


def run_case(name, case, repeats, torch):
    rng = np.random.default_rng(0)
    model = ResNet(case["features"], case["classes"], case["width"], case["layers"], case["T"], case["activation"],
                   "dense", regularization=REG, seed=0)
    model.theta[:] = rng.uniform(-1, 1, model.size) / np.sqrt(case["width"])
    X = rng.uniform(-3, 3, (case["examples"], case["features"]))
    y = rng.integers(0, case["classes"], case["examples"])
    ours = median_seconds(lambda: model.evaluate(X, y), repeats, warmup=3)
    row = {"case": name, **case, "ours_ms": 1e3 * ours}
    if torch is not None:
        p = model.parameters
        params = [torch.tensor(np.array(p[k]), dtype=torch.float64, requires_grad=True)
                  for k in ("opening_weight", "opening_bias", "weights", "biases", "classifier_weight", "classifier_bias")]
        Xt = torch.tensor(X)
        yt = torch.tensor(y)

        def step():
            for q in params:
                q.grad = None
            J = torch_objective(torch, params, Xt, yt, case)
            J.backward()
            return J

        J = step()
        ev = model.evaluate(X, y)
        tg = np.concatenate([q.grad.numpy().ravel() for q in params])
        err = np.abs(tg - ev.gradient).max() / np.abs(ev.gradient).max()
        assert abs(J.item() - ev.objective) < 1e-10 * abs(ev.objective), (J.item(), ev.objective)
        assert err < 1e-9, f"gradients differ: {err}"
        theirs = median_seconds(step, repeats, warmup=3)
        row.update(torch_ms=1e3 * theirs, speedup=theirs / ours, max_grad_rel_diff=float(err))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="threads for both libraries (0 = all cores)")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing layerparallel only (pip install torch==2.13.0)", file=sys.stderr)
    threads = args.threads or _core.max_threads()
    _core.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    show_config(file=sys.stdout, mpi=False, prefix="# ")
    print(f"# {platform.processor() or platform.machine()}, threads={threads}, "
          f"torch={getattr(torch, '__version__', None)}")
    for name in args.cases:
        row = run_case(name, CASES[name], args.repeats if name != "wide" else max(5, args.repeats // 6), torch)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
