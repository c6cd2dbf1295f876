"""The training loop: one optimiser step per iteration, metrics, history.

``train(model, data, optimizer=..., solver=..., max_iter=...)`` trains with a
:class:`layerparallel.Solver` (how the forward and adjoint sweeps are solved:
serially, or by MGRIT in the exact and simultaneous modes) and an optimiser with
the step-wise API (:mod:`layerparallel.optim`), so that logging, monitoring and
stopping live in one place. ``train(model, data, cfg)`` builds the same objects
from a configuration (the command line's path) and runs the same loop.

This module is also callable: ``layerparallel.train(...)`` (the package
attribute and this module share the name) is :func:`train`.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from .comm import local_processes
from .dataset import Dataset
from .grid import ProcessGrid
from .layer_parallel import LayerParallelSolver
from .model import ConvResNet, Evaluation, Network, Regularization, ResNet, as_matrix
from .optim import LBFGS, Adam, make_optimizer, minibatches
from .options import MgritOptions
from .solver import (HISTORY_COLUMNS, MGRIT_COLUMNS, MgritSolver, PipelineSolver, SerialSolver, Solver,
                     sweep_solver)

__all__ = ["HISTORY_COLUMNS", "MGRIT_COLUMNS", "TrainResult", "SerialSolver", "MgritSolver", "PipelineSolver",
           "build_model", "make_solver", "solver_from_config", "train"]


@dataclass
class TrainResult:
    """What a training run produced: one ``history`` row per logged iteration (row 0
    is the initial point; keys are ``columns``), the wall time, the iterations run,
    why it stopped (``max_iter``, ``gtol``, ``line_search_failed``, ``diverged``), the
    gradient evaluations, the final metrics and, in the MGRIT modes, ``mgrit`` (the
    solver's totals and safeguard switches)."""

    history: list[dict[str, float]]
    seconds: float
    iterations: int
    stop_reason: str
    gradient_evaluations: int
    final: dict[str, float] = field(default_factory=dict)
    mgrit: dict[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = HISTORY_COLUMNS


def build_model(cfg: Any, data: Dataset) -> Network:
    """The network a configuration describes, seeded with ``train.seed``."""
    m, r = cfg.model, cfg.regularization
    if m.kind == "conv":
        from .datasets import image_shape

        shape = image_shape(data)
        if shape is None:
            raise ValueError(f'model.kind = "conv" needs image data; data.name = "{cfg.data.name}" gives vectors')
        if shape[0] != 1:
            raise ValueError(f"the replicate opening needs one input channel, the images have {shape[0]}")
        return ConvResNet(shape[1], shape[2], data.n_classes, m.channels, m.layers, m.T, m.activation, m.bias,
                          m.opening, regularization=Regularization(r.tikhonov, r.classifier, r.ddt),
                          seed=cfg.train.seed, init_opening=m.init_opening, init_hidden=m.init_hidden,
                          init_classifier=m.init_classifier, init=m.init)
    return ResNet(data.n_features, data.n_classes, m.width, m.layers, m.T, m.activation, m.opening,
                  regularization=Regularization(r.tikhonov, r.classifier, r.ddt), seed=cfg.train.seed,
                  init_opening=m.init_opening, init_hidden=m.init_hidden, init_classifier=m.init_classifier,
                  init=m.init)


def make_solver(cfg: Any, model: Network, comm: Any = None) -> SerialSolver:
    """The sweep solver of ``train.mode`` (``comm``, an engine communicator, splits the
    layers); :func:`solver_from_config` gives the whole :class:`Solver`."""
    return sweep_solver(model, cfg.train.mode, cfg.mgrit, cfg.train.device, comm, cfg.train.threads)


def solver_from_config(cfg: Any, model: Network, grid: Optional[ProcessGrid] = None) -> Solver:
    """The :class:`Solver` that ``train.mode``, ``train.device``, ``train.threads`` and ``[mgrit]`` describe."""
    return Solver(model, cfg.train.mode, MgritOptions.coerce(cfg.mgrit), cfg.train.device, grid, cfg.train.threads)


def _count(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _as_solver(model: Network, solver: Any, grid: Optional[ProcessGrid]) -> LayerParallelSolver:
    if solver is None:
        return Solver(model, grid=grid)
    if isinstance(solver, SerialSolver):  # a bare sweep solver: give it the shard and the grid
        solver = LayerParallelSolver(solver, grid, getattr(solver, "comm", None))
    if not isinstance(solver, LayerParallelSolver):
        raise ValueError(f"solver must be a layerparallel.Solver, got {type(solver).__name__}")
    if grid is not None and solver.grid is not grid:
        raise ValueError("grid differs from the solver's grid: build the Solver with grid=... and leave out "
                         "train's grid")
    if solver.model is not model:
        raise ValueError("solver was built for another model: build it with Solver(model, ...) for this model")
    return solver


def train(model: Network, data: Dataset, cfg: Any = None, *, optimizer: Any = None, solver: Any = None,
          max_iter: Optional[int] = None, gtol: Optional[float] = None, batch_size: Optional[int] = None,
          eval_every: Optional[int] = None, seed: Optional[int] = None, threads: Optional[int] = None,
          callback: Optional[Callable[[dict[str, float]], None]] = None,
          grid: Optional[ProcessGrid] = None) -> TrainResult:
    """Train ``model`` in place on ``data``; returns the history (:class:`TrainResult`).

    ``optimizer``: an :class:`~layerparallel.optim.LBFGS` (the default, ``LBFGS()``),
    :class:`~layerparallel.optim.GradientDescent` or :class:`~layerparallel.optim.Adam`;
    its inner products are set to the solver's reproducible ones. ``solver``: a
    :class:`layerparallel.Solver` for ``model`` (default: serial sweeps). Training
    runs ``max_iter`` (100) iterations, or stops earlier when the gradient norm
    is at most ``gtol`` (1e-4; full batch only) or a line search fails.
    ``batch_size`` (0 = full batch) draws seeded (``seed``, 0) mini-batches;
    full-batch metrics are logged every ``eval_every`` (1) iterations.
    ``threads`` (0) sets the threads of the compiled loops and BLAS (0 leaves them,
    or shares the cores between the processes of this machine when the solver's
    grid has several). ``callback(row)`` is called after every logged iteration.

    In the simultaneous mode the safeguard (``MgritOptions.safeguard``) watches the
    MGRIT convergence factors and the line search, and makes the solves exact for
    a few iterations when either fails; every switch is in
    ``TrainResult.mgrit["safeguard_switches"]``.

    With a grid (the solver's) every process must call ``train`` with the same
    arguments; each ends with the same (gathered) parameters and history. With
    split layers each process's optimiser holds only its own parameters and every
    inner product is an all-reduce.

    ``train(model, data, cfg)`` takes all of the above from a configuration
    (``[optimizer]``, ``[train]``, ``[mgrit]``; ``grid`` then splits the work) and
    runs the same loop; a configuration and these keywords do not mix.
    """
    if cfg is not None:
        given = [name for name, v in (("optimizer", optimizer), ("max_iter", max_iter), ("gtol", gtol),
                                      ("batch_size", batch_size), ("eval_every", eval_every), ("seed", seed),
                                      ("threads", threads)) if v is not None]
        if given:
            raise ValueError(f"train takes {given[0]} from cfg when a configuration is given; "
                             f"leave out {given[0]}=... or cfg")
        o = cfg.optimizer
        return train(model, data, optimizer=make_optimizer(o),
                     solver=solver_from_config(cfg, model, grid) if solver is None else _as_solver(model, solver, grid),
                     max_iter=o.max_iter, gtol=o.gtol, batch_size=o.batch_size, eval_every=cfg.train.eval_every,
                     seed=cfg.train.seed, threads=cfg.train.threads, callback=callback)

    solver = _as_solver(model, solver, grid)
    optimizer = LBFGS() if optimizer is None else optimizer
    if not callable(getattr(optimizer, "step", None)):
        raise ValueError(f"optimizer must be an LBFGS, GradientDescent or Adam (anything with "
                         f"step(fun, x, f, g)), got {type(optimizer).__name__}")
    max_iter = _count("max_iter", 100 if max_iter is None else max_iter, 0)
    batch_size = _count("batch_size", 0 if batch_size is None else batch_size, 0)
    eval_every = _count("eval_every", 1 if eval_every is None else eval_every, 1)
    seed = _count("seed", 0 if seed is None else seed, 0)
    threads = _count("threads", 0 if threads is None else threads, 0)
    gtol = 1e-4 if gtol is None else gtol
    if isinstance(gtol, bool) or not isinstance(gtol, (int, float, np.integer, np.floating)) or not gtol >= 0:
        raise ValueError(f"gtol must be a number >= 0, got {gtol!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(row) or None, got {type(callback).__name__}")
    for name in ("train_x", "train_y", "val_x", "val_y"):
        if not hasattr(data, name):
            raise ValueError(f"data must be a Dataset (train_x, train_y, val_x, val_y), got {type(data).__name__}")

    if not threads and solver.grid is not None and solver.grid.size > 1:
        # Share the cores between the processes of this machine instead of
        # oversubscribing them.
        threads = max(1, _core.max_threads() // local_processes())
    if threads:
        _core.set_num_threads(threads)
    # Every run (one process too) goes through the same parameter shard, regulariser
    # and inner products, so that splitting the layers changes no bit of training.
    shard = solver.shard
    dot = shard.dot
    if hasattr(optimizer, "dot"):
        optimizer.dot = dot
    guarded = solver.guarded
    layered = solver.comm is not None
    # Examples as rows once (image batches flattened as views), so that the MGRIT
    # warm starts recognise the same data from call to call.
    X, y = as_matrix(data.train_x), data.train_y
    val_x = as_matrix(data.val_x)
    n = X.shape[0]
    batch_size = batch_size if batch_size and batch_size < n else 0
    rng = np.random.default_rng(seed)
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
    theta = shard.local(model.theta)
    ev = solver(theta, X, y)
    f, g = ev.objective, ev.gradient

    def log(it: int, step: float, ev_train: Evaluation, grad: np.ndarray) -> dict[str, float]:
        val_loss, val_acc = solver.validate(theta, val_x, data.val_y)
        row = {"iteration": it, "objective": ev_train.objective, "train_loss": ev_train.loss,
               "train_accuracy": ev_train.accuracy, "val_loss": val_loss, "val_accuracy": val_acc,
               "grad_norm": math.sqrt(dot(grad, grad)), "step": step, "seconds": time.perf_counter() - t0}
        row.update(solver.row_extra())
        history.append(row)
        if callback:
            callback(row)
        return row

    log(0, 0.0, ev, g)
    stop_reason = "max_iter"
    it = 0
    for it in range(1, max_iter + 1):
        if batch_size:
            idx = next_batch()
            Xb, yb = X[idx], y[idx]

            def batch_fun(th: np.ndarray) -> tuple[float, np.ndarray]:
                e = solver(th, Xb, yb)
                return e.objective, e.gradient

            bev = solver(theta, Xb, yb)
            res = optimizer.step(batch_fun, theta, bev.objective, bev.gradient)
        else:
            res = optimizer.step(full, theta, f, g)
            if not res.accepted and guarded and not solver.exact:
                # The inexact objective/gradient could not give descent: solve exactly at
                # the current point and retry the step once before giving up.
                solver.tighten(it, "line search failed with inexact solves")
                ev = solver(theta, X, y)
                f, g = ev.objective, ev.gradient
                optimizer.reset()
                res = optimizer.step(full, theta, f, g)
        if not res.accepted and not isinstance(optimizer, Adam):
            stop_reason = "line_search_failed"
            it -= 1
            break
        theta = res.x
        if not layered:
            model.theta[...] = theta
        if guarded:
            reason = solver.monitor()
            solver.end_iteration()
            if reason is not None:
                solver.tighten(it, reason)
        if batch_size or it % eval_every == 0 or it == max_iter:
            cur = solver.cached(theta, X)
            if cur is None:
                cur = solver(theta, X, y)
            f, g = cur.objective, cur.gradient
            row = log(it, res.step, cur, g)
            if not math.isfinite(row["objective"]):
                stop_reason = "diverged"
                break
            if not batch_size and row["grad_norm"] <= gtol:
                stop_reason = "gtol"
                break
        else:
            f, g = res.f, res.g
    model.theta[...] = shard.gather(theta)
    seconds = time.perf_counter() - t0
    last = history[-1]
    if last["iteration"] != it:  # make sure the final state is measured
        cur = solver.cached(theta, X) or solver(theta, X, y)
        last = log(it, 0.0, cur, cur.gradient)
    final = {k: last[k] for k in ("objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm")}
    return TrainResult(history=history, seconds=seconds, iterations=it, stop_reason=stop_reason,
                       gradient_evaluations=solver.evaluations, final=final, mgrit=solver.summary(),
                       columns=solver.columns)


class _TrainModule(types.ModuleType):
    """This module, callable as :func:`train` (so ``layerparallel.train(...)`` trains
    whichever of the two the package attribute holds)."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
sys.modules[__name__].__signature__ = inspect.signature(train)  # type: ignore[attr-defined]
