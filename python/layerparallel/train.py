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
from .device import check_device
from .model import ConvResNet, Evaluation, Network, Regularization, ResNet, as_matrix
from .optim import Adam, make_optimizer, minibatches

__all__ = ["HISTORY_COLUMNS", "MGRIT_COLUMNS", "TrainResult", "SerialSolver", "MgritSolver", "build_model",
           "make_solver", "train"]

#: Columns of history.csv, in order.
HISTORY_COLUMNS = ("iteration", "objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "grad_norm", "step", "seconds")
#: Extra columns in the MGRIT modes: the final residual and last convergence factor of the
#: forward and adjoint solves at the iterate, the cycles they ran, and 1 when solved exactly.
MGRIT_COLUMNS = ("fwd_residual", "bwd_residual", "fwd_factor", "bwd_factor", "fwd_cycles", "bwd_cycles", "exact")


@dataclass
class TrainResult:
    """What a training run produced."""

    history: list[dict[str, float]]
    seconds: float
    iterations: int
    stop_reason: str
    gradient_evaluations: int
    final: dict[str, float] = field(default_factory=dict)
    mgrit: dict[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = HISTORY_COLUMNS


class SerialSolver:
    """Exact forward and adjoint sweeps, layer after layer (ordinary backpropagation)."""

    mode = "serial"

    def __init__(self, model: Network):
        self.model = model
        self.evaluations = 0
        self.last: Optional[Evaluation] = None
        self._last_theta: Optional[np.ndarray] = None
        self._last_features: Optional[np.ndarray] = None

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray,
                 regularized: bool = True) -> Evaluation:
        ev = self.model.evaluate(features, labels, theta=theta, gradient=True, regularized=regularized)
        self.evaluations += 1
        self.remember(ev, theta, features)
        return ev

    def remember(self, ev: Evaluation, theta: np.ndarray, features: np.ndarray) -> None:
        self.last, self._last_theta, self._last_features = ev, theta, features

    def cached(self, theta: np.ndarray, features: np.ndarray) -> Optional[Evaluation]:
        """The evaluation at ``theta`` on ``features`` if it was the last one computed (saves a sweep)."""
        if self._last_theta is None or self._last_features is not features:
            return None
        if self._last_theta is theta or np.array_equal(self._last_theta, theta):
            return self.last
        return None

    # The serial sweeps are exact: nothing to monitor.
    columns = HISTORY_COLUMNS

    def row_extra(self) -> dict[str, float]:
        return {}

    def end_iteration(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


class MgritSolver(SerialSolver):
    """Forward and adjoint sweeps by MGRIT.

    ``exact``: every evaluation solves both to ``mgrit.tol`` relative to the size
    of the initial value (the same iterates as serial up to that tolerance).
    ``simultaneous``: every evaluation (line-search trials included) runs
    ``mgrit.fwd_iterations`` / ``mgrit.bwd_iterations`` cycles, warm-started from
    the previous evaluation's state and adjoint (the one-shot method).
    The safeguard (:meth:`tighten`) makes the next iterations exact.
    """

    def __init__(self, model: Network, mgrit_cfg: Any, mode: str, threads: int = 0, comm: Any = None,
                 device: str = "cpu"):
        super().__init__(model)
        self.comm = comm  # a parallel.CoreComm over which the layers are split (None: all here)
        self.device = device
        if mode not in ("exact", "simultaneous"):
            raise ValueError(f"train.mode must be 'exact' or 'simultaneous' for MGRIT, got {mode!r}")
        from .config import relax_levels

        c = mgrit_cfg
        self.mode = mode
        self.cfg = c
        self.options = {"max_levels": c.max_levels, "cfactor": c.cfactor,
                        "cfactor_fine": c.cfactor_fine if c.cfactor_fine else -1, "min_coarse": c.min_coarse,
                        "relax": relax_levels(c.relax), "cycle": c.cycle, "max_iter": c.max_iter, "fmg": c.fmg,
                        "skip_first_down": c.skip_first_down, "store": c.store, "threads": c.threads or threads,
                        "compute_residuals": c.compute_residuals}
        self.fwd_budget = c.fwd_iterations
        self.bwd_budget = c.bwd_iterations
        self._solvers: dict[int, Any] = {}
        self._data_of: dict[int, int] = {}
        self.forced_exact = 0
        self.switches: list[dict[str, Any]] = []
        self.totals = {"fwd_cycles": 0, "bwd_cycles": 0, "fwd_steps": 0, "bwd_steps": 0, "evaluations": 0}
        self.fwd_factors: list[float] = []
        self.bwd_factors: list[float] = []
        self.last_report: dict[str, Any] = {}

    @property
    def exact(self) -> bool:
        return self.mode == "exact" or self.forced_exact > 0

    def _solver(self, features: np.ndarray) -> Any:
        s = features.shape[0]
        solver = self._solvers.get(s)
        if solver is None:
            solver = _core.ResNetMgrit(self.model.core, s, self.options, self.options, self.comm, self.device)
            solver.set_relative_tolerance(self.cfg.tol)
            self._solvers[s] = solver
        elif self._data_of.get(s) != id(features):
            solver.reset()  # another batch: a warm start would be meaningless
        self._data_of[s] = id(features)
        return solver

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray,
                 regularized: bool = True) -> Evaluation:
        r = self.model.regularization if regularized else Regularization()
        exact = self.exact
        d = self._solver(features).evaluate(theta, features, labels, r.tikhonov, r.classifier, r.ddt,
                                            -1 if exact else self.fwd_budget, -1 if exact else self.bwd_budget, True)
        self.evaluations += 1
        t = self.totals
        t["evaluations"] += 1
        t["fwd_cycles"] += d["forward"]["cycles"]
        t["bwd_cycles"] += d["adjoint"]["cycles"]
        t["fwd_steps"] += d["forward"]["steps"]
        t["bwd_steps"] += d["adjoint"]["steps"]
        ev = Evaluation(objective=d["objective"], loss=d["loss"], regularization=d["regularization"],
                        accuracy=d["accuracy"], correct=int(d["correct"]), examples=int(d["examples"]),
                        gradient=d["gradient"])
        self.remember(ev, theta, features)
        self.last_report = {"forward": d["forward"], "adjoint": d["adjoint"], "exact": exact}
        return ev

    @staticmethod
    def _factor(residuals: list[float]) -> float:
        """The last cycle's convergence factor (NaN when it cannot be formed)."""
        if len(residuals) >= 2 and residuals[-2] > 0 and np.isfinite(residuals[-2]):
            return residuals[-1] / residuals[-2]
        return float("nan")

    columns = HISTORY_COLUMNS + MGRIT_COLUMNS

    def row_extra(self) -> dict[str, float]:
        rep = self.last_report
        if not rep:
            return {k: float("nan") for k in MGRIT_COLUMNS}
        fr, br = rep["forward"]["residuals"], rep["adjoint"]["residuals"]
        return {"fwd_residual": fr[-1] if fr else float("nan"), "bwd_residual": br[-1] if br else float("nan"),
                "fwd_factor": self._factor(fr), "bwd_factor": self._factor(br),
                "fwd_cycles": rep["forward"]["cycles"], "bwd_cycles": rep["adjoint"]["cycles"],
                "exact": 1 if rep["exact"] else 0}

    def monitor(self) -> Optional[str]:
        """Why the last (inexact) evaluation needs the safeguard, or None."""
        rep = self.last_report
        if not rep or rep["exact"] or self.mode != "simultaneous":
            return None
        limit = self.cfg.safeguard_factor
        for name in ("forward", "adjoint"):
            rho = self._factor(rep[name]["residuals"])
            if name == "forward":
                self.fwd_factors.append(rho)
            else:
                self.bwd_factors.append(rho)
            res = rep[name]["residuals"]
            if res and not np.isfinite(res[-1]):
                return f"{name} residual is not finite"
            if np.isfinite(rho) and rho > limit:
                return f"{name} convergence factor {rho:.3g} > {limit:g}"
        return None

    def tighten(self, iteration: int, reason: str) -> None:
        """Solve exactly for the next ``safeguard_iterations`` iterations and log the switch."""
        self.forced_exact = self.cfg.safeguard_iterations
        self.switches.append({"iteration": iteration, "reason": reason,
                              "action": f"exact solves for {self.forced_exact} iterations"})

    def end_iteration(self) -> None:
        if self.forced_exact > 0:
            self.forced_exact -= 1

    def summary(self) -> dict[str, Any]:
        t = self.totals
        some = next(iter(self._solvers.values()), None)
        mean = lambda xs: float(np.nanmean(xs)) if xs and np.isfinite(xs).any() else None
        rep = self.row_extra()
        N = self.model.layers
        return {
            "levels": some.levels if some is not None else None,
            "forward_cycles": t["fwd_cycles"], "adjoint_cycles": t["bwd_cycles"],
            "forward_steps": t["fwd_steps"], "adjoint_steps": t["bwd_steps"],
            "forward_steps_per_level": list(some.forward_steps_per_level) if some is not None else [],
            "adjoint_steps_per_level": list(some.adjoint_steps_per_level) if some is not None else [],
            "sweeps_per_evaluation": (t["fwd_steps"] + t["bwd_steps"]) / max(1, 2 * N * t["evaluations"]),
            "evaluations": t["evaluations"],
            "last_forward_residual": rep["fwd_residual"], "last_adjoint_residual": rep["bwd_residual"],
            "mean_forward_factor": mean(self.fwd_factors), "mean_adjoint_factor": mean(self.bwd_factors),
            "safeguard_switches": self.switches,
        }


class PipelineSolver(MgritSolver):
    """The serial mode when the layers are split over processes: exact forward and
    adjoint sweeps passed from process to process (the engine on one level)."""

    def __init__(self, model: Network, mgrit_cfg: Any, threads: int, comm: Any, device: str = "cpu"):
        super().__init__(model, mgrit_cfg, "exact", threads, comm=comm, device=device)
        self.mode = "serial"
        self.options["max_levels"] = 1

    exact = True  # type: ignore[assignment]
    columns = HISTORY_COLUMNS

    def row_extra(self) -> dict[str, float]:
        return {}

    def monitor(self) -> Optional[str]:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


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
    """The gradient solver of ``train.mode``; ``comm`` (a parallel.CoreComm) splits the layers."""
    mode = cfg.train.mode
    device = check_device(cfg.train.device, cfg.model.kind, cfg.model.opening)
    if mode == "serial":
        if comm is None and device == "cpu":
            return SerialSolver(model)
        return PipelineSolver(model, cfg.mgrit, cfg.train.threads, comm, device)
    if mode in ("exact", "simultaneous"):
        return MgritSolver(model, cfg.mgrit, mode, cfg.train.threads, comm=comm, device=device)
    raise ValueError(f"train.mode must be one of 'serial', 'exact', 'simultaneous', got {mode!r}")


def train(model: Network, data: Dataset, cfg: Any,
          callback: Optional[Callable[[dict[str, float]], None]] = None,
          solver: Optional[SerialSolver] = None, grid: Any = None) -> TrainResult:
    """Train ``model`` in place on ``data`` as ``cfg`` says; returns the history.

    ``callback(row)`` is called after every logged iteration (the CLI's progress
    display). Iteration 0 is the initial point. In the simultaneous mode the
    safeguard (``mgrit.safeguard``) watches the MGRIT convergence factors and the
    line search, and makes the solves exact for a few iterations when either
    fails; every such switch is in ``TrainResult.mgrit["safeguard_switches"]``.

    ``grid`` (a :class:`layerparallel.parallel.ProcessGrid`) splits the layers
    over its layer communicator and the examples over its data communicator;
    every process must call ``train`` with the same arguments and ends with the
    same (gathered) parameters and history. With split layers each process's
    optimiser holds only its own parameters and every inner product is an
    all-reduce.
    """
    threads = cfg.train.threads
    if not threads and grid is not None and grid.size > 1:
        # Share the cores between the processes of this machine instead of
        # oversubscribing them.
        from .parallel import local_processes

        threads = max(1, _core.max_threads() // local_processes())
    if threads:
        _core.set_num_threads(threads)
    opt_cfg = cfg.optimizer
    from .parallel import CoreComm, LayerParallelSolver

    layered = grid is not None and grid.layer_procs > 1
    core_comm = CoreComm(grid.layer_comm) if layered else None
    solver = solver or make_solver(cfg, model, comm=core_comm)
    guarded = isinstance(solver, MgritSolver) and solver.mode == "simultaneous" and cfg.mgrit.safeguard
    # Every run (one process too) goes through the same parameter shard, regulariser
    # and inner products, so that splitting the layers changes no bit of training.
    solver = LayerParallelSolver(solver, grid, core_comm)
    shard = solver.shard
    optimizer = make_optimizer(opt_cfg, dot=shard.dot)
    dot = shard.dot
    # Examples as rows once (image batches flattened as views), so that the MGRIT
    # warm starts recognise the same data from call to call.
    X, y = as_matrix(data.train_x), data.train_y
    val_x = as_matrix(data.val_x)
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
    for it in range(1, opt_cfg.max_iter + 1):
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
        if batch_size or it % cfg.train.eval_every == 0 or it == opt_cfg.max_iter:
            cur = solver.cached(theta, X)
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
