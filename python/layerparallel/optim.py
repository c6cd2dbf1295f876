"""Optimisers with a step-wise API.

The training loop owns the iteration: it calls ``opt.step(fun, x, f, g)``
once per iteration and gets a :class:`StepResult` back, which makes logging,
monitoring (e.g. the MGRIT convergence factor in one-shot mode) and
fall-backs easy.  ``fun(x) -> (f, g)`` returns the objective value and its
gradient (float64) at ``x``.

Distributed training: parameters may be split over processes.  Every inner
product and every norm the optimisers compute goes through the ``dot``
callable (default ``float(np.dot(a, b))``); a distributed run passes a
``dot`` that all-reduces the local partial sums.  Element-wise operations
(axpy, Adam's moments) need no communication.

Optimisers
----------
* :class:`LBFGS` -- the paper's method: L-BFGS two-loop recursion with
  memory ``m``, initial Hessian ``gamma I`` with ``gamma = s^T y / y^T y`` of
  the newest pair, curvature safeguard, Armijo backtracking (first trial step
  1, factor ``shrink``, at most ``max_trials`` evaluations).
* :class:`GradientDescent` -- steepest descent with Armijo backtracking from
  ``learning_rate`` (or a fixed step).
* :class:`Adam` -- bias-corrected Adam on mini-batch gradients (see
  :func:`minibatches`), with decoupled (AdamW) or L2 weight decay.
* :class:`SGD` -- stochastic gradient descent with (Nesterov) momentum and
  L2 weight decay, PyTorch's ``torch.optim.SGD`` semantics.

Learning-rate schedules (:func:`make_schedule`, :class:`Schedule`): constant,
step and cosine, each with an optional linear warm-up; SGD and Adam take one
as ``schedule`` and use ``learning_rate * schedule(t)`` at their step ``t``.

``opt.evaluates_new_point`` says whether a step returns ``f`` and ``g`` at the
new point (LBFGS, GradientDescent) or at the input point (Adam, SGD).

Checkpoints: every optimiser has ``state_dict()`` (a dict of arrays and
numbers only, ready for ``np.savez``) and ``load_state_dict(d)``; a fresh
optimiser with the same settings that loads the state continues bit for bit.
"""
from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = [
    "StepResult",
    "LBFGS",
    "GradientDescent",
    "Adam",
    "SGD",
    "Schedule",
    "make_schedule",
    "minibatches",
    "make_optimizer",
    "default_dot",
]

Fun = Callable[[np.ndarray], Tuple[float, np.ndarray]]
Dot = Callable[[np.ndarray, np.ndarray], float]
#: An optimiser's state for checkpoints: arrays and numbers only.
State = Dict[str, Union[np.ndarray, float, int]]


def default_dot(a: np.ndarray, b: np.ndarray) -> float:
    """Serial inner product ``float(np.dot(a, b))``."""
    return float(np.dot(a, b))


@dataclass
class StepResult:
    """Outcome of one optimiser step.

    x        : the new iterate (the input ``x`` itself, unmodified, when the
               step was rejected).
    f, g     : objective value and gradient at ``x`` (see :class:`Adam` for
               its mini-batch convention).
    step     : accepted step length along the search direction (0 when
               rejected).
    trials   : number of ``fun`` evaluations used by this step.
    accepted : whether the step was accepted (False = line-search failure).
    """

    x: np.ndarray
    f: Optional[float]
    g: Optional[np.ndarray]
    step: float
    trials: int
    accepted: bool


def _as_vec(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("optimisers work on flat 1-D parameter vectors")
    return x


def _evaluate(fun: Fun, x: np.ndarray) -> Tuple[float, np.ndarray]:
    f, g = fun(x)
    return float(f), np.asarray(g, dtype=np.float64)


def _armijo(fun: Fun, dot: Dot, x: np.ndarray, f: float, g: np.ndarray,
            d: np.ndarray, a0: float, c1: float, shrink: float,
            max_trials: int):
    """Backtracking line search along ``d``: try ``a = a0, a0*shrink, ...``
    and accept the first ``a`` with ``f(x + a d) <= f + c1 a g^T d``.

    Returns ``(x_new, f_new, g_new, a, trials, accepted)``; on failure
    ``x_new, f_new, g_new`` are the inputs and ``a = 0``.  Non-finite trial
    values count as failures of the Armijo test.
    """
    gtd = dot(g, d)
    a = a0
    for trial in range(1, max_trials + 1):
        x_new = x + a * d
        f_new, g_new = _evaluate(fun, x_new)
        if math.isfinite(f_new) and f_new <= f + c1 * a * gtd:
            return x_new, f_new, g_new, a, trial, True
        a *= shrink
    return x, f, g, 0.0, max_trials, False


def _count_arg(name: str, value: Any, lo: int) -> int:
    """``value`` as an int ``>= lo`` (bools and non-integers rejected)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _real_arg(name: str, value: Any, ok: Callable[[float], bool], what: str) -> float:
    """``value`` as a finite float with ``ok(value)`` (``what`` says the range)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number {what}, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be a number {what}, got {value!r}")
    return value


def _check_keys(owner: str, d: Mapping[str, Any], required: Tuple[str, ...],
                optional: Tuple[str, ...] = ()) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{owner}.load_state_dict needs a dict, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in required and k not in optional]
    if missing or unknown:
        raise ValueError(f"{owner} state: missing keys {missing}, unknown keys {unknown}")


def _state_array(owner: str, d: Mapping[str, Any], key: str, ndim: int) -> np.ndarray:
    """A float64 copy of ``d[key]``, which must have ``ndim`` dimensions."""
    a = np.array(d[key], dtype=np.float64, copy=True)
    if a.ndim != ndim:
        raise ValueError(f"{owner} state: {key} must be {ndim}-D, got shape {a.shape}")
    return a


def _learning_rate(learning_rate: float, schedule: Optional[Callable[[int], float]],
                   t: int) -> float:
    """``learning_rate * schedule(t)`` (``learning_rate`` without a schedule)."""
    if schedule is None:
        return learning_rate
    factor = schedule(t)
    if not (math.isfinite(factor) and factor >= 0.0):
        raise ValueError(f"schedule({t}) = {factor!r}: a learning-rate factor must be finite and >= 0")
    return learning_rate * float(factor)


# ----------------------------------------------------------------------------
# learning-rate schedules
# ----------------------------------------------------------------------------
SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Learning-rate multiplier: ``schedule(t)`` is the factor of the base
    learning rate at step ``t`` (0-based: the number of steps taken so far).

    * ``constant``: 1.
    * ``step``: ``gamma ** (t // step_size)`` (``torch.optim.lr_scheduler.StepLR``).
    * ``cosine``: ``min_factor + (1 - min_factor) (1 + cos(pi t / T)) / 2`` for
      ``t <= T``, ``min_factor`` after (``CosineAnnealingLR`` with
      ``eta_min = min_factor * lr`` and ``T_max = T``, which instead climbs
      back up after ``T``).  ``T = total_steps - warmup_steps``: the warm-up
      and the annealing together last ``total_steps`` steps.
    * Warm-up (``warmup_steps = w > 0``, with any of them): factor
      ``(t + 1) / w`` for ``t < w``, then the schedule above at ``t - w``
      (``LinearLR(start_factor=1/w, total_iters=w-1)`` followed by it, as
      ``SequentialLR`` with milestone ``w``).

    Arguments are validated (``ValueError`` naming the argument) where the
    schedule uses them: ``step_size >= 1`` for step, ``0 < gamma <= 1``;
    ``total_steps > warmup_steps`` and ``0 <= min_factor <= 1`` for cosine.
    """

    name: str = "constant"
    total_steps: Optional[int] = None
    warmup_steps: int = 0
    step_size: Optional[int] = None
    gamma: float = 0.1
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        put = object.__setattr__
        name = str(self.name).lower()
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.name!r}")
        put(self, "name", name)
        put(self, "warmup_steps", _count_arg("warmup_steps", self.warmup_steps, 0))
        if name == "step":
            if self.step_size is None:
                raise ValueError("step_size is required by the step schedule (an integer >= 1)")
            put(self, "step_size", _count_arg("step_size", self.step_size, 1))
            put(self, "gamma", _real_arg("gamma", self.gamma, lambda v: 0.0 < v <= 1.0, "in (0, 1]"))
        if name == "cosine":
            if self.total_steps is None:
                raise ValueError("total_steps is required by the cosine schedule")
            total = _count_arg("total_steps", self.total_steps, 1)
            if total <= self.warmup_steps:
                raise ValueError(f"total_steps ({total}) must exceed warmup_steps ({self.warmup_steps}) "
                                 f"for the cosine schedule")
            put(self, "total_steps", total)
            put(self, "min_factor", _real_arg("min_factor", self.min_factor,
                                              lambda v: 0.0 <= v <= 1.0, "in [0, 1]"))

    def __call__(self, t: int) -> float:
        t = _count_arg("t", t, 0)
        w = self.warmup_steps
        if t < w:
            return (t + 1) / w
        t -= w
        if self.name == "step":
            assert self.step_size is not None
            return self.gamma ** (t // self.step_size)
        if self.name == "cosine":
            assert self.total_steps is not None
            T = self.total_steps - w
            if t >= T:
                return self.min_factor
            return self.min_factor + (1.0 - self.min_factor) * (1.0 + math.cos(math.pi * t / T)) / 2.0
        return 1.0


def make_schedule(name: str = "constant", *, total_steps: Optional[int] = None,
                  warmup_steps: int = 0, step_size: Optional[int] = None,
                  gamma: float = 0.1, min_factor: float = 0.0) -> Schedule:
    """The learning-rate multiplier ``t -> factor`` named ``name`` (constant,
    step or cosine) with an optional linear warm-up; see :class:`Schedule`."""
    return Schedule(name=name, total_steps=total_steps, warmup_steps=warmup_steps,
                    step_size=step_size, gamma=gamma, min_factor=min_factor)


class LBFGS:
    """Limited-memory BFGS with Armijo backtracking (the paper's optimiser).

    Parameters
    ----------
    memory     : number of stored (s, y) pairs (paper: 10-20).
    c1         : Armijo sufficient-decrease constant.
    shrink     : backtracking factor.
    max_trials : maximal number of function evaluations per line search.
    dot        : inner product (the all-reduce seam).  Every inner product and
                 norm goes through it.

    Algorithm per :meth:`step`:

    * Direction ``d = -H g`` by the two-loop recursion over the stored pairs
      with initial Hessian ``gamma I``, ``gamma = s^T y / y^T y`` of the
      newest pair.  Without pairs (first iteration, after a reset):
      steepest descent ``d = -g``.
    * If ``g^T d >= 0`` (not a descent direction, e.g. after round-off) the
      memory is reset and ``d = -g``.
    * Armijo backtracking with first trial step 1 along ``d``.
      **First-step choice**: when ``d = -g`` (no curvature information) the
      first trial step is ``min(1, 1/|g|)``, i.e. exactly the paper's step 1
      whenever ``|g| <= 1`` (the usual case for small initialisations, e.g.
      Peaks), and a unit-length first step otherwise, so that huge gradients
      do not waste the whole backtracking budget.  With curvature pairs the
      first trial is always 1.
    * After an accepted step the pair ``s = x_new - x``, ``y = g_new - g`` is
      stored unless ``s^T y <= 1e-10 |s| |y|`` (curvature safeguard; the
      pair is skipped, the memory kept).
    * If no trial is accepted the step is rejected: ``accepted=False``, ``x``
      returned unchanged, memory reset (the next call tries steepest descent;
      a second failure in a row means the caller should stop or change
      something).
    * An exactly zero gradient returns ``accepted=False``, ``trials=0`` and
      ``x`` unchanged (nothing to do; the caller's gradient-norm test
      should have stopped first).
    """

    #: a step returns ``f`` and ``g`` at the new point
    evaluates_new_point = True

    def __init__(self, memory: int = 10, c1: float = 1e-4, shrink: float = 0.5,
                 max_trials: int = 20, dot: Optional[Dot] = None):
        if int(memory) < 1:
            raise ValueError("memory must be >= 1")
        if not (0.0 < c1 < 1.0):
            raise ValueError("c1 must lie in (0, 1)")
        if not (0.0 < shrink < 1.0):
            raise ValueError("shrink must lie in (0, 1)")
        if int(max_trials) < 1:
            raise ValueError("max_trials must be >= 1")
        self.memory = int(memory)
        self.c1 = float(c1)
        self.shrink = float(shrink)
        self.max_trials = int(max_trials)
        self.dot: Dot = dot if dot is not None else default_dot
        self.curvature_eps = 1e-10
        # pairs (s, y, rho = 1 / s^T y), oldest first
        self._pairs: deque = deque(maxlen=self.memory)
        self.skipped_pairs = 0   # pairs rejected by the curvature safeguard
        self.resets = 0          # memory resets (non-descent or failed search)

    # -- state -------------------------------------------------------------
    def reset(self) -> None:
        """Forget all curvature pairs (next step is steepest descent)."""
        self._pairs.clear()

    @property
    def n_pairs(self) -> int:
        """Number of stored curvature pairs."""
        return len(self._pairs)

    def state_dict(self) -> State:
        """The curvature pairs, oldest first, as stacked arrays ``s``, ``y``
        (``k x n``; ``0 x 0`` without pairs) and ``rho`` (``k``), and the
        counters ``skipped_pairs`` and ``resets``."""
        if self._pairs:
            s = np.stack([p[0] for p in self._pairs])
            y = np.stack([p[1] for p in self._pairs])
        else:
            s = y = np.zeros((0, 0))
        rho = np.array([p[2] for p in self._pairs], dtype=np.float64)
        return {"s": s, "y": y, "rho": rho, "skipped_pairs": self.skipped_pairs,
                "resets": self.resets}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (at most ``memory`` pairs; ``s`` and
        ``y`` of equal shape, ``rho`` one positive entry per pair)."""
        _check_keys("LBFGS", d, ("s", "y", "rho", "skipped_pairs", "resets"))
        s = _state_array("LBFGS", d, "s", 2)
        y = _state_array("LBFGS", d, "y", 2)
        rho = _state_array("LBFGS", d, "rho", 1)
        k = rho.shape[0]
        if s.shape != y.shape or s.shape[0] != k:
            raise ValueError(f"LBFGS state: s {s.shape}, y {y.shape} and rho {rho.shape} "
                             f"must hold the same number of pairs of equal length")
        if k > self.memory:
            raise ValueError(f"LBFGS state holds {k} pairs, more than memory={self.memory}")
        if not all(r > 0.0 and math.isfinite(r) for r in rho):
            raise ValueError("LBFGS state: rho must be finite and positive")
        skipped = _count_arg("skipped_pairs", d["skipped_pairs"], 0)
        resets = _count_arg("resets", d["resets"], 0)
        self._pairs.clear()
        for i in range(k):
            self._pairs.append((s[i].copy(), y[i].copy(), float(rho[i])))
        self.skipped_pairs = skipped
        self.resets = resets

    # -- algorithm ---------------------------------------------------------
    def direction(self, g: np.ndarray) -> np.ndarray:
        """``-H g`` by the two-loop recursion (``-g`` without pairs)."""
        dot = self.dot
        if not self._pairs:
            return -g
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self._pairs):       # newest -> oldest
            alpha = rho * dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        s, y, rho = self._pairs[-1]
        gamma = (1.0 / rho) / dot(y, y)                # s^T y / y^T y
        r = gamma * q
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas)):  # oldest -> newest
            beta = rho * dot(y, r)
            r += (alpha - beta) * s
        return -r

    def step(self, fun: Fun, x: np.ndarray, f: Optional[float] = None,
             g: Optional[np.ndarray] = None) -> StepResult:
        """One L-BFGS iteration from ``x`` with value ``f`` and gradient ``g``
        (evaluated here, and counted in ``trials``, if not given)."""
        dot = self.dot
        x = _as_vec(x)
        evals = 0
        if f is None or g is None:
            f, g = _evaluate(fun, x)
            evals += 1
        f = float(f)
        g = _as_vec(g)
        if self._pairs and self._pairs[0][0].shape != x.shape:
            raise ValueError(f"LBFGS holds pairs of length {self._pairs[0][0].shape[0]} but x has "
                             f"{x.shape[0]} entries (reset() or load a matching state)")

        d = self.direction(g)
        gtd = dot(g, d)
        if not (gtd < 0.0 and math.isfinite(gtd)):
            if self._pairs:
                self.resets += 1
            self.reset()
            d = -g
            gtd = dot(g, d)
        if gtd == 0.0:  # zero gradient: nothing to do
            return StepResult(x, f, g, 0.0, evals, False)

        if self._pairs:
            a0 = 1.0
        else:
            a0 = min(1.0, 1.0 / math.sqrt(-gtd))  # -g^T d = |g|^2 here
        x_new, f_new, g_new, a, trials, ok = _armijo(
            fun, dot, x, f, g, d, a0, self.c1, self.shrink, self.max_trials)
        evals += trials
        if not ok:
            self.resets += 1
            self.reset()
            return StepResult(x, f, g, 0.0, evals, False)

        s = x_new - x
        y = g_new - g
        sy = dot(s, y)
        if sy > self.curvature_eps * math.sqrt(dot(s, s)) * math.sqrt(dot(y, y)):
            self._pairs.append((s, y, 1.0 / sy))
        else:
            self.skipped_pairs += 1
        return StepResult(x_new, f_new, g_new, a, evals, True)


class GradientDescent:
    """Steepest descent ``x - a g``.

    With ``line_search=True`` the step ``a`` comes from Armijo backtracking
    starting at ``learning_rate`` (factor ``shrink``, at most ``max_trials``
    evaluations, sufficient-decrease constant ``c1``); a failed search returns
    ``accepted=False`` and ``x`` unchanged.  With ``line_search=False`` the
    fixed step ``learning_rate`` is always taken (one evaluation).
    """

    #: a step returns ``f`` and ``g`` at the new point
    evaluates_new_point = True

    def __init__(self, learning_rate: float = 1.0, c1: float = 1e-4,
                 shrink: float = 0.5, max_trials: int = 20,
                 line_search: bool = True, dot: Optional[Dot] = None):
        if not learning_rate > 0:
            raise ValueError("learning_rate must be > 0")
        if not (0.0 < c1 < 1.0):
            raise ValueError("c1 must lie in (0, 1)")
        if not (0.0 < shrink < 1.0):
            raise ValueError("shrink must lie in (0, 1)")
        if int(max_trials) < 1:
            raise ValueError("max_trials must be >= 1")
        self.learning_rate = float(learning_rate)
        self.c1 = float(c1)
        self.shrink = float(shrink)
        self.max_trials = int(max_trials)
        self.line_search = bool(line_search)
        self.dot: Dot = dot if dot is not None else default_dot

    def reset(self) -> None:
        """Stateless; provided for a uniform interface."""

    def state_dict(self) -> State:
        """Stateless: ``{}`` (for a uniform interface)."""
        return {}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Accepts only the empty state of :meth:`state_dict`."""
        _check_keys("GradientDescent", d, ())

    def step(self, fun: Fun, x: np.ndarray, f: Optional[float] = None,
             g: Optional[np.ndarray] = None) -> StepResult:
        x = _as_vec(x)
        evals = 0
        if f is None or g is None:
            f, g = _evaluate(fun, x)
            evals += 1
        f = float(f)
        g = _as_vec(g)
        if not self.line_search:
            x_new = x - self.learning_rate * g
            f_new, g_new = _evaluate(fun, x_new)
            return StepResult(x_new, f_new, g_new, self.learning_rate, evals + 1, True)
        d = -g
        if self.dot(g, g) == 0.0:
            return StepResult(x, f, g, 0.0, evals, False)
        x_new, f_new, g_new, a, trials, ok = _armijo(
            fun, self.dot, x, f, g, d, self.learning_rate, self.c1, self.shrink,
            self.max_trials)
        return StepResult(x_new, f_new, g_new, a, evals + trials, ok)


class _ElementWise:
    """What SGD and Adam share: the step counter ``t``, the learning-rate
    schedule and the parameter shape their state belongs to.

    A step from an ``x`` of another shape than the state's starts afresh
    (:meth:`reset`), except after :meth:`load_state_dict`, where it raises
    ``ValueError`` (a checkpoint for other parameters)."""

    #: a step returns ``f`` and ``g`` at the input point, not at the new one
    evaluates_new_point = False
    learning_rate: float
    schedule: Optional[Callable[[int], float]]
    t: int
    _shape: Optional[Tuple[int, ...]]
    _loaded: bool

    def reset(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def current_learning_rate(self) -> float:
        """The learning rate of the next step: ``learning_rate * schedule(t)``."""
        return _learning_rate(self.learning_rate, self.schedule, self.t)

    def _begin(self, owner: str, fun: Optional[Fun], x: np.ndarray, f: Optional[float],
               g: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[float], np.ndarray, int]:
        """Validated ``x, f, g`` and the evaluations used (``fun`` is called
        only without ``g``); resets or raises on a change of shape."""
        x = _as_vec(x)
        evals = 0
        if g is None:
            if fun is None:
                raise ValueError(f"{owner}.step needs g or fun")
            f, g = _evaluate(fun, x)
            evals = 1
        g = _as_vec(g)
        if g.shape != x.shape:
            raise ValueError(f"g has shape {g.shape}, x {x.shape}")
        if self._shape is not None and self._shape != x.shape:
            if self._loaded:
                raise ValueError(f"{owner} state was loaded for {self._shape[0]} parameters, "
                                 f"x has {x.shape[0]} (reset() or load a matching state)")
            self.reset()
        self._shape = x.shape
        return x, None if f is None else float(f), g, evals


def _check_schedule(schedule: Any) -> Optional[Callable[[int], float]]:
    if schedule is not None and not callable(schedule):
        raise ValueError(f"schedule must be callable as schedule(t) -> factor or None, "
                         f"got {type(schedule).__name__}")
    return schedule


class Adam(_ElementWise):
    """Adam (Kingma & Ba) with bias-corrected moments, optional weight decay
    and learning-rate schedule.

    ``step(fun, x, f=None, g=None)`` takes one step from the gradient ``g``
    of the current mini-batch (``fun(x)`` is called, and counted in
    ``trials``, only if ``g`` is not given).  The returned ``f`` and ``g``
    are the mini-batch value and gradient *at the input* ``x`` that the step
    was computed from (without the weight-decay term) -- Adam does not
    evaluate the new point (the next iteration uses a different mini-batch
    anyway).  ``step`` is the learning rate used; ``accepted`` is always
    True.  Choosing the mini-batch is the caller's job (see
    :func:`minibatches`).  Adam is element-wise and needs no inner products.

    Step ``t`` (0-based; ``t`` steps taken so far, :attr:`t` afterwards
    ``t + 1``) with ``lr_t = learning_rate * schedule(t)``::

        g   <- g + weight_decay x            (decoupled=False only: L2, torch.optim.Adam)
        m   <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2
        x   <- x - lr_t weight_decay x       (decoupled=True only: AdamW, Loshchilov & Hutter)
        x   <- x - lr_t m / (1 - beta1^(t+1)) / (sqrt(v / (1 - beta2^(t+1))) + eps)

    as ``torch.optim.Adam`` / ``torch.optim.AdamW`` (no amsgrad).  With
    ``weight_decay=0`` and no schedule it is plain Adam.
    """

    def __init__(self, learning_rate: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = True, schedule: Optional[Callable[[int], float]] = None):
        if not learning_rate > 0:
            raise ValueError("learning_rate must be > 0")
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError("beta1 and beta2 must lie in [0, 1)")
        if not eps > 0:
            raise ValueError("eps must be > 0")
        self.learning_rate = float(learning_rate)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.weight_decay = _real_arg("weight_decay", weight_decay, lambda v: v >= 0.0, ">= 0")
        self.decoupled = bool(decoupled)
        self.schedule = _check_schedule(schedule)
        self.reset()

    def reset(self) -> None:
        """Zero the moments and the step counter."""
        self.t = 0
        self.m: Optional[np.ndarray] = None
        self.v: Optional[np.ndarray] = None
        self._shape = None
        self._loaded = False

    def state_dict(self) -> State:
        """``t`` and, once a step was taken, the moments ``m`` and ``v``."""
        d: State = {"t": self.t}
        if self.m is not None and self.v is not None:
            d["m"] = self.m.copy()
            d["v"] = self.v.copy()
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (``m`` and ``v`` 1-D of equal shape,
        present exactly when ``t >= 1``)."""
        _check_keys("Adam", d, ("t",), ("m", "v"))
        t = _count_arg("t", d["t"], 0)
        if ("m" in d) != ("v" in d):
            raise ValueError("Adam state: m and v go together")
        if "m" in d:
            m = _state_array("Adam", d, "m", 1)
            v = _state_array("Adam", d, "v", 1)
            if m.shape != v.shape:
                raise ValueError(f"Adam state: m {m.shape} and v {v.shape} differ in shape")
            if t < 1:
                raise ValueError("Adam state: moments need t >= 1")
        elif t != 0:
            raise ValueError("Adam state: t >= 1 needs the moments m and v")
        self.reset()
        if "m" in d:
            self.m, self.v, self._shape = m, v, m.shape
        self.t = t
        self._loaded = True

    def step(self, fun: Optional[Fun], x: np.ndarray, f: Optional[float] = None,
             g: Optional[np.ndarray] = None) -> StepResult:
        x, f, g, evals = self._begin("Adam", fun, x, f, g)
        lr = self.current_learning_rate
        if self.m is None or self.v is None:
            self.m = np.zeros_like(x)
            self.v = np.zeros_like(x)
        wd = self.weight_decay
        gw = g + wd * x if wd and not self.decoupled else g
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m = b1 * self.m + (1.0 - b1) * gw
        self.v = b2 * self.v + (1.0 - b2) * (gw * gw)
        m_hat = self.m / (1.0 - b1 ** self.t)
        v_hat = self.v / (1.0 - b2 ** self.t)
        x0 = x - (lr * wd) * x if wd and self.decoupled else x
        x_new = x0 - lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return StepResult(x_new, f, g, lr, evals, True)


class SGD(_ElementWise):
    """Stochastic gradient descent with momentum (optionally Nesterov's),
    L2 weight decay and a learning-rate schedule: ``torch.optim.SGD``'s
    semantics (``dampening=0``).

    Step ``t`` (0-based; :attr:`t` afterwards ``t + 1``) with
    ``lr_t = learning_rate * schedule(t)``::

        g   <- g + weight_decay x
        buf <- momentum buf + g          (buf = g on the first step)
        d   <- g + momentum buf          (nesterov)   or   buf   (otherwise)
        x   <- x - lr_t d

    ``momentum=0`` keeps no buffer (``d = g``).  Like :class:`Adam`, SGD does
    not evaluate the new point: the returned ``f`` and ``g`` are those at the
    input ``x`` (``g`` without the weight-decay term; ``fun`` is called, and
    counted in ``trials``, only without ``g``), ``step`` is ``lr_t`` and
    ``accepted`` is always True.  Element-wise: no inner products.

    Arguments: ``learning_rate > 0``, ``0 <= momentum < 1``,
    ``weight_decay >= 0``; ``nesterov`` needs ``momentum > 0``.
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: Optional[Callable[[int], float]] = None):
        self.learning_rate = _real_arg("learning_rate", learning_rate, lambda v: v > 0.0, "> 0")
        self.momentum = _real_arg("momentum", momentum, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        self.weight_decay = _real_arg("weight_decay", weight_decay, lambda v: v >= 0.0, ">= 0")
        self.schedule = _check_schedule(schedule)
        self.reset()

    def reset(self) -> None:
        """Forget the momentum buffer and zero the step counter."""
        self.t = 0
        self.buffer: Optional[np.ndarray] = None
        self._shape = None
        self._loaded = False

    def state_dict(self) -> State:
        """``t`` and, with momentum once a step was taken, ``momentum_buffer``."""
        d: State = {"t": self.t}
        if self.buffer is not None:
            d["momentum_buffer"] = self.buffer.copy()
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (``momentum_buffer`` 1-D, present
        exactly when ``momentum > 0`` and ``t >= 1``)."""
        _check_keys("SGD", d, ("t",), ("momentum_buffer",))
        t = _count_arg("t", d["t"], 0)
        buf = None
        if "momentum_buffer" in d:
            if self.momentum == 0.0:
                raise ValueError("SGD state has a momentum buffer but momentum=0")
            if t < 1:
                raise ValueError("SGD state: a momentum buffer needs t >= 1")
            buf = _state_array("SGD", d, "momentum_buffer", 1)
        elif self.momentum > 0.0 and t > 0:
            raise ValueError(f"SGD state: momentum={self.momentum} and t={t} need a momentum_buffer")
        self.reset()
        self.t = t
        if buf is not None:
            self.buffer, self._shape = buf, buf.shape
        self._loaded = True

    def step(self, fun: Optional[Fun], x: np.ndarray, f: Optional[float] = None,
             g: Optional[np.ndarray] = None) -> StepResult:
        x, f, g, evals = self._begin("SGD", fun, x, f, g)
        lr = self.current_learning_rate
        d = g + self.weight_decay * x if self.weight_decay else g
        mu = self.momentum
        if mu:
            self.buffer = d.copy() if self.buffer is None else mu * self.buffer + d
            d = d + mu * self.buffer if self.nesterov else self.buffer
        x_new = x - lr * d
        self.t += 1
        return StepResult(x_new, f, g, lr, evals, True)


def minibatches(n: int, batch_size: int, rng=None) -> Iterator[np.ndarray]:
    """Yield shuffled index arrays that together cover ``range(n)`` once (one
    epoch).  All batches have ``batch_size`` indices except possibly the last.
    ``rng`` is a ``numpy.random.Generator`` or a seed (``None``: fresh)."""
    n = int(n)
    batch_size = int(batch_size)
    if n < 0 or batch_size < 1:
        raise ValueError("need n >= 0 and batch_size >= 1")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


def _cfg_get(cfg: Any, key: str, default: Any) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        val = cfg.get(key, default)
    else:
        try:
            val = getattr(cfg, key)
        except (AttributeError, KeyError):
            val = default
    return default if val is None else val


def _schedule_from_config(opt_cfg: Any, total_steps: Optional[int]) -> Optional[Schedule]:
    """The ``[optimizer]`` schedule keys as a :class:`Schedule`; ``None`` for a
    constant learning rate without warm-up."""
    name = str(_cfg_get(opt_cfg, "schedule", "constant")).lower()
    warmup = _cfg_get(opt_cfg, "warmup_steps", 0)
    if name == "constant" and warmup == 0:
        return None
    step_size = _cfg_get(opt_cfg, "step_size", None)
    return make_schedule(name, total_steps=total_steps, warmup_steps=warmup,
                         step_size=None if step_size == 0 else step_size,
                         gamma=_cfg_get(opt_cfg, "gamma", 0.1),
                         min_factor=_cfg_get(opt_cfg, "min_lr_factor", 0.0))


def make_optimizer(opt_cfg: Any, dot: Optional[Dot] = None, total_steps: Optional[int] = None):
    """Build an optimiser from the ``[optimizer]`` config section (attribute
    access or a dict).  Missing keys take the class defaults.

    * ``name`` in {lbfgs, gd, adam, sgd}.
    * lbfgs: ``memory``, ``c1``, ``shrink``, ``max_trials``; gd:
      ``learning_rate``, ``c1``, ``shrink``, ``max_trials``, ``line_search``.
    * adam: ``learning_rate``, ``beta1``, ``beta2``, ``eps``,
      ``weight_decay``, ``decoupled``; sgd: ``learning_rate``, ``momentum``,
      ``nesterov``, ``weight_decay``.
    * adam and sgd, the learning-rate schedule (:func:`make_schedule`):
      ``schedule`` in {constant, step, cosine}, ``warmup_steps``,
      ``step_size`` (0 = unset), ``gamma``, ``min_lr_factor``; the cosine
      schedule lasts ``total_steps`` (the caller's iteration count).  A
      schedule other than constant without warm-up is an error for lbfgs
      and gd.

    ``dot`` is passed to LBFGS and GD (Adam and SGD need none)."""
    name = str(_cfg_get(opt_cfg, "name", "lbfgs")).lower()
    schedule = _schedule_from_config(opt_cfg, total_steps)
    if name in ("lbfgs", "l-bfgs", "l_bfgs", "gd", "gradient_descent") and schedule is not None:
        raise ValueError(f"a learning-rate schedule (schedule, warmup_steps) applies to sgd and adam, "
                         f"not to {name}")
    if name in ("lbfgs", "l-bfgs", "l_bfgs"):
        return LBFGS(memory=int(_cfg_get(opt_cfg, "memory", 10)),
                     c1=float(_cfg_get(opt_cfg, "c1", 1e-4)),
                     shrink=float(_cfg_get(opt_cfg, "shrink", 0.5)),
                     max_trials=int(_cfg_get(opt_cfg, "max_trials", 20)),
                     dot=dot)
    if name in ("gd", "gradient_descent"):
        return GradientDescent(learning_rate=float(_cfg_get(opt_cfg, "learning_rate", 1.0)),
                               c1=float(_cfg_get(opt_cfg, "c1", 1e-4)),
                               shrink=float(_cfg_get(opt_cfg, "shrink", 0.5)),
                               max_trials=int(_cfg_get(opt_cfg, "max_trials", 20)),
                               line_search=bool(_cfg_get(opt_cfg, "line_search", True)),
                               dot=dot)
    if name == "adam":
        return Adam(learning_rate=float(_cfg_get(opt_cfg, "learning_rate", 1e-3)),
                    beta1=float(_cfg_get(opt_cfg, "beta1", 0.9)),
                    beta2=float(_cfg_get(opt_cfg, "beta2", 0.999)),
                    eps=float(_cfg_get(opt_cfg, "eps", 1e-8)),
                    weight_decay=_cfg_get(opt_cfg, "weight_decay", 0.0),
                    decoupled=bool(_cfg_get(opt_cfg, "decoupled", True)),
                    schedule=schedule)
    if name == "sgd":
        return SGD(learning_rate=_cfg_get(opt_cfg, "learning_rate", 0.01),
                   momentum=_cfg_get(opt_cfg, "momentum", 0.0),
                   nesterov=_cfg_get(opt_cfg, "nesterov", False),
                   weight_decay=_cfg_get(opt_cfg, "weight_decay", 0.0),
                   schedule=schedule)
    raise ValueError(f"unknown optimizer {name!r} (expected lbfgs, gd, adam or sgd)")
