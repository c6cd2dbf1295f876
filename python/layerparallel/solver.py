"""Gradient solvers: how the forward and adjoint sweeps of one evaluation are solved.

:class:`Solver` is the public one (``lp.Solver(model, mode=..., mgrit=..., device=...,
grid=...)``, called as ``solver(theta, X, y) -> Evaluation``); training uses it in
every mode. It wraps one of the sweep solvers below in the layer-parallel solver
(:class:`layerparallel.layer_parallel.LayerParallelSolver`), so that one process and
many go through the same parameter shard, regulariser and inner products:

- :class:`SerialSolver`: exact sweeps, layer after layer (backpropagation);
- :class:`MgritSolver`: MGRIT to ``tol`` (exact mode) or a fixed budget of
  warm-started cycles (simultaneous mode), with the safeguard's bookkeeping;
- :class:`PipelineSolver`: the serial mode on a device or with split layers
  (the engine on one level).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _core
from .comm import core_comm
from .device import check_device
from .grid import ProcessGrid
from .layer_parallel import LayerParallelSolver
from .model import ConvResNet, Evaluation, Network, Regularization, as_matrix
from .options import MgritOptions

__all__ = ["MODES", "MGRIT_COLUMNS", "HISTORY_COLUMNS", "Solver", "SerialSolver", "MgritSolver", "PipelineSolver",
           "sweep_solver"]

MODES = ("serial", "exact", "simultaneous")

#: Columns of history.csv, in order.
HISTORY_COLUMNS = ("iteration", "objective", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "grad_norm", "step", "seconds")
#: Extra columns in the MGRIT modes: the final residual and last convergence factor of the
#: forward and adjoint solves at the iterate, the cycles they ran, 1 when solved exactly, and
#: ``cycles``: the forward and adjoint cycles of every evaluation since the previous row.
MGRIT_COLUMNS = ("fwd_residual", "bwd_residual", "fwd_factor", "bwd_factor", "fwd_cycles", "bwd_cycles", "exact",
                 "cycles")


class SerialSolver:
    """Exact forward and adjoint sweeps, layer after layer (ordinary backpropagation)."""

    mode = "serial"
    guarded = False  # no safeguard: the sweeps are exact

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

    def state_dict(self, train_features: Optional[np.ndarray] = None) -> dict[str, Any]:
        """The counters a checkpoint keeps (see :mod:`layerparallel.checkpoint`)."""
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state: dict[str, Any], train_features: Optional[np.ndarray] = None) -> None:
        self.evaluations = int(state["evaluations"])

    # The serial sweeps are exact: nothing to monitor.
    columns = HISTORY_COLUMNS

    def report(self) -> Optional[dict[str, Any]]:
        """MGRIT statistics of the last evaluation (None: no MGRIT)."""
        return None

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

    ``mgrit`` is an :class:`MgritOptions`, a ``[mgrit]`` config section or a dict of
    its keys; ``comm`` the engine communicator the layers are split over (None: all here).
    """

    def __init__(self, model: Network, mgrit: Any, mode: str, threads: int = 0, comm: Any = None,
                 device: str = "cpu"):
        super().__init__(model)
        self.comm = comm
        self.device = device
        if mode not in ("exact", "simultaneous"):
            raise ValueError(f"mode must be 'exact' or 'simultaneous' for MGRIT, got {mode!r}")
        self.mode = mode
        self.mgrit = MgritOptions.coerce(mgrit)
        self.options = self.mgrit.engine_options(threads)
        self.fwd_budget = self.mgrit.fwd_iterations
        self.bwd_budget = self.mgrit.bwd_iterations
        self._solvers: dict[int, Any] = {}
        self._data_of: dict[int, int] = {}
        self.forced_exact = 0
        self.switches: list[dict[str, Any]] = []
        self.totals = {"fwd_cycles": 0, "bwd_cycles": 0, "fwd_steps": 0, "bwd_steps": 0, "evaluations": 0}
        self.fwd_factors: list[float] = []
        self.bwd_factors: list[float] = []
        self.last_report: dict[str, Any] = {}
        self.adaptive = mode == "simultaneous" and self.mgrit.adaptive
        self.eta = self.mgrit.adaptive_eta   # adaptive: halved by every safeguard switch
        self.g0: Optional[float] = None      # adaptive: the first and the latest gradient norm
        self.g_last: Optional[float] = None
        self.cycles_logged = 0               # totals' cycles at the previous history row

    @property
    def exact(self) -> bool:
        return self.mode == "exact" or self.forced_exact > 0

    @property
    def guarded(self) -> bool:  # type: ignore[override]
        """Whether the safeguard watches this solver (simultaneous mode with ``mgrit.safeguard``)."""
        return self.mode == "simultaneous" and self.mgrit.safeguard

    def _engine(self, s: int) -> Any:
        solver = self._solvers.get(s)
        if solver is None:
            solver = _core.ResNetMgrit(self.model.core, s, self.options, self.options, self.comm, self.device)
            solver.set_relative_tolerance(self.mgrit.tol)
            self._solvers[s] = solver
        return solver

    def _solver(self, features: np.ndarray) -> Any:
        s = features.shape[0]
        fresh = s not in self._solvers
        solver = self._engine(s)
        if not fresh and self._data_of.get(s) != id(features):
            solver.reset()  # another batch: a warm start would be meaningless
        self._data_of[s] = id(features)
        return solver

    def state_dict(self, train_features: Optional[np.ndarray] = None) -> dict[str, Any]:
        """Counters, safeguard state and the warm starts (host memory) of the engines;
        the warm start of ``train_features`` is marked to be reattached to it on loading."""
        state: dict[str, Any] = {
            "evaluations": self.evaluations, "forced_exact": self.forced_exact, "switches": self.switches,
            "totals": self.totals, "fwd_factors": self.fwd_factors, "bwd_factors": self.bwd_factors,
            "last_report": self.last_report, "warm_sizes": [], "train_size": -1, "g0": self.g0,
            "g_last": self.g_last, "cycles_logged": self.cycles_logged, "eta": self.eta}
        for s, solver in self._solvers.items():
            if self.device != "cpu" or not solver.started:
                continue
            state[f"warm_forward_{s}"], state[f"warm_adjoint_{s}"] = solver.warm_start_state()
            state["warm_sizes"].append(int(s))
            if train_features is not None and self._data_of.get(s) == id(train_features):
                state["train_size"] = int(s)
        return state

    def load_state_dict(self, state: dict[str, Any], train_features: Optional[np.ndarray] = None) -> None:
        self.evaluations = int(state["evaluations"])
        self.forced_exact = int(state["forced_exact"])
        self.switches = list(state["switches"])
        self.totals = dict(state["totals"])
        self.fwd_factors = [float(x) for x in state["fwd_factors"]]
        self.bwd_factors = [float(x) for x in state["bwd_factors"]]
        self.last_report = dict(state["last_report"])
        self.g0, self.g_last = state["g0"], state["g_last"]
        self.eta = float(state["eta"])
        self.cycles_logged = int(state["cycles_logged"])
        for s in state["warm_sizes"]:
            self._engine(int(s)).load_warm_start_state(state[f"warm_forward_{s}"], state[f"warm_adjoint_{s}"])
            if int(s) == state["train_size"] and train_features is not None:
                self._data_of[int(s)] = id(train_features)

    def tolerances(self) -> tuple[float, float]:
        """The adaptive mode's relative residual bounds (forward, adjoint) for the next
        evaluation, from gamma = |g| / |g_0| (the latest and the first gradient norm):
        the adjoint to eta * gamma, so that the gradient's error stays small relative to
        the gradient; the forward to eta * gamma^2, so that the objective's error stays
        small relative to the decrease a step of that gradient can make (|g|^2), which
        the line search compares. Never below tol, never above eta."""
        eta = self.eta
        if not self.g0 or self.g_last is None or not np.isfinite(self.g_last):
            return eta, eta
        gamma = min(1.0, self.g_last / self.g0)
        return max(self.mgrit.tol, eta * gamma * gamma), max(self.mgrit.tol, eta * gamma)

    def observe_gradient(self, norm: float) -> None:
        """The gradient norm of the latest evaluation (all processes: the same value)."""
        if self.g0 is None and np.isfinite(norm) and norm > 0:
            self.g0 = float(norm)
        self.g_last = float(norm)

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray,
                 regularized: bool = True) -> Evaluation:
        r = self.model.regularization if regularized else Regularization()
        exact = self.exact
        solver = self._solver(features)
        fwd, bwd = (-1, -1) if exact else (self.fwd_budget, self.bwd_budget)
        if self.adaptive:  # exact (safeguard) and adaptive solves both run to a tolerance
            solver.set_relative_tolerances(*((self.mgrit.tol, self.mgrit.tol) if exact else self.tolerances()))
            solver.set_cycle_limit(self.mgrit.max_iter if exact else self.mgrit.adaptive_max_cycles)
            fwd, bwd = -1, -1
        d = solver.evaluate(theta, features, labels, r.tikhonov, r.classifier, r.ddt, fwd, bwd, True)
        self.evaluations += 1
        t = self.totals
        t["evaluations"] += 1
        t["fwd_cycles"] += d["forward"]["cycles"]
        t["bwd_cycles"] += d["adjoint"]["cycles"]
        t["fwd_steps"] += d["forward"]["steps"]
        t["bwd_steps"] += d["adjoint"]["steps"]
        self.last_report = {"forward": d["forward"], "adjoint": d["adjoint"], "exact": exact}
        ev = Evaluation(objective=d["objective"], loss=d["loss"], regularization=d["regularization"],
                        accuracy=d["accuracy"], correct=int(d["correct"]), examples=int(d["examples"]),
                        gradient=d["gradient"], mgrit=self.report())
        self.remember(ev, theta, features)
        return ev

    def report(self) -> Optional[dict[str, Any]]:
        """The last evaluation's forward and adjoint solves (cycles, steps, residuals,
        converged, ...) and whether they were exact."""
        return dict(self.last_report) if self.last_report else None

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
        cycles = self.totals["fwd_cycles"] + self.totals["bwd_cycles"]
        since, self.cycles_logged = cycles - self.cycles_logged, cycles
        return {"fwd_residual": fr[-1] if fr else float("nan"), "bwd_residual": br[-1] if br else float("nan"),
                "fwd_factor": self._factor(fr), "bwd_factor": self._factor(br),
                "fwd_cycles": rep["forward"]["cycles"], "bwd_cycles": rep["adjoint"]["cycles"],
                "exact": 1 if rep["exact"] else 0, "cycles": since}

    def monitor(self) -> Optional[str]:
        """Why the last (inexact) evaluation needs the safeguard, or None."""
        rep = self.last_report
        if not rep or rep["exact"] or self.mode != "simultaneous":
            return None
        limit = self.mgrit.safeguard_factor
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
        """Solve exactly for the next ``safeguard_iterations`` iterations and log the switch.
        In the adaptive mode: solve exactly for this iteration only (the line search's
        retry) and halve eta for the rest of the run, so the tolerances learn how
        accurate this problem needs its solves."""
        if self.adaptive:
            self.forced_exact = 1
            self.eta = max(self.eta / 2, self.mgrit.tol)
            action = f"exact solves for 1 iteration, eta {self.eta:.3g}"
        else:
            self.forced_exact = self.mgrit.safeguard_iterations
            action = f"exact solves for {self.forced_exact} iterations"
        self.switches.append({"iteration": iteration, "reason": reason, "action": action})

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
    """The serial mode when the layers are split over processes or live on a device:
    exact forward and adjoint sweeps passed from process to process (the engine on one level)."""

    def __init__(self, model: Network, mgrit: Any, threads: int, comm: Any, device: str = "cpu"):
        super().__init__(model, mgrit, "exact", threads, comm=comm, device=device)
        self.mode = "serial"
        self.options["max_levels"] = 1

    exact = True  # type: ignore[assignment]
    guarded = False  # type: ignore[assignment]
    columns = HISTORY_COLUMNS

    def report(self) -> Optional[dict[str, Any]]:
        return None

    def row_extra(self) -> dict[str, float]:
        return {}

    def monitor(self) -> Optional[str]:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


def _model_kind(model: Network) -> tuple[str, str]:
    return ("conv" if isinstance(model, ConvResNet) else "dense"), str(model.opening)


def sweep_solver(model: Network, mode: str = "serial", mgrit: Any = None, device: str = "cpu", comm: Any = None,
                 threads: int = 0) -> SerialSolver:
    """The sweep solver of ``mode`` on ``device``; ``comm`` (an engine communicator,
    :func:`layerparallel.comm.core_comm`) splits the layers."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of 'serial', 'exact', 'simultaneous', got {mode!r}")
    device = check_device(device, *_model_kind(model))
    mgrit = MgritOptions.coerce(mgrit)
    if mode == "serial":
        if comm is None and device == "cpu":
            return SerialSolver(model)
        return PipelineSolver(model, mgrit, threads, comm, device)
    return MgritSolver(model, mgrit, mode, threads, comm=comm, device=device)


class Solver(LayerParallelSolver):
    """Objective, loss, accuracy, gradient and MGRIT statistics of ``model`` in one call.

    ``mode``: ``"serial"`` (backpropagation), ``"exact"`` (MGRIT solved to
    ``mgrit.tol``) or ``"simultaneous"`` (the one-shot method: ``mgrit.fwd_iterations``
    and ``mgrit.bwd_iterations`` warm-started cycles per call). ``mgrit``: an
    :class:`MgritOptions` (or a dict of its fields; None = the defaults).
    ``device``: ``"cpu"``, ``"cuda"`` or ``"emulator"`` (the CUDA kernels on the
    CPU). ``grid``: a :class:`ProcessGrid` splitting the layers and the examples over
    processes (None: this process alone; every process of the grid must make the
    same calls). ``threads``: MGRIT's interval threads when ``mgrit.threads`` is 0.

    ``solver(theta, X, y)`` returns an :class:`Evaluation` whose ``mgrit`` holds the
    forward and adjoint solves' statistics in the MGRIT modes (None in serial mode).
    ``theta`` holds the parameters this process owns: all of ``model.theta`` on one
    process, ``solver.local(model.theta)`` when the layers are split (the gradient is
    then this process's share too). ``X`` is ``(s, n_features)`` (image batches are
    flattened; pass the same array object again to keep the simultaneous mode's warm
    start), ``y`` the ``(s,)`` class indices. :meth:`summary` gives the totals.
    """

    def __init__(self, model: Network, mode: str = "serial", mgrit: Any = None, device: str = "cpu",
                 grid: Optional[ProcessGrid] = None, threads: int = 0):
        if not isinstance(model, Network):
            raise ValueError(f"model must be a ResNet or ConvResNet, got {type(model).__name__}")
        if grid is not None and not isinstance(grid, ProcessGrid):
            raise ValueError(f"grid must be a ProcessGrid or None, got {type(grid).__name__}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0 = mgrit.threads or the engine's default), "
                             f"got {threads!r}")
        mgrit = MgritOptions.coerce(mgrit)
        comm = core_comm(grid.layer_comm) if grid is not None and grid.layer_procs > 1 else None
        super().__init__(sweep_solver(model, mode, mgrit, device, comm, int(threads)), grid, comm)
        self.mode = mode
        self.mgrit = mgrit
        self.device = self.inner.device if isinstance(self.inner, MgritSolver) else "cpu"
        self._input: tuple[Any, np.ndarray] | None = None

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> Evaluation:
        if self._input is None or self._input[0] is not features:
            self._input = (features, as_matrix(features))  # the same rows object for the same input
        return super().__call__(theta, self._input[1], labels)

    def local(self, theta: np.ndarray) -> np.ndarray:
        """The entries of a full parameter vector that this process owns (all on one process)."""
        return self.shard.local(theta)

    def gather(self, local: np.ndarray) -> np.ndarray:
        """The full parameter vector from every layer process's owned entries."""
        return self.shard.gather(local)

    def __repr__(self) -> str:
        procs = f", grid={self.grid.layer_procs}x{self.grid.data_procs}" if self.grid is not None else ""
        return f"Solver({type(self.model).__name__}, mode={self.mode!r}, device={self.device!r}{procs})"
