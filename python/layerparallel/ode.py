"""MGRIT for any ODE whose one-step map is a Python function.

The compiled engine that trains ResNets layer-parallel solves any forward
recurrence ``u_{i+1} = step(u_i, t_i, t_{i+1})``; this module hands it a Python
step function, the way XBraid and PyMGRIT users plug in their own problems::

    import numpy as np
    from layerparallel import ode

    def euler(u, t0, t1, level):           # u' = -u, forward Euler
        return u + (t1 - t0) * (-u)

    res = ode.solve(euler, [1.0], T=1.0, N=64, cfactor=4, tol=1e-10)
    res.states[-1], res.iterations, res.residuals

Tolerances have the meaning they have everywhere in layerparallel
(:mod:`layerparallel.options`): ``tol`` is relative to the initial value (stop at
``|residual| <= tol * |u0|``), ``atol`` is absolute, ``rtol`` is relative to the
first residual of the call; a solve stops at the first bound it meets.

The step function
    ``step(u, t0, t1, level) -> new state``: ``u`` is a fresh float64 array of
    shape ``(n,)`` (the function may keep or modify it; the engine never sees
    it again), ``t0 < t1`` are grid times and ``level`` is the MGRIT level
    (0 = the fine grid). On level 0, ``t1`` is the next grid point; on coarse
    levels it lies several fine steps ahead, and the function must take one
    (coarse) step of size ``t1 - t0``: this re-discretisation is MGRIT's coarse
    propagator. It must return a real array of shape ``(n,)`` with finite values
    (lists are accepted), must be deterministic, and should reduce to the
    identity as ``t1 -> t0`` (a consistent one-step method). ``check_step``
    tests these properties on a few calls.

The solver runs on one thread: a Python function only runs while holding the
GIL, so concurrent calls would queue anyway. MGRIT still pays off when the step
itself is expensive and parallel internally, and it is the right tool to study
convergence (``residuals``, ``factors``) before moving a problem to C++.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from . import _core
from .options import MgritOptions

__all__ = ["OdeResult", "StepFunction", "check_step", "serial", "solve"]

#: ``step(u, t0, t1, level) -> new state`` (see the module docstring).
StepFunction = Callable[[np.ndarray, float, float, int], npt.ArrayLike]


@dataclass
class OdeResult:
    """Result of :func:`solve`.

    Attributes:
        states: ``(N + 1, n)`` fine-grid trajectory, ``states[i]`` at ``t[i]``
            (consistent with the final C-point values: F-points are F-relaxed).
        residuals: finest C-point residual norm at the start of the call
            (entry 0; NaN when not computed, e.g. with ``skip_first_down`` or a
            one-level hierarchy) and after every cycle.
        factors: convergence factors ``residuals[k] / residuals[k - 1]``.
        iterations: number of MGRIT cycles run.
        steps_per_level: calls of the step function per grid level.
        total_steps: sum of ``steps_per_level``.
        levels: number of grid levels used.
        converged: whether the last residual met ``tol``, ``atol`` or ``rtol`` (or is 0).
        t: the time grid, ``(N + 1,)``.
    """

    states: np.ndarray
    residuals: list[float]
    factors: list[float]
    iterations: int
    steps_per_level: list[int]
    total_steps: int
    levels: int
    converged: bool
    t: np.ndarray


def _grid(t: Optional[npt.ArrayLike], T: Optional[float], N: Optional[int]) -> np.ndarray:
    """The time grid from ``t`` or from ``(T, N)`` (``N`` equal steps on ``[0, T]``).

    ``t`` itself is validated where it is used (by the compiled module, or by
    :func:`_check_grid` in :func:`check_step`).
    """
    if t is not None:
        if T is not None or N is not None:
            raise ValueError("give either the time grid t or T and N, not both")
        return np.asarray(t)
    if T is None or N is None:
        raise ValueError("give the time grid t, or both T (final time) and N (number of steps)")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N (the number of time steps) must be an integer >= 1, got {N!r}")
    if isinstance(T, bool) or not isinstance(T, (int, float, np.integer, np.floating)) or not (
            math.isfinite(T) and T > 0):
        raise ValueError(f"T (the final time) must be a finite number > 0, got {T!r}")
    return np.linspace(0.0, float(T), int(N) + 1)


def _tolerances(options: dict[str, Any], u0: npt.ArrayLike) -> dict[str, Any]:
    """The engine's options with ``tol`` (relative to |u0|) and ``atol`` (absolute) folded
    into the engine's one absolute bound, and ``cfactor_fine = 0`` meaning "as cfactor"."""
    out = dict(options)
    bounds = {}
    for name in ("tol", "atol"):
        v = out.pop(name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"mgrit option {name} must be a number, got {v!r}")
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"mgrit option {name} must be finite and >= 0, got {v!r}")
        bounds[name] = float(v)
    bound = bounds["atol"]
    if bounds["tol"] > 0:
        bound = max(bound, bounds["tol"] * float(np.linalg.norm(_check_state(u0))))
    if bound > 0:
        out["tol"] = bound
    if out.get("cfactor_fine") == 0 and not isinstance(out.get("cfactor_fine"), bool):
        out["cfactor_fine"] = -1
    return out


def solve(step: StepFunction, u0: npt.ArrayLike, t: Optional[npt.ArrayLike] = None, *,
          T: Optional[float] = None, N: Optional[int] = None, iterations: Optional[int] = None,
          initial: Optional[npt.ArrayLike] = None, mgrit: Optional[MgritOptions] = None,
          **options: Any) -> OdeResult:
    """Solves ``u_{i+1} = step(u_i, t[i], t[i+1], 0)``, ``u_0 = u0`` with MGRIT.

    Args:
        step: the one-step map ``step(u, t0, t1, level) -> new state``.
        u0: initial state, 1-D, finite, non-empty.
        t: time grid (1-D, strictly increasing, at least 2 points); or give
            ``T`` and ``N`` for ``N`` equal steps on ``[0, T]``.
        iterations: ``None`` runs cycles until ``tol`` / ``rtol`` / ``max_iter``;
            an integer runs exactly that many cycles.
        initial: warm start, a whole ``(N + 1, n)`` trajectory (row 0 is ignored:
            ``u0`` is the initial value).
        mgrit: an :class:`~layerparallel.options.MgritOptions` to take the
            hierarchy, cycle, ``tol`` and ``max_iter`` from (keyword options
            below override it).
        **options: MGRIT options: ``max_levels`` (10), ``cfactor`` (2),
            ``cfactor_fine`` (0 or -1: same as cfactor), ``min_coarse`` (2),
            ``relax`` ("F,FCF": per level, last entry repeats), ``cycle``
            ("V" or "F"), ``max_iter`` (100), ``fmg`` (False),
            ``skip_first_down`` (False), ``store`` ("all" or "cpoints"), and
            the stopping bounds (0 = none; the first one met stops the solve):
            ``tol`` relative to the initial value, ``|residual| <= tol * |u0|``
            (2-norms; the residual is that of the finest C-points), ``atol``
            absolute, ``rtol`` relative to the first residual of the call.
            docs/algorithm.md section 3 explains them.

    Raises:
        ValueError: a bad input or option (the message names it), or a step
            result of the wrong shape, dtype or with non-finite values.
        Exception: whatever the step function raises, unchanged (on Python >=
            3.11 with a note giving t0, t1 and level).
    """
    grid = _grid(t, T, N)
    merged = MgritOptions.coerce(mgrit).ode_options() if mgrit is not None else {}
    merged.update(options)
    r = _core.ode_solve(step, u0, grid, _tolerances(merged, u0), initial, iterations)
    return OdeResult(states=r["states"], residuals=list(r["residuals"]), factors=list(r["factors"]),
                     iterations=int(r["iterations"]), steps_per_level=list(r["steps_per_level"]),
                     total_steps=int(r["total_steps"]), levels=int(r["levels"]),
                     converged=bool(r["converged"]), t=np.asarray(grid, dtype=np.float64))


def serial(step: StepFunction, u0: npt.ArrayLike, t: Optional[npt.ArrayLike] = None, *,
           T: Optional[float] = None, N: Optional[int] = None) -> np.ndarray:
    """Exact serial time stepping (forward substitution): ``(N + 1, n)`` states.

    The reference MGRIT converges to; same arguments and validation as :func:`solve`.
    """
    return _core.ode_serial(step, u0, _grid(t, T, N))


# ----------------------------------------------------------------- conformance check

_ZERO_TOL = 1e-12      # |step(u, t, t) - u| allowed, relative to 1 + max|u|
_FLOOR = 1e-12         # below this (relative) the identity limit counts as reached
_SHRINK = 5.0          # a consistent method shrinks |step(u,t,t+d) - u| ~10x per decade of d
_DECADES = 7           # d = dt, dt/10, ..., dt/10^7


def _check_state(u0: npt.ArrayLike) -> np.ndarray:
    # Same rules and messages as the compiled module's boundary checks.
    u = np.asarray(u0)
    if u.dtype.kind not in "fiu":
        raise ValueError(f"u0 (the initial state) must hold real numbers, got dtype {u.dtype}")
    u = np.array(u, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"u0 (the initial state) must have shape (s,), got {u.shape}")
    if u.size < 1:
        raise ValueError("u0 (the initial state) must hold at least one value, got shape (0,)")
    if not np.all(np.isfinite(u)):
        raise ValueError("u0 (the initial state) must be finite")
    return u


def _check_grid(t: np.ndarray) -> np.ndarray:
    # Same rules and messages as the compiled module's boundary checks.
    if t.dtype.kind not in "fiu":
        raise ValueError(f"t (the time grid) must hold real numbers, got dtype {t.dtype}")
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"t (the time grid) must have shape (s,), got {t.shape}")
    if t.size < 2:
        raise ValueError(f"t (the time grid) must hold at least 2 points, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("t (the time grid) must be finite")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        k = int(bad[0]) + 1
        raise ValueError(f"t (the time grid) must be strictly increasing, but t[{k}] = {float(t[k])!r} "
                         f"<= t[{k - 1}] = {float(t[k - 1])!r}")
    return t


def _call_text(t0: float, t1: float, level: int) -> str:
    return f"step(u, t0={t0!r}, t1={t1!r}, level={level})"


class _Checker:
    """Calls the step function and collects one sentence per kind of problem."""

    def __init__(self, step: StepFunction, n: int):
        self.step = step
        self.n = n
        self.problems: dict[str, str] = {}  # kind -> first message (insertion-ordered)

    def report(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, message)

    def call(self, u: np.ndarray, t0: float, t1: float, level: int) -> Optional[np.ndarray]:
        """One call on a fresh copy of u; returns the result as float64 (n,) or
        None when the call failed or the result is unusable (problems recorded)."""
        where = _call_text(t0, t1, level)
        arg = u.copy()
        try:
            r = self.step(arg, t0, t1, level)
        except Exception as e:  # noqa: BLE001 -- reporting the user's error is the point
            self.report("raises", f"{where} raised {type(e).__name__}: {e}")
            return None
        if not np.array_equal(arg, u):
            self.report("in_place", f"{where} modifies its input u in place; it must leave u unchanged "
                                    "and return a new array (copy first, e.g. u = u.copy())")
        if r is arg or (isinstance(r, np.ndarray) and np.shares_memory(r, arg)):
            self.report("aliasing", f"{where} returns its input array (or a view of it) instead of a new "
                                    "array; return a fresh array")
        return self._result(r, where)

    def _result(self, r: Any, where: str) -> Optional[np.ndarray]:
        if r is None:
            self.report("none", f"{where} returns None instead of the new state (missing return?)")
            return None
        try:
            a = np.asarray(r)
        except Exception as e:  # noqa: BLE001 -- e.g. ragged nested lists
            self.report("not_array", f"{where} returns a {type(r).__name__} that is not convertible to an "
                                     f"array ({type(e).__name__}: {e})")
            return None
        if a.dtype.kind == "c":
            self.report("complex", f"{where} returns complex values (dtype {a.dtype}); the state must be real")
            return None
        if a.dtype.kind not in "fiu":
            self.report("not_array", f"{where} returns a {type(r).__name__} of dtype {a.dtype}, "
                                     "not an array of real numbers")
            return None
        if a.shape != (self.n,):
            self.report("shape", f"{where} returns shape {a.shape} for a state of shape ({self.n},)")
            return None
        a = a.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            self.report("non_finite", f"{where} returns non-finite values ({float(a[bad[0]])!r} at index "
                                      f"{int(bad[0])})")
            return None
        return a


def check_step(step: StepFunction, u0: npt.ArrayLike, t: Optional[npt.ArrayLike] = None, *,
               T: Optional[float] = None, N: Optional[int] = None,
               raise_on_error: bool = False) -> list[str]:
    """Conformance check of a step function (XBraid's "testbraid" for this API).

    Calls ``step`` on ``u0`` for a few fine intervals (level 0, ``t[i]`` to
    ``t[i+1]``), coarse intervals (level 1, ``t[i]`` to ``t[i+2]``), twice with
    the same input, over a zero-length interval and over shrinking intervals,
    and reports, one sentence per kind of problem (first occurrence):

    - it raises (with the exception's message);
    - it returns None, a non-array, complex or non-real values, the wrong
      shape, or non-finite values;
    - it modifies its input in place, or returns its input (aliasing);
    - it is not deterministic (two calls with the same input differ);
    - consistency: a step over ``t0 == t1`` does not return ``u``, or
      ``|step(u, t0, t0 + d) - u|`` does not go to 0 about linearly as
      ``d -> 0`` (d = dt, dt/10, ..., dt/1e7; once d is small it must shrink
      at least 5x per decade, two decades in a row). Whether the function
      uses ``t`` correctly is not decidable from outside and is not checked.

    Args:
        step, u0, t, T, N: as for :func:`solve` (only ``t[0..2]`` and a few
            other grid points are used).
        raise_on_error: raise ValueError listing all problems instead of
            returning them.

    Returns:
        The problems found; an empty list means the function conforms.

    Raises:
        ValueError: bad ``u0`` / ``t`` (these are the caller's inputs, not the
            step function's problems), or problems found with ``raise_on_error``.
        TypeError: ``step`` is not callable.
    """
    if not callable(step):
        raise TypeError(f"step must be callable as step(u, t0, t1, level), got a {type(step).__name__}")
    u = _check_state(u0)
    grid = _check_grid(_grid(t, T, N))
    n_steps = grid.size - 1
    chk = _Checker(step, u.size)
    f = [float(x) for x in grid]

    # Fine and coarse steps at the start, middle and end of the grid.
    first = None
    for i in sorted({0, n_steps // 2, n_steps - 1}):
        r = chk.call(u, f[i], f[i + 1], 0)
        if i == 0:
            first = r
    if n_steps >= 2:
        for i in sorted({0, n_steps - 2}):
            chk.call(u, f[i], f[i + 2], 1)

    # Determinism: the same call again.
    if first is not None:
        again = chk.call(u, f[0], f[1], 0)
        if again is not None and not np.array_equal(first, again):
            diff = float(np.max(np.abs(first - again)))
            chk.report("nondeterministic", f"step is not deterministic: two calls {_call_text(f[0], f[1], 0)} "
                                           f"with the same input differ by up to {diff:.3g}")

    # Consistency: the zero-length step is the identity ...
    scale = 1.0 + float(np.max(np.abs(u)))
    zero = chk.call(u, f[0], f[0], 0)
    if zero is not None:
        diff = float(np.max(np.abs(zero - u)))
        if diff > _ZERO_TOL * scale:
            chk.report("zero_step", f"{_call_text(f[0], f[0], 0)} over a zero-length interval does not "
                                    f"return u (max difference {diff:.3g}); a consistent one-step method "
                                    "is the identity there")

    # ... and the step tends to the identity linearly as t1 -> t0.
    if first is not None:
        dt = f[1] - f[0]
        e_list: list[float] = []
        consistent = False
        for k in range(_DECADES + 1):
            d = dt / 10.0 ** k
            r = chk.call(u, f[0], f[0] + d, 0)
            if r is None:
                consistent = True  # the failure is already reported; nothing to judge
                break
            e = float(np.max(np.abs(r - u)))
            e_list.append(e)
            # Two decades in a row shrinking >= 5x: a single one can be chance
            # (e.g. a step that adds random noise).
            if e <= _FLOOR * scale or (k >= 2 and e * _SHRINK <= e_list[-2]
                                       and e_list[-2] * _SHRINK <= e_list[-3]):
                consistent = True
                break
        if not consistent:
            shown = ", ".join(f"{e:.3g}" for e in e_list[:3]) + f", ..., {e_list[-1]:.3g}"
            chk.report("not_identity", "step does not reduce to the identity as t1 -> t0 (consistency): "
                                       f"max|step(u, t0, t0 + d) - u| = {shown} for d = dt, dt/10, dt/100, "
                                       f"..., dt/1e{_DECADES} (dt = {dt:.3g}); it should shrink about 10x "
                                       "per decade of d")

    problems = list(chk.problems.values())
    if raise_on_error and problems:
        raise ValueError("the step function does not conform:\n" + "\n".join(f"  - {p}" for p in problems))
    return problems
