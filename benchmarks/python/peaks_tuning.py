#!/usr/bin/env python
"""Hyper-parameter search for the paper's Peaks problem (serial training).

Network: dense ResNet, width 8, smooth ReLU, dense opening, N = 32 layers,
full batch of the 5000 training points, L-BFGS + Armijo
(``layerparallel.optim.LBFGS``).  The objective and gradient come from the
plain numpy oracle ``tests/python/reference_numpy.py``, so the results do
not depend on the C++ core.

Data: /work/shared/data/peaks/{features,labels}_{training,validation}.dat,
shuffled with a fixed seed (the files are sorted by class).

Initialisation schemes (all seeded with ``numpy.random.default_rng(seed)``,
blocks drawn in the flat-theta order of CONTRACTS.md: opening_weight,
opening_bias, weights, biases, classifier_weight, classifier_bias):

* ``uniform``: every parameter of a block is ``scale * U[0, 1)`` (the
  reference code's scheme); scales ``(s_open, s_hidden, s_class)``; biases
  of a block use the block's scale.
* ``gauss``: every parameter is ``scale * N(0, 1)``; biases of a block use the
  block's scale.

Usage::

    python benchmarks/python/peaks_tuning.py                 # the chosen setting, 5 seeds
    python benchmarks/python/peaks_tuning.py --search        # the grid that led to it
    python benchmarks/python/peaks_tuning.py --seeds 0 1 2 --max-iter 600

Runs ~20 ms per function evaluation (numpy, 5000 x 8 x 32), i.e. roughly
20-25 s per 1000 L-BFGS iterations.  Run it niced on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "python"))

import reference_numpy as ref  # noqa: E402
from layerparallel.optim import LBFGS  # noqa: E402

DATA_DIR = os.environ.get("LP_PEAKS_DIR", "/work/shared/data/peaks")
WIDTH, N_LAYERS, N_FEATURES, N_CLASSES = 8, 32, 2, 5
ACTIVATION, OPENING = "smooth_relu", "dense"


@dataclass(frozen=True)
class Setting:
    T: float = 5.0
    init: str = "uniform"                    # "uniform" or "gauss"
    scales: Tuple[float, float, float] = (1e-3, 1e-3, 1e-3)  # open, hidden, classifier
    g_tik: float = 1e-7
    g_class: float = 1e-7
    g_ddt: float = 1e-7
    memory: int = 10
    max_iter: int = 1000
    gtol: float = 1e-4                       # paper's stopping criterion

    def label(self) -> str:
        so, sh, sc = self.scales
        return (f"T={self.T:g} {self.init}({so:g},{sh:g},{sc:g}) "
                f"tik={self.g_tik:g} cls={self.g_class:g} ddt={self.g_ddt:g} m={self.memory}")


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def load_peaks(data_seed: int = 0):
    def read(kind):
        X = np.loadtxt(os.path.join(DATA_DIR, f"features_{kind}.dat"), dtype=np.float64)
        Y = np.loadtxt(os.path.join(DATA_DIR, f"labels_{kind}.dat"), dtype=np.float64)
        return X, np.argmax(Y, axis=1)
    Xt, yt = read("training")
    Xv, yv = read("validation")
    rng = np.random.default_rng(data_seed)
    p = rng.permutation(len(yt))
    q = rng.permutation(len(yv))
    return Xt[p], yt[p], Xv[q], yv[q]


# ----------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------
def shapes():
    return ref.param_shapes(N_FEATURES, WIDTH, N_LAYERS, N_CLASSES, OPENING)


def initial_theta(setting: Setting, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    so, sh, sc = setting.scales
    scale_of = {"opening_weight": so, "opening_bias": so, "weights": sh,
                "biases": sh, "classifier_weight": sc, "classifier_bias": sc}
    parts = []
    for key, shp in shapes().items():
        size = int(np.prod(shp, dtype=np.int64))
        if setting.init == "uniform":
            parts.append(scale_of[key] * rng.uniform(0.0, 1.0, size))
        elif setting.init == "gauss":
            parts.append(scale_of[key] * rng.standard_normal(size))
        else:
            raise ValueError(setting.init)
    return np.concatenate(parts)


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------
@dataclass
class Result:
    setting: Setting
    seed: int
    val_acc: float = 0.0
    train_acc: float = 0.0
    loss: float = np.nan
    iters: int = 0
    evals: int = 0
    first95: Optional[int] = None            # first iteration with val acc >= 95 %
    best_val: float = 0.0
    stop: str = ""
    seconds: float = 0.0
    history: List[Tuple[int, float, float]] = field(default_factory=list)


def train(setting: Setting, seed: int, data, val_every: int = 10,
          verbose: bool = False) -> Result:
    Xt, yt, Xv, yv = data
    shp = shapes()
    regs = (setting.g_tik, setting.g_class, setting.g_ddt)
    last = {}

    def fun(theta):
        J, loss, acc, g = ref.objective_and_gradient(
            ref.unflatten(theta, shp), Xt, yt, setting.T, ACTIVATION, OPENING, *regs)
        last["loss"], last["acc"] = loss, acc
        return J, ref.flatten(g)

    def val_acc(theta):
        z = ref.logits(ref.unflatten(theta, shp), Xv, setting.T, ACTIVATION, OPENING)
        return float(np.mean(np.argmax(z, axis=1) == yv))

    res = Result(setting, seed)
    t0 = time.perf_counter()
    opt = LBFGS(memory=setting.memory, c1=1e-4, shrink=0.5, max_trials=20)
    x = initial_theta(setting, seed)
    f, g = fun(x)
    res.evals = 1
    fails = 0
    it = 0
    for it in range(1, setting.max_iter + 1):
        r = opt.step(fun, x, f, g)
        res.evals += r.trials
        if not r.accepted:
            fails += 1
            if fails >= 2:                   # steepest descent failed too
                res.stop = "linesearch"
                it -= 1
                break
            continue
        fails = 0
        x, f, g = r.x, r.f, r.g
        if it % val_every == 0 or it == setting.max_iter:
            va = val_acc(x)
            res.history.append((it, f, va))
            res.best_val = max(res.best_val, va)
            if res.first95 is None and va >= 0.95:
                res.first95 = it
            if verbose:
                print(f"    it {it:5d}  J {f:.5e}  train {last['acc']:.3f}  val {va:.3f}", flush=True)
        if np.sqrt(np.dot(g, g)) < setting.gtol:
            res.stop = "gtol"
            break
    else:
        res.stop = "max_iter"
    res.iters = it
    J, loss, acc, _ = ref.objective_and_gradient(
        ref.unflatten(x, shp), Xt, yt, setting.T, ACTIVATION, OPENING, *regs)
    res.loss, res.train_acc = loss, acc
    res.val_acc = val_acc(x)
    res.best_val = max(res.best_val, res.val_acc)
    if res.first95 is None and res.val_acc >= 0.95:
        res.first95 = res.iters
    res.seconds = time.perf_counter() - t0
    return res


# ----------------------------------------------------------------------------
# experiments
# ----------------------------------------------------------------------------
CHECKPOINTS = (100, 200, 300, 400)


def stable_from(r: Result) -> Optional[int]:
    """First checkpoint from which the validation accuracy stays >= 95 %."""
    below = [it for it, _, va in r.history if va < 0.95]
    if not r.history or r.val_acc < 0.95:
        return None
    return r.history[0][0] if not below else min(it for it, _, va in r.history if it > max(below))


def header():
    cps = " ".join(f"{'v@' + str(c):>6}" for c in CHECKPOINTS)
    print(f"{'setting':<62} {'seed':>4} {'iters':>5} {'evals':>5} {'loss':>7} {'train':>6} "
          f"{cps} {'val':>6} {'1st95':>5} {'stab95':>6} {'sec':>5}", flush=True)


def row(r: Result):
    h = {it: va for it, _, va in r.history}
    cps = " ".join(f"{h[c]:>6.3f}" if c in h else f"{'-':>6}" for c in CHECKPOINTS)
    f95 = "-" if r.first95 is None else str(r.first95)
    st = stable_from(r)
    st = "-" if st is None else str(st)
    print(f"{r.setting.label():<62} {r.seed:>4} {r.iters:>5} {r.evals:>5} {r.loss:>7.4f} "
          f"{r.train_acc:>6.3f} {cps} {r.val_acc:>6.3f} {f95:>5} {st:>6} {r.seconds:>5.1f}",
          flush=True)


def summary(results: List[Result]):
    by = {}
    for r in results:
        by.setdefault(r.setting, []).append(r)
    print("\nsummary: final val accuracy per seed [first iteration with val >= 0.95]")
    for s, rs in by.items():
        accs = " ".join(f"{r.val_acc:.3f}[{r.first95 if r.first95 else '-'}]" for r in rs)
        ok = sum(r.val_acc >= 0.95 for r in rs)
        print(f"  {s.label():<62} max_iter={s.max_iter:<5} {ok}/{len(rs)} >= 0.95 : {accs}")


# The recommended setting: Gaussian initialisation with an O(1) opening layer
# (the 2 input features must be spread over the 8 channels with both signs),
# small hidden and classifier weights, the paper's T = 5 and regularisation
# except a stronger smoothness term g_ddt = 1e-5 (upper end of the paper's
# range), L-BFGS memory 20.
CHOSEN = Setting(T=5.0, init="gauss", scales=(1.0, 0.1, 0.1),
                 g_tik=1e-7, g_class=1e-7, g_ddt=1e-5, memory=20, max_iter=600)


def search_grid(max_iter: int) -> List[Setting]:
    """The settings compared during the search (one line each in the table)."""
    paper = Setting(max_iter=max_iter)
    ch = replace(CHOSEN, max_iter=max_iter)
    return [
        paper,                                                           # the paper's setting
        replace(ch, init="uniform", scales=(1.0, 0.1, 0.1)),             # chosen, paper-style U[0,1)
        replace(paper, init="gauss", scales=(0.1, 0.1, 0.1)),
        replace(paper, init="gauss", scales=(1.0, 0.1, 0.1), memory=20),  # O(1) opening
        replace(paper, init="gauss", scales=(1.0, 0.3, 0.3)),
        replace(paper, T=10.0, init="gauss", scales=(1.0, 0.1, 0.1), memory=20),
        replace(ch, memory=10),
        replace(ch, g_ddt=1e-4),
        replace(ch, scales=(2.0, 0.1, 0.1)),
        ch,                                                              # the chosen setting
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--search", action="store_true",
                    help="run the search grid (10 settings x seeds; ~10 min for 3 seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="initialisation seeds (default: 0 1 2 3 4, or 0 1 2 with --search)")
    ap.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations (default 600)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the data shuffle")
    ap.add_argument("--val-every", type=int, default=10, help="validation interval (iterations)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    data = load_peaks(args.data_seed)
    max_iter = args.max_iter or CHOSEN.max_iter
    if args.search:
        settings = search_grid(max_iter)
        seeds = args.seeds or [0, 1, 2]
    else:
        settings = [replace(CHOSEN, max_iter=max_iter)]
        seeds = args.seeds or [0, 1, 2, 3, 4]
    print(f"Peaks: width {WIDTH}, N = {N_LAYERS}, {ACTIVATION}, {OPENING} opening, full batch "
          f"{len(data[1])} / validation {len(data[3])}, L-BFGS + Armijo; data seed {args.data_seed}")
    header()
    results = []
    for s in settings:
        for seed in seeds:
            r = train(s, seed, data, val_every=args.val_every, verbose=args.verbose)
            row(r)
            results.append(r)
    summary(results)


if __name__ == "__main__":
    main()
