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

import contextlib
import inspect
import math
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np

from . import _core
from .comm import local_processes
from .dataset import Dataset
from .grid import ProcessGrid
from .layer_parallel import LayerParallelSolver
from .model import ConvResNet, Evaluation, Network, Regularization, ResNet, as_matrix
from .optim import LBFGS, Adam, make_optimizer
from .options import MgritOptions
from .solver import (HISTORY_COLUMNS, MGRIT_COLUMNS, MgritSolver, PipelineSolver, SerialSolver, Solver,
                     sweep_solver)

__all__ = ["HISTORY_COLUMNS", "MGRIT_COLUMNS", "TrainResult", "SerialSolver", "MgritSolver", "PipelineSolver",
           "build_model", "make_solver", "solver_from_config", "planned_steps", "train", "TrainingInterrupted"]


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


def planned_steps(max_iter: int, epochs: int, batch_size: int, n: int) -> int:
    """The optimiser steps a run makes: ``epochs`` passes of ``ceil(n / batch_size)``
    steps (one step per epoch in full batch) when ``epochs > 0``, else ``max_iter``."""
    if not epochs:
        return max_iter
    return epochs * (math.ceil(n / batch_size) if 0 < batch_size < n else 1)


def _fresh_gradient(optimizer: Any) -> bool:
    """Whether the optimiser's step returns the objective and gradient at the new point
    (L-BFGS, gradient descent); Adam and SGD return those at the point they started from."""
    return getattr(optimizer, "evaluates_new_point", not isinstance(optimizer, Adam))


def train(model: Network, data: Dataset, cfg: Any = None, *, optimizer: Any = None, solver: Any = None,
          max_iter: Optional[int] = None, gtol: Optional[float] = None, batch_size: Optional[int] = None,
          epochs: Optional[int] = None, eval_every: Optional[int] = None, full_eval: Optional[bool] = None,
          seed: Optional[int] = None, threads: Optional[int] = None,
          callback: Optional[Callable[[dict[str, float]], None]] = None,
          grid: Optional[ProcessGrid] = None, checkpoint: Any = None, resume: bool = False) -> TrainResult:
    """Train ``model`` in place on ``data``; returns the history (:class:`TrainResult`).

    ``optimizer``: an :class:`~layerparallel.optim.LBFGS` (the default, ``LBFGS()``),
    :class:`~layerparallel.optim.GradientDescent`, :class:`~layerparallel.optim.Adam`
    or :class:`~layerparallel.optim.SGD`; its inner products are set to the solver's
    reproducible ones. ``solver``: a :class:`layerparallel.Solver` for ``model``
    (default: serial sweeps).

    Length: ``epochs`` (0) passes over the training set when positive, else
    ``max_iter`` (100) optimiser steps; a full-batch epoch is one step. Training
    stops earlier when the gradient norm is at most ``gtol`` (1e-4; full batch
    only) or a line search fails. ``batch_size`` (0 = full batch) splits every
    epoch into ``ceil(n / batch_size)`` mini-batches in a seeded (``seed``, 0)
    shuffled order. Every step evaluates a fresh gradient at the current point.

    Metrics: a history row at the start, every ``eval_every`` steps (0, the
    default: at the end of every epoch, i.e. every step in full batch) and at the
    end. In full batch a row holds the objective and gradient of the iterate. With
    mini-batches it holds the running means over the batches since the previous
    row (objective, loss, accuracy, and the norm of the mean gradient, each batch
    measured at the point its step started from), and ``epoch`` and
    ``examples_per_second``; ``full_eval=True`` replaces the training loss and
    accuracy by a forward pass over the whole training set (no gradient). The
    validation metrics are a forward pass over the validation set. No full-set
    gradient is ever computed with mini-batches: an epoch makes exactly its
    batches' gradient evaluations (plus line-search trials for L-BFGS and
    gradient descent); row 0 adds one forward pass over the training set.

    ``threads`` (0) sets the threads of the compiled loops and BLAS (0 leaves them,
    or shares the cores between the processes of this machine when the solver's
    grid has several). ``callback(row)`` is called after every logged row.

    In the simultaneous mode the safeguard (``MgritOptions.safeguard``) watches the
    MGRIT convergence factors and the line search, and makes the solves exact for
    a few iterations when either fails; every switch is in
    ``TrainResult.mgrit["safeguard_switches"]``.

    With a grid (the solver's) every process must call ``train`` with the same
    arguments; each ends with the same (gathered) parameters and history. With
    split layers each process's optimiser holds only its own parameters and every
    inner product is an all-reduce.

    ``checkpoint``: a :class:`~layerparallel.checkpoint.Checkpointer`; every
    ``checkpoint.every`` steps (0: never) the whole state of the loop is written to
    its folder, and SIGINT or SIGTERM write one at the end of the current step and
    raise :class:`TrainingInterrupted`. ``resume=True`` continues from the folder's
    last checkpoint instead of starting afresh: the same parameters and history, bit
    for bit, as a run that was never stopped (``seconds`` aside). Every argument
    must be the one of the run that wrote it.

    ``train(model, data, cfg)`` takes all of the above from a configuration
    (``[optimizer]``, ``[train]``, ``[mgrit]``; ``grid`` then splits the work) and
    runs the same loop; a configuration and these keywords do not mix.
    """
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=Checkpointer(folder) to read the checkpoint from")
    if cfg is not None:
        given = [name for name, v in (("optimizer", optimizer), ("max_iter", max_iter), ("gtol", gtol),
                                      ("batch_size", batch_size), ("epochs", epochs), ("eval_every", eval_every),
                                      ("full_eval", full_eval), ("seed", seed), ("threads", threads))
                 if v is not None]
        if given:
            raise ValueError(f"train takes {given[0]} from cfg when a configuration is given; "
                             f"leave out {given[0]}=... or cfg")
        o = cfg.optimizer
        n = as_matrix(data.train_x).shape[0]
        return train(model, data, optimizer=make_optimizer(o, total_steps=planned_steps(
                         o.max_iter, o.epochs, o.batch_size, n)),
                     solver=solver_from_config(cfg, model, grid) if solver is None else _as_solver(model, solver, grid),
                     max_iter=o.max_iter, gtol=o.gtol, batch_size=o.batch_size, epochs=o.epochs,
                     eval_every=cfg.train.eval_every, full_eval=cfg.train.full_eval, seed=cfg.train.seed,
                     threads=cfg.train.threads, callback=callback, checkpoint=checkpoint, resume=resume)

    solver = _as_solver(model, solver, grid)
    optimizer = LBFGS() if optimizer is None else optimizer
    if not callable(getattr(optimizer, "step", None)):
        raise ValueError(f"optimizer must be an LBFGS, GradientDescent, Adam or SGD (anything with "
                         f"step(fun, x, f, g)), got {type(optimizer).__name__}")
    max_iter = _count("max_iter", 100 if max_iter is None else max_iter, 0)
    batch_size = _count("batch_size", 0 if batch_size is None else batch_size, 0)
    epochs = _count("epochs", 0 if epochs is None else epochs, 0)
    eval_every = _count("eval_every", 0 if eval_every is None else eval_every, 0)
    seed = _count("seed", 0 if seed is None else seed, 0)
    threads = _count("threads", 0 if threads is None else threads, 0)
    if full_eval is not None and not isinstance(full_eval, (bool, np.bool_)):
        raise ValueError(f"full_eval must be True or False, got {full_eval!r}")
    full_eval = bool(full_eval)
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
    # Examples as rows once (image batches flattened as views), so that the MGRIT
    # warm starts recognise the same data from call to call.
    X, y = as_matrix(data.train_x), data.train_y
    val_x = as_matrix(data.val_x)
    n = X.shape[0]
    batch_size = batch_size if batch_size and batch_size < n else 0
    steps = planned_steps(max_iter, epochs, batch_size, n)
    loop = (_MiniBatchLoop if batch_size else _FullBatchLoop)(
        model, solver, optimizer, X, y, val_x, data.val_y, steps=steps, batch_size=batch_size, eval_every=eval_every,
        full_eval=full_eval, gtol=gtol, seed=seed, callback=callback, checkpoint=checkpoint)
    with _stop_signals(loop if checkpoint is not None else None):
        return loop.run(resume)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a checkpointed run after writing a checkpoint."""

    def __init__(self, iteration: int, folder: Any):
        super().__init__(f"interrupted after iteration {iteration}; checkpoint written to {folder}")
        self.iteration, self.folder = iteration, folder


@contextlib.contextmanager
def _stop_signals(loop: Optional["_Loop"]) -> Iterator[None]:
    """While a checkpointed loop runs, SIGINT and SIGTERM only ask it to stop at the end
    of the current step (with a checkpoint); elsewhere they keep their handlers."""
    if loop is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: Any) -> None:
        loop.stop_signal = signum

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Loop:
    """What both training loops share: the iterate, the history and its rows."""

    def __init__(self, model: Network, solver: Any, optimizer: Any, X: np.ndarray, y: np.ndarray,
                 val_x: np.ndarray, val_y: np.ndarray, *, steps: int, batch_size: int, eval_every: int,
                 full_eval: bool, gtol: float, seed: int, callback: Any, checkpoint: Any = None):
        self.model, self.solver, self.optimizer = model, solver, optimizer
        self.checkpoint = checkpoint
        self.stop_signal: Optional[int] = None
        self.last_step = 0.0
        self.X, self.y, self.val_x, self.val_y = X, y, val_x, val_y
        self.steps, self.batch_size, self.eval_every = steps, batch_size, eval_every
        self.full_eval, self.gtol, self.seed, self.callback = full_eval, gtol, seed, callback
        self.shard = solver.shard
        self.dot = self.shard.dot
        self.guarded = solver.guarded
        self.layered = solver.comm is not None
        self.history: list[dict[str, float]] = []
        self.columns = tuple(solver.columns)
        self.t0 = time.perf_counter()
        self.theta = self.shard.local(model.theta)

    def log(self, row: dict[str, float]) -> dict[str, float]:
        row["val_loss"], row["val_accuracy"] = self.solver.validate(self.theta, self.val_x, self.val_y)
        row["seconds"] = time.perf_counter() - self.t0
        row.update(self.solver.row_extra())
        self.history.append(row)
        if self.callback:
            self.callback(row)
        return row

    def accept(self, it: int, x: np.ndarray) -> None:
        self.theta = x
        if not self.layered:
            self.model.theta[...] = x
        if self.guarded:
            reason = self.solver.monitor()
            self.solver.end_iteration()
            if reason is not None:
                self.solver.tighten(it, reason)

    # ---------------------------------------------------------------- checkpoints
    def state(self, it: int) -> dict[str, dict[str, Any]]:
        """Everything the loop needs to continue after step ``it`` (this process's share)."""
        opt = self.optimizer.state_dict() if hasattr(self.optimizer, "state_dict") else {}
        return {"loop": {"iteration": it, "elapsed": time.perf_counter() - self.t0, "history": self.history,
                         "theta": self.theta, "last_step": self.last_step},
                "optimizer": opt, "solver": self.solver.inner.state_dict(self.X)}

    # Parameter-sized vectors of the state: stored whole (gathered over the layer
    # processes), so that the serial and exact modes can resume on another process grid.
    _VECTORS = {"loop": ("theta", "g"), "batches": ("sum_gradient",),
                "optimizer": ("s", "y", "m", "v", "momentum_buffer")}

    def _whole(self, state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for section, keys in self._VECTORS.items():
            for key in keys:
                a = state.get(section, {}).get(key)
                if isinstance(a, np.ndarray) and a.ndim in (1, 2) and a.shape[-1] == self.theta.size:
                    rows = [self.shard.gather(r) for r in np.atleast_2d(a)]
                    state[section][key] = rows[0] if a.ndim == 1 else np.array(rows)
        return state

    def _own(self, state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        size = self.model.size
        for section, keys in self._VECTORS.items():
            for key in keys:
                a = state.get(section, {}).get(key)
                if isinstance(a, np.ndarray) and a.ndim in (1, 2) and a.shape[-1] == size:
                    state[section][key] = a[..., self.shard.index].copy()
        return state

    def load_checkpoint(self) -> dict[str, dict[str, Any]]:
        """The checkpoint's state with this process's share of every parameter vector. The
        serial and exact modes may resume on another number of processes (the MGRIT warm
        starts, per process, are then dropped: these modes solve exactly anyway)."""
        portable = self.solver.inner.mode in ("serial", "exact")
        state, same = self.checkpoint.load(other_counts=portable)
        if not same:
            state["solver"]["warm_sizes"] = []
        return self._own(state)

    def restore(self, state: dict[str, dict[str, Any]]) -> int:
        loop = state["loop"]
        theta = np.asarray(loop["theta"], dtype=np.float64)
        if theta.shape != self.theta.shape:
            raise ValueError(f"the checkpoint holds {theta.size} parameters on this process, the model "
                             f"{self.theta.size}: resume with the configuration and processes that wrote it")
        self.theta = theta.copy()
        if not self.layered:
            self.model.theta[...] = self.theta
        self.history = [dict(r) for r in loop["history"]]
        self.t0 = time.perf_counter() - float(loop["elapsed"])
        self.last_step = float(loop["last_step"])
        if state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
        self.solver.inner.load_state_dict(state["solver"], self.X)
        self.solver.evaluations = self.solver.inner.evaluations
        return int(loop["iteration"])

    def end_step(self, it: int) -> None:
        """After step ``it``: a checkpoint when one is due, and a stop when a signal asked for it
        (agreed by every process, so that all write their share of the same checkpoint)."""
        ck = self.checkpoint
        if ck is None:
            return
        stop = self.stop_signal is not None
        if ck.size > 1:
            stop = ck.comm.allreduce(int(stop)) > 0
        if stop or (ck.every and it % ck.every == 0):
            ck.save(it, self._whole(self.state(it)))
        if stop:
            raise TrainingInterrupted(it, ck.folder)

    def result(self, it: int, stop_reason: str) -> TrainResult:
        self.model.theta[...] = self.shard.gather(self.theta)
        seconds = time.perf_counter() - self.t0
        last = self.history[-1]
        final = {k: last[k] for k in ("objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                      "grad_norm")}
        return TrainResult(history=self.history, seconds=seconds, iterations=it, stop_reason=stop_reason,
                           gradient_evaluations=self.solver.evaluations, final=final, mgrit=self.solver.summary(),
                           columns=self.columns)


class _FullBatchLoop(_Loop):
    """One optimiser step per iteration on the whole training set."""

    def row(self, it: int, step: float, ev: Evaluation) -> dict[str, float]:
        g = ev.gradient
        return self.log({"iteration": it, "objective": ev.objective, "train_loss": ev.loss,
                         "train_accuracy": ev.accuracy, "grad_norm": math.sqrt(self.dot(g, g)), "step": step})

    def state(self, it: int) -> dict[str, dict[str, Any]]:
        st = super().state(it)
        st["loop"].update(f=self.f, g=self.g)
        return st

    def restore(self, state: dict[str, dict[str, Any]]) -> int:
        it = super().restore(state)
        self.f, self.g = float(state["loop"]["f"]), np.asarray(state["loop"]["g"], dtype=np.float64)
        return it

    def run(self, resume: bool = False) -> TrainResult:
        solver, optimizer, X, y = self.solver, self.optimizer, self.X, self.y

        def full(theta: np.ndarray) -> tuple[float, np.ndarray]:
            ev = solver(theta, X, y)
            assert ev.gradient is not None
            return ev.objective, ev.gradient

        start = 1
        if resume:
            start = self.restore(self.load_checkpoint()) + 1
            f, g = self.f, self.g
        else:
            ev = solver(self.theta, X, y)
            f, g = ev.objective, ev.gradient
            self.row(0, 0.0, ev)
        stop_reason, it = "max_iter", start - 1
        fresh = _fresh_gradient(optimizer)
        for it in range(start, self.steps + 1):
            res = optimizer.step(full, self.theta, f, g)
            if not res.accepted and self.guarded and not solver.exact:
                # The inexact objective/gradient could not give descent: solve exactly at
                # the current point and retry the step once before giving up.
                solver.tighten(it, "line search failed with inexact solves")
                ev = solver(self.theta, X, y)
                f, g = ev.objective, ev.gradient
                optimizer.reset()
                res = optimizer.step(full, self.theta, f, g)
            if not res.accepted and fresh:
                stop_reason = "line_search_failed"
                it -= 1
                break
            self.accept(it, res.x)
            if not self.eval_every or it % self.eval_every == 0:
                cur = solver.cached(self.theta, X)
                if cur is None:
                    cur = solver(self.theta, X, y)
                f, g = cur.objective, cur.gradient
                row = self.row(it, res.step, cur)
                if not math.isfinite(row["objective"]):
                    stop_reason = "diverged"
                    break
                if row["grad_norm"] <= self.gtol:
                    stop_reason = "gtol"
                    break
            elif fresh:
                f, g = res.f, res.g
            else:  # Adam and SGD return the gradient of the point they started from
                f, g = full(self.theta)
            self.f, self.g, self.last_step = f, g, res.step
            self.end_step(it)
        if self.history[-1]["iteration"] != it:  # make sure the final state is measured
            cur = solver.cached(self.theta, X) or solver(self.theta, X, y)
            self.row(it, self.last_step, cur)
        return self.result(it, stop_reason)


class _MiniBatchLoop(_Loop):
    """Seeded shuffled epochs of mini-batches; running metrics, no full-set gradient."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.columns = self.columns + ("epoch", "examples_per_second")
        self.n = self.X.shape[0]
        self.per_epoch = math.ceil(self.n / self.batch_size)
        self.rng = np.random.default_rng(self.seed)
        self.perm: Optional[np.ndarray] = None  # this epoch's order, and the next batch's start in it
        self.pos = 0
        self.clear()

    def clear(self) -> None:
        self.sum_objective = self.sum_loss = self.sum_correct = self.seen = self.busy = 0.0
        self.sum_gradient = np.zeros_like(self.theta)

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        if self.perm is None or self.pos >= self.n:  # a new epoch: a new seeded permutation
            self.perm, self.pos = self.rng.permutation(self.n), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.X[idx], self.y[idx]

    def state(self, it: int) -> dict[str, dict[str, Any]]:
        st = super().state(it)
        st["batches"] = {"rng": self.rng.bit_generator.state, "pos": self.pos, "busy": self.busy,
                         "perm": self.perm if self.perm is not None else np.zeros(0, np.int64),
                         "sum_objective": self.sum_objective,
                         "sum_loss": self.sum_loss, "sum_correct": self.sum_correct, "seen": self.seen,
                         "sum_gradient": self.sum_gradient}
        return st

    def restore(self, state: dict[str, dict[str, Any]]) -> int:
        it = super().restore(state)
        b = state["batches"]
        self.rng.bit_generator.state = b["rng"]
        self.perm = np.asarray(b["perm"]) if len(b["perm"]) else None  # empty: before the first batch
        self.pos = int(b["pos"])
        self.busy = float(b["busy"])
        self.sum_objective, self.sum_loss = float(b["sum_objective"]), float(b["sum_loss"])
        self.sum_correct, self.seen = float(b["sum_correct"]), float(b["seen"])
        self.sum_gradient = np.asarray(b["sum_gradient"], dtype=np.float64).copy()
        return it

    def add(self, ev: Evaluation) -> None:
        k = ev.examples
        self.sum_objective += ev.objective * k
        self.sum_loss += ev.loss * k
        self.sum_correct += ev.correct
        self.sum_gradient += ev.gradient * k
        self.seen += k

    def forward_row(self, it: int, step: float) -> dict[str, float]:
        loss, acc = self.solver.validate(self.theta, self.X, self.y)
        return {"iteration": it, "objective": loss + self.shard.regularization(self.theta)[0], "train_loss": loss,
                "train_accuracy": acc, "step": step}

    def row(self, it: int, step: float) -> dict[str, float]:
        if self.full_eval or not self.seen:
            row = self.forward_row(it, step)
        else:
            row = {"iteration": it, "objective": self.sum_objective / self.seen,
                   "train_loss": self.sum_loss / self.seen, "train_accuracy": self.sum_correct / self.seen,
                   "step": step}
        mean = self.sum_gradient / max(self.seen, 1.0)
        row["grad_norm"] = math.sqrt(self.dot(mean, mean)) if self.seen else float("nan")
        row["epoch"] = it / self.per_epoch
        row["examples_per_second"] = self.seen / self.busy if self.busy > 0 else float("nan")
        self.clear()
        return self.log(row)

    def run(self, resume: bool = False) -> TrainResult:
        solver, optimizer = self.solver, self.optimizer
        start = 1
        if resume:
            start = self.restore(self.load_checkpoint()) + 1
        else:
            Xb, yb = self.batch()
            t = time.perf_counter()
            ev = solver(self.theta, Xb, yb)
            first_busy = time.perf_counter() - t
            row0 = self.forward_row(0, 0.0)
            row0["grad_norm"] = math.sqrt(self.dot(ev.gradient, ev.gradient))
            row0["epoch"], row0["examples_per_second"] = 0.0, float("nan")
            self.log(row0)
            self.busy = first_busy
        stop_reason, it = "max_iter", start - 1
        fresh = _fresh_gradient(optimizer)
        for it in range(start, self.steps + 1):
            t = time.perf_counter()
            if it > start or resume:
                Xb, yb = self.batch()
                ev = solver(self.theta, Xb, yb)

            def batch_fun(th: np.ndarray, Xb: np.ndarray = Xb, yb: np.ndarray = yb) -> tuple[float, np.ndarray]:
                e = solver(th, Xb, yb)
                return e.objective, e.gradient

            res = optimizer.step(batch_fun, self.theta, ev.objective, ev.gradient)
            self.add(ev)
            if not res.accepted and fresh:
                stop_reason = "line_search_failed"
                it -= 1
                break
            self.accept(it, res.x)
            self.busy += time.perf_counter() - t
            if (self.eval_every and it % self.eval_every == 0) or \
                    (not self.eval_every and it % self.per_epoch == 0):
                row = self.row(it, res.step)
                if not math.isfinite(row["objective"]):
                    stop_reason = "diverged"
                    break
            self.last_step = res.step
            self.end_step(it)
        if self.history[-1]["iteration"] != it:  # make sure the final state is measured
            self.row(it, self.last_step)
        return self.result(it, stop_reason)


class _TrainModule(types.ModuleType):
    """This module, callable as :func:`train` (so ``layerparallel.train(...)`` trains
    whichever of the two the package attribute holds)."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
sys.modules[__name__].__signature__ = inspect.signature(train)  # type: ignore[attr-defined]
