"""Compatibility names for code written against the former ``layerparallel.parallel``.

The module was split by job: :mod:`layerparallel.comm` (communicators),
:mod:`layerparallel.grid` (the process grid) and :mod:`layerparallel.layer_parallel`
(the layer-sharded solver). New code imports from those modules, or uses
``layerparallel.ProcessGrid`` and ``layerparallel.Solver``. ``CoreComm`` is the
former name of :func:`layerparallel.comm.core_comm` and warns when used.
"""
from __future__ import annotations

import warnings
from typing import Any

from .comm import (PyCoreComm, SelfComm, abort_on_error, comm_exchange, comm_sum, core_comm,  # noqa: F401
                   local_processes, world)
from .grid import ProcessGrid, shard  # noqa: F401
from .layer_parallel import LayerParallelSolver, LayerShard  # noqa: F401

__all__ = ["SelfComm", "world", "local_processes", "ProcessGrid", "shard", "abort_on_error", "core_comm",
           "PyCoreComm", "comm_sum", "comm_exchange", "LayerShard", "LayerParallelSolver"]


def __getattr__(name: str) -> Any:
    if name == "CoreComm":
        warnings.warn("layerparallel.parallel.CoreComm is renamed layerparallel.comm.core_comm (a function)",
                      DeprecationWarning, stacklevel=2)
        return core_comm
    raise AttributeError(f"module 'layerparallel.parallel' has no attribute {name!r}")
