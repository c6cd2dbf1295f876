"""Processes: communicators, the layer x data process grid, data-parallel
evaluation and whole-job failure handling.

Works with any mpi4py communicator and without MPI at all (a one-process
communicator stands in). Layers are distributed over threads inside a process
(``mgrit.threads``); distributing them over processes is not implemented yet,
so ``layer_procs`` must be 1 and every process of the grid is a data process.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

__all__ = ["SelfComm", "world", "local_processes", "ProcessGrid", "shard", "DataParallelSolver", "abort_on_error"]


class SelfComm:
    """The one-process communicator (mpi4py-like subset) used when MPI is absent."""

    rank = 0
    size = 1

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def allreduce(self, value: Any, op: Any = None) -> Any:
        return value

    def Allreduce(self, send: Any, recv: Any, op: Any = None) -> None:
        np.copyto(np.asarray(recv), np.asarray(send))

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def bcast(self, value: Any, root: int = 0) -> Any:
        return value

    def Split(self, color: int = 0, key: int = 0) -> "SelfComm":
        return self

    def Barrier(self) -> None:
        pass

    def Abort(self, code: int = 1) -> None:
        os._exit(code)


def _launched_by_mpiexec() -> bool:
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def local_processes() -> int:
    """Processes of this job on this machine (from the launcher's environment; 1 if unknown)."""
    for key in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MPICH_LOCALNRANKS"):
        if key in os.environ:
            try:
                return max(1, int(os.environ[key]))
            except ValueError:
                pass
    return 1


def world() -> Any:
    """MPI.COMM_WORLD when this process was started by mpiexec (mpi4py needed), else SelfComm()."""
    if not _launched_by_mpiexec():
        return SelfComm()
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError("this process was started by mpiexec but mpi4py is not installed "
                           "(pip install 'layerparallel[mpi]')") from exc
    return MPI.COMM_WORLD


@dataclass
class ProcessGrid:
    """``layer_procs x data_procs`` processes of one communicator.

    ``layer_comm`` joins the processes that hold the same examples (they would
    share the layers); ``data_comm`` joins the processes that hold the same
    layers and split the examples.
    """

    comm: Any
    layer_procs: int
    data_procs: int
    layer_comm: Any
    data_comm: Any

    @classmethod
    def create(cls, comm: Any = None, layer_procs: int = 1, data_procs: int = 0) -> "ProcessGrid":
        comm = comm if comm is not None else world()
        size = comm.Get_size()
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
        if layer_procs > 1:
            raise ValueError("parallel.layer_procs > 1 is not supported yet: layers are parallel over threads "
                             "inside a process (mgrit.threads); use parallel.data_procs to spread examples")
        rank = comm.Get_rank()
        layer_comm = comm.Split(rank // layer_procs, rank)
        data_comm = comm.Split(rank % layer_procs, rank)
        return cls(comm, layer_procs, data_procs, layer_comm, data_comm)

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


class DataParallelSolver:
    """Evaluates the objective on this process's share of the examples and sums over
    the data communicator: the loss is the mean over *all* examples, the gradient
    its exact gradient, the regulariser counted once. Wraps any gradient solver
    (serial sweeps or MGRIT), which then sees only the local examples."""

    def __init__(self, inner: Any, data_comm: Any):
        self.inner = inner
        self.comm = data_comm
        self.model = inner.model
        self._shards: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.columns = inner.columns

    def _local(self, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The same local arrays for the same batch, so that MGRIT warm starts apply.
        hit = self._shards.get(id(features))
        if hit is None or hit[0] is not features:
            sl = shard(features.shape[0], self.comm.Get_size(), self.comm.Get_rank())
            hit = (features, features[sl], labels[sl])
            self._shards = {id(features): hit}
        return hit[1], hit[2]

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> Any:
        from .model import Evaluation

        X, y = self._local(features, labels)
        s_local, s_total = X.shape[0], features.shape[0]
        model = self.model
        if s_local:
            ev = self.inner(theta, X, y, regularized=False)
            loss_sum, correct, grad = ev.loss * s_local, ev.correct, ev.gradient * s_local
        else:  # more processes than examples: this one contributes nothing
            loss_sum, correct, grad = 0.0, 0, np.zeros_like(theta)
        buf = np.concatenate([[loss_sum, float(correct)], grad])
        total = np.empty_like(buf)
        self.comm.Allreduce(buf, total)
        reg, greg = model.regularization_terms(theta)
        loss = total[0] / s_total
        ev = Evaluation(objective=loss + reg, loss=loss, regularization=reg, accuracy=total[1] / s_total,
                        correct=int(round(total[1])), examples=s_total, gradient=total[2:] / s_total + greg)
        self.inner.remember(ev, theta, features)
        return ev

    def monitor(self) -> Optional[str]:
        """The safeguard's decision, made collectively so every process switches together."""
        reasons = self.comm.allgather(self.inner.monitor())
        return next((f"rank {r}: {why}" for r, why in enumerate(reasons) if why), None)

    def __getattr__(self, name: str) -> Any:  # stats, cached(), tighten(), ... of the inner solver
        return getattr(self.inner, name)


@contextlib.contextmanager
def abort_on_error(comm: Any, exit_code: int = 1) -> Iterator[None]:
    """On an exception in this process: print it (with the rank) and abort the whole
    job, so the other processes never wait forever in a collective."""
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() > 1 and not isinstance(exc, SystemExit):
            code = 2 if isinstance(exc, ValueError) else exit_code
            print(f"layerparallel: rank {comm.Get_rank()}: error: {exc}", file=sys.stderr, flush=True)
            if not isinstance(exc, ValueError):
                traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            comm.Abort(code)
        raise
