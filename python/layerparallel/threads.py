"""Threads of the compiled loops and BLAS (OpenMP), for all networks and solvers of
this process. Results do not depend on the thread count: gradient sums are formed
in fixed-size chunks and added in a fixed order."""
from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["set_num_threads", "num_threads"]


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the compiled loops and BLAS (0 = all cores)."""
    limit = int(_core.thread_limit())
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= limit:
        raise ValueError(f"n (the number of threads) must be an integer from 0 (all cores) to {limit} "
                         f"(64 per core), got {n!r}")
    _core.set_num_threads(int(n))


def num_threads() -> int:
    """The threads the compiled loops and BLAS use now."""
    return int(_core.num_threads())
