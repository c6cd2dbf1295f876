"""MGRIT options: the ``[mgrit]`` config section as a validated dataclass.

One meaning per tolerance, everywhere (the config file, :class:`layerparallel.Solver`,
:func:`layerparallel.ode.solve`):

``tol``
    relative to the initial value: a solve stops once the residual norm is at
    most ``tol * |initial value|``. The residual norm is the 2-norm of the
    finest-level C-point residuals; the initial value is ``u_0`` for a forward
    solve and ``lambda_N`` for an adjoint solve (2-norms over the whole batch).
    Scaling the initial value therefore does not change the number of cycles.
``atol`` (:func:`layerparallel.ode.solve` only)
    absolute: stop once the residual norm is at most ``atol``.
``rtol`` (:func:`layerparallel.ode.solve` only)
    relative to the first residual of the call: stop once the residual norm is
    at most ``rtol`` times the residual before the first cycle.

A solve stops at whichever bound it meets first, or after ``max_iter`` cycles.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import SCHEMA, _coerce, check_relax, relax_levels

__all__ = ["MgritOptions"]


@dataclass(frozen=True)
class MgritOptions:
    """Every key of the ``[mgrit]`` config section, with its default and its checks.

    Hierarchy and cycles (the exact and simultaneous modes):
      ``max_levels`` grid levels (1 = serial propagation); ``cfactor`` coarsening
      factor on coarse levels; ``cfactor_fine`` on the finest level (0 = cfactor);
      ``min_coarse`` stop coarsening at this many intervals; ``relax`` relaxation
      per level, ``"F,FCF"`` (the last entry repeats); ``cycle`` ``"V"`` or ``"F"``;
      ``fmg`` nested-iteration first guess; ``skip_first_down`` skip the relaxation
      of the first down-cycle; ``store`` ``"all"`` or ``"cpoints"``; ``threads``
      threads over the intervals of a level (0 = the solver's ``threads``).
    Exact solves:
      ``tol`` stop once |residual| <= tol * |initial value| (see the module
      docstring: the one meaning of ``tol``); ``max_iter`` cycles per solve at most.
    Simultaneous (one-shot) mode:
      ``fwd_iterations`` / ``bwd_iterations`` cycles per evaluation;
      ``compute_residuals`` the residual norm after every cycle (false saves the
      all-reduces; the safeguard then watches only the line search);
      ``safeguard`` switch to exact solves when MGRIT stalls, that is when a
      convergence factor exceeds ``safeguard_factor``, for
      ``safeguard_iterations`` iterations. ``adaptive``: instead of the fixed
      budgets, every evaluation solves forward and adjoint to the relative residual
      ``adaptive_eta * |g| / |g_0|`` (the gradient norms of the latest and the first
      evaluation; at least ``tol``, at most ``adaptive_eta``) from the warm start, in at
      most ``adaptive_max_cycles`` cycles, none when the warm start already meets it.

    Bad values raise ValueError naming the field, e.g. ``MgritOptions(cfactor=1)``.
    """

    max_levels: int = 10
    cfactor: int = 2
    cfactor_fine: int = 0
    min_coarse: int = 2
    relax: str = "F,FCF"
    cycle: str = "V"
    tol: float = 1e-11
    max_iter: int = 100
    fwd_iterations: int = 2
    bwd_iterations: int = 2
    threads: int = 0
    fmg: bool = False
    skip_first_down: bool = False
    store: str = "all"
    compute_residuals: bool = True
    safeguard: bool = True
    safeguard_factor: float = 1.0
    safeguard_iterations: int = 5
    adaptive: bool = False
    adaptive_eta: float = 0.1
    adaptive_max_cycles: int = 8

    def __post_init__(self) -> None:
        # The config schema is the one set of rules: a config file and this class
        # accept the same values.
        for f in dataclasses.fields(self):
            value = _coerce("MgritOptions", f.name, SCHEMA["mgrit"][f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        check_relax(self.relax, "MgritOptions.relax")

    @classmethod
    def coerce(cls, value: Any) -> "MgritOptions":
        """``value`` as MgritOptions: an MgritOptions, a ``[mgrit]`` config section or a
        mapping of its keys, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown MGRIT option {unknown[0]!r} (known options: {', '.join(sorted(known))}).")
            return cls(**dict(value))
        raise ValueError(f"mgrit must be an MgritOptions, a [mgrit] config section or a dict of its keys, "
                         f"got {type(value).__name__}.")

    def replace(self, **changes: Any) -> "MgritOptions":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def engine_options(self, threads: int = 0) -> dict[str, Any]:
        """The compiled engine's option dict for a ResNet solve (tolerances are set
        per solve from ``tol``; ``threads`` stands in for ``self.threads == 0``)."""
        return {"max_levels": self.max_levels, "cfactor": self.cfactor,
                "cfactor_fine": self.cfactor_fine if self.cfactor_fine else -1, "min_coarse": self.min_coarse,
                "relax": relax_levels(self.relax), "cycle": self.cycle, "max_iter": self.max_iter, "fmg": self.fmg,
                "skip_first_down": self.skip_first_down, "store": self.store, "threads": self.threads or threads,
                "compute_residuals": self.compute_residuals}

    def ode_options(self) -> dict[str, Any]:
        """The options :func:`layerparallel.ode.solve` takes from these (hierarchy, cycles,
        ``tol``, ``max_iter``); threads and the training-only keys do not apply there."""
        return {"max_levels": self.max_levels, "cfactor": self.cfactor, "cfactor_fine": self.cfactor_fine,
                "min_coarse": self.min_coarse, "relax": self.relax, "cycle": self.cycle, "tol": self.tol,
                "max_iter": self.max_iter, "fmg": self.fmg, "skip_first_down": self.skip_first_down,
                "store": self.store}
