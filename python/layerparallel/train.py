"""The training loop: one optimiser step per iteration, metrics, history.

The loop talks to the network through a *gradient solver* (how forward and
adjoint sweeps are solved: serially now; by MGRIT in the exact and
simultaneous modes) and to the optimiser through its step-wise API, so that
logging, monitoring and stopping live in one place.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from .data import Dataset
from .model import Evaluation, Regularization, ResNet
from .optim import Adam, make_optimizer, minibatches

__all__ = ["HISTORY_COLUMNS", "TrainResult", "SerialSolver", "build_model", "train"]

#: Columns of history.csv, in order.
HISTORY_COLUMNS = ("iteration", "objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "grad_norm", "step", "seconds")


@dataclass
class TrainResult:
    """What a training run produced."""

    history: list[dict[str, float]]
    seconds: float
    iterations: int
    stop_reason: str
    gradient_evaluations: int
    final: dict[str, float] = field(default_factory=dict)


class SerialSolver:
    """Exact forward and adjoint sweeps, layer after layer (ordinary backpropagation)."""

    mode = "serial"

    def __init__(self, model: ResNet):
        self.model = model
        self.evaluations = 0
        self.last: Optional[Evaluation] = None
        self._last_theta: Optional[np.ndarray] = None

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> Evaluation:
        ev = self.model.evaluate(features, labels, theta=theta, gradient=True)
        self.evaluations += 1
        self.last, self._last_theta = ev, theta
        return ev

    def cached(self, theta: np.ndarray) -> Optional[Evaluation]:
        """The evaluation at ``theta`` if it was the last one computed (saves a sweep)."""
        if self._last_theta is not None and (self._last_theta is theta or np.array_equal(self._last_theta, theta)):
            return self.last
        return None


def build_model(cfg: Any, data: Dataset) -> ResNet:
    """The network a configuration describes, seeded with ``train.seed``."""
    m, r = cfg.model, cfg.regularization
    return ResNet(data.n_features, data.n_classes, m.width, m.layers, m.T, m.activation, m.opening,
                  regularization=Regularization(r.tikhonov, r.classifier, r.ddt), seed=cfg.train.seed,
                  init_opening=m.init_opening, init_hidden=m.init_hidden, init_classifier=m.init_classifier)


def make_solver(cfg: Any, model: ResNet) -> SerialSolver:
    mode = cfg.train.mode
    if mode == "serial":
        return SerialSolver(model)
    raise ValueError(f"train.mode must be 'serial', got {mode!r}")


def train(model: ResNet, data: Dataset, cfg: Any,
          callback: Optional[Callable[[dict[str, float]], None]] = None) -> TrainResult:
    """Train ``model`` in place on ``data`` as ``cfg`` says; returns the history.

    ``callback(row)`` is called after every logged iteration (the CLI's progress
    display). Iteration 0 is the initial point.
    """
    if cfg.train.threads:
        _core.set_num_threads(cfg.train.threads)
    opt_cfg = cfg.optimizer
    optimizer = make_optimizer(opt_cfg)
    solver = make_solver(cfg, model)
    X, y = data.train_x, data.train_y
    n = X.shape[0]
    batch_size = opt_cfg.batch_size if opt_cfg.batch_size and opt_cfg.batch_size < n else 0
    rng = np.random.default_rng(cfg.train.seed)
    batches = iter(())

    def full(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ev = solver(theta, X, y)
        assert ev.gradient is not None
        return ev.objective, ev.gradient

    def next_batch() -> np.ndarray:
        nonlocal batches
        idx = next(batches, None)
        if idx is None:
            batches = minibatches(n, batch_size, rng)
            idx = next(batches)
        return idx

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    theta = model.theta.copy()
    ev = solver(theta, X, y)
    f, g = ev.objective, ev.gradient

    def log(it: int, step: float, ev_train: Evaluation, grad: np.ndarray) -> dict[str, float]:
        val = model.evaluate(data.val_x, data.val_y, theta=theta, gradient=False, regularized=False)
        row = {"iteration": it, "objective": ev_train.objective, "train_loss": ev_train.loss,
               "train_accuracy": ev_train.accuracy, "val_loss": val.loss, "val_accuracy": val.accuracy,
               "grad_norm": float(np.linalg.norm(grad)), "step": step, "seconds": time.perf_counter() - t0}
        history.append(row)
        if callback:
            callback(row)
        return row

    log(0, 0.0, ev, g)
    stop_reason = "max_iter"
    it = 0
    for it in range(1, opt_cfg.max_iter + 1):
        if batch_size:
            idx = next_batch()
            bev = solver(theta, X[idx], y[idx])
            res = optimizer.step(None, theta, bev.objective, bev.gradient)
        else:
            res = optimizer.step(full, theta, f, g)
        if not res.accepted and not isinstance(optimizer, Adam):
            stop_reason = "line_search_failed"
            it -= 1
            break
        theta = res.x
        model.theta[...] = theta
        if batch_size or it % cfg.train.eval_every == 0 or it == opt_cfg.max_iter:
            cur = solver.cached(theta)
            if cur is None:
                cur = solver(theta, X, y)
            f, g = cur.objective, cur.gradient
            row = log(it, res.step, cur, g)
            if not math.isfinite(row["objective"]):
                stop_reason = "diverged"
                break
            if not batch_size and row["grad_norm"] <= opt_cfg.gtol:
                stop_reason = "gtol"
                break
        else:
            f, g = res.f, res.g
    model.theta[...] = theta
    seconds = time.perf_counter() - t0
    last = history[-1]
    if last["iteration"] != it:  # make sure the final state is measured
        cur = solver.cached(theta) or solver(theta, X, y)
        last = log(it, 0.0, cur, cur.gradient)
    final = {k: last[k] for k in ("objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm")}
    return TrainResult(history=history, seconds=seconds, iterations=it, stop_reason=stop_reason,
                       gradient_evaluations=solver.evaluations, final=final)
