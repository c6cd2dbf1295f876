"""The ``layer_procs x data_procs`` process grid and the contiguous split of a
range over processes (:func:`shard`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .comm import world

__all__ = ["ProcessGrid", "shard"]


@dataclass
class ProcessGrid:
    """``layer_procs x data_procs`` processes of one communicator.

    ``layer_comm`` joins the processes that hold the same examples and split
    the layers (ranks ``r`` with the same ``r // layer_procs``); ``data_comm``
    joins the processes that hold the same layers and split the examples.
    """

    comm: Any
    layer_procs: int
    data_procs: int
    layer_comm: Any
    data_comm: Any

    @classmethod
    def create(cls, comm: Any = None, layer_procs: int = 1, data_procs: int = 0) -> "ProcessGrid":
        comm = comm if comm is not None else world()
        layer_procs, data_procs = cls.check(comm.Get_size(), layer_procs, data_procs)
        rank = comm.Get_rank()
        layer_comm = comm.Split(rank // layer_procs, rank)
        data_comm = comm.Split(rank % layer_procs, rank)
        return cls(comm, layer_procs, data_procs, layer_comm, data_comm)

    @staticmethod
    def check(size: int, layer_procs: int = 1, data_procs: int = 0) -> tuple[int, int]:
        """``(layer_procs, data_procs)`` for ``size`` processes (``data_procs = 0``: all
        that remain), or a ValueError naming the setting that does not fit; needs no
        communication."""
        if layer_procs < 1:
            raise ValueError(f"parallel.layer_procs must be at least 1, got {layer_procs}")
        if data_procs < 0:
            raise ValueError(f"parallel.data_procs must be >= 0 (0 = all remaining processes), got {data_procs}")
        if data_procs == 0:
            if size % layer_procs:
                raise ValueError(f"parallel.layer_procs = {layer_procs} does not divide the {size} processes")
            data_procs = size // layer_procs
        if layer_procs * data_procs != size:
            raise ValueError(f"the process grid parallel.layer_procs x parallel.data_procs = {layer_procs} x "
                             f"{data_procs} = {layer_procs * data_procs} does not match the communicator's "
                             f"{size} processes")
        return layer_procs, data_procs

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def shard(n: int, parts: int, part: int) -> slice:
    """Contiguous block ``part`` of ``range(n)`` split into ``parts`` (no divisibility needed;
    the first ``n % parts`` blocks get one more item; a block may be empty)."""
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"need 0 <= part < parts, got part={part}, parts={parts}")
    base, extra = divmod(n, parts)
    begin = part * base + min(part, extra)
    return slice(begin, begin + base + (1 if part < extra else 0))
