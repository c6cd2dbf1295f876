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
* :class:`Adam` -- bias-corrected Adam on mini-batch gradients; see
  :func:`minibatches`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

__all__ = [
    "StepResult",
    "LBFGS",
    "GradientDescent",
    "Adam",
    "minibatches",
    "make_optimizer",
    "default_dot",
]

Fun = Callable[[np.ndarray], Tuple[float, np.ndarray]]
Dot = Callable[[np.ndarray, np.ndarray], float]


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


class Adam:
    """Adam (Kingma & Ba) with bias-corrected moments.

    ``step(fun, x, f=None, g=None)`` takes one step from the gradient ``g``
    of the current mini-batch (``fun(x)`` is called, and counted in
    ``trials``, only if ``g`` is not given).  The returned ``f`` and ``g``
    are the mini-batch value and gradient *at the input* ``x`` that the step
    was computed from -- Adam does not evaluate the new point (the next
    iteration uses a different mini-batch anyway).  ``step`` is the
    learning rate; ``accepted`` is always True.  Choosing the mini-batch is
    the caller's job (see :func:`minibatches`).  Adam is element-wise and
    needs no inner products.
    """

    def __init__(self, learning_rate: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
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
        self.reset()

    def reset(self) -> None:
        """Zero the moments and the step counter."""
        self.t = 0
        self.m: Optional[np.ndarray] = None
        self.v: Optional[np.ndarray] = None

    def step(self, fun: Optional[Fun], x: np.ndarray, f: Optional[float] = None,
             g: Optional[np.ndarray] = None) -> StepResult:
        x = _as_vec(x)
        evals = 0
        if g is None:
            if fun is None:
                raise ValueError("Adam.step needs g or fun")
            f, g = _evaluate(fun, x)
            evals = 1
        g = _as_vec(g)
        if self.m is None or self.m.shape != x.shape:
            self.m = np.zeros_like(x)
            self.v = np.zeros_like(x)
            self.t = 0
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m = b1 * self.m + (1.0 - b1) * g
        self.v = b2 * self.v + (1.0 - b2) * (g * g)
        m_hat = self.m / (1.0 - b1 ** self.t)
        v_hat = self.v / (1.0 - b2 ** self.t)
        x_new = x - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)
        return StepResult(x_new, None if f is None else float(f), g,
                          self.learning_rate, evals, True)


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


def make_optimizer(opt_cfg: Any, dot: Optional[Dot] = None):
    """Build an optimiser from the ``[optimizer]`` config section (attribute
    access or a dict).  Keys: ``name`` in {lbfgs, gd, adam}, ``memory``,
    ``c1``, ``shrink``, ``max_trials``, ``learning_rate``, ``beta1``,
    ``beta2``, ``eps`` (and ``line_search`` for gd).  Missing keys take the
    class defaults.  ``dot`` is passed to LBFGS and GD (Adam needs none)."""
    name = str(_cfg_get(opt_cfg, "name", "lbfgs")).lower()
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
                    eps=float(_cfg_get(opt_cfg, "eps", 1e-8)))
    raise ValueError(f"unknown optimizer {name!r} (expected lbfgs, gd or adam)")
