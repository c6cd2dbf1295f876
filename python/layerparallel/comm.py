"""Communicators: the one-process stand-in for MPI, the job's world communicator,
whole-job failure handling, and the communicator the compiled engine sends
through (:func:`core_comm`: the MPI library called directly, or every message
through mpi4py by :class:`PyCoreComm`; both can record traces for
:mod:`layerparallel.scaling`).

Works with any mpi4py communicator and without MPI at all (:class:`SelfComm`).
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator, Optional

import numpy as np

from . import _core

__all__ = ["SelfComm", "world", "local_processes", "abort_on_error", "core_comm", "PyCoreComm", "comm_sum",
           "comm_exchange"]


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


@contextlib.contextmanager
def abort_on_error(comm: Any, exit_code: int = 1, debug: bool = False) -> Iterator[None]:
    """On an exception in this process: print it as one line (with the rank; the
    traceback only when debugging) and abort the whole job, so the other processes
    never wait forever in a collective. A user's error aborts with status 2."""
    from .errors import Reported, report

    try:
        yield
    except BaseException as exc:
        if comm.Get_size() > 1 and not isinstance(exc, (SystemExit, Reported)):
            code = report(exc, rank=comm.Get_rank(), debug=debug)
            comm.Abort(2 if code == 2 else exit_code)
        raise


# ---------------------------------------------------------------------- the engine's communicator

class PyCoreComm(_core.Comm):
    """The engine's communicator in Python: forwards the C++ engine's calls (and
    the Python solver's own messages) to an mpi4py communicator, one Python call
    per message. The fallback of :func:`core_comm` when the MPI library cannot be
    reached directly (``LAYERPARALLEL_COMM=python`` forces it).

    With ``trace=True`` it records, per call, the main thread's CPU time spent
    since the previous call (a compute span) and the message it makes; see
    :func:`layerparallel.scaling.replay`. Timing is with
    ``time.thread_time_ns`` so that a run oversubscribing the cores still
    records what each process computes.
    """

    def __init__(self, comm: Any, trace: bool = False):
        _core.Comm.__init__(self)
        self.comm = comm
        self._rank, self._size = comm.Get_rank(), comm.Get_size()
        self._requests: dict[int, Any] = {}
        self._next = 0
        self.events: Optional[list[tuple]] = [] if trace else None
        self._mark = time.thread_time_ns()

    # -- tracing
    def start_trace(self) -> None:
        self.events = []
        self._mark = time.thread_time_ns()

    def stop_trace(self) -> list[tuple]:
        events = self.events or []
        events.append(("end", time.thread_time_ns() - self._mark))
        self.events = None
        return events

    def _rec(self, *event: Any) -> None:
        if self.events is not None:
            self.events.append((event[0], time.thread_time_ns() - self._mark) + event[1:])

    def _done(self) -> None:
        if self.events is not None:
            self._mark = time.thread_time_ns()

    # -- the engine's interface
    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def barrier(self) -> None:
        self._rec("barrier", 0)
        self.comm.Barrier()
        self._done()

    def allreduce_sum(self, buf: np.ndarray) -> None:
        from mpi4py import MPI

        self._rec("allreduce", buf.nbytes)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self._done()

    def bcast(self, buf: np.ndarray, root: int) -> None:
        self._rec("bcast", buf.nbytes, root)
        self.comm.Bcast(buf, root=root)
        self._done()

    def isend(self, buf: np.ndarray, dest: int, tag: int) -> int:
        rid = self._next
        self._next += 1
        self._rec("send", dest, tag, buf.nbytes, rid)
        self._requests[rid] = self.comm.Isend(buf, dest=dest, tag=tag)
        self._done()
        return rid

    def irecv(self, buf: np.ndarray, src: int, tag: int) -> int:
        rid = self._next
        self._next += 1
        self._rec("recv", src, tag, buf.nbytes, rid)
        self._requests[rid] = self.comm.Irecv(buf, source=src, tag=tag)
        self._done()
        return rid

    def wait(self, rid: int) -> None:
        self._rec("wait", rid)
        self._requests.pop(rid).Wait()
        self._done()


def core_comm(comm: Any, trace: bool = False) -> Any:
    """The communicator the engine sends through, over the mpi4py communicator ``comm``.

    Normally a ``_core.MpiComm``: the engine then calls the MPI library that mpi4py
    loaded directly (found by path, functions looked up by name, the communicator
    passed as mpi4py's handle), with no Python per message. Falls back to
    :class:`PyCoreComm` (every message through mpi4py) for communicators without
    an MPI handle, when the library cannot be located, or when the environment sets
    ``LAYERPARALLEL_COMM=python``. Both record the same traces."""
    native = None
    if os.environ.get("LAYERPARALLEL_COMM", "").lower() != "python":
        native = _native_comm(comm)
    if native is not None:
        if trace:
            native.start_trace()
        return native
    return PyCoreComm(comm, trace)


def _native_comm(comm: Any) -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        return None
    library = next((line.split()[-1] for line in _proc_maps() if "/libmpi" in line.split()[-1]), None)
    if library is None:
        return None
    try:
        return _core.MpiComm(int(comm.handle), int(MPI.DOUBLE.handle), int(MPI.SUM.handle), library)
    except (RuntimeError, ValueError, AttributeError):
        return None


def _proc_maps() -> list[str]:
    try:
        with open("/proc/self/maps") as fh:
            return [line for line in fh if len(line.split()) >= 6]
    except OSError:
        return []


def comm_sum(comm: Any, values: Any) -> np.ndarray:
    """Element-wise sum over the processes of an engine communicator (:func:`core_comm`) (a float64 copy of ``values``)."""
    buf = np.array(values, dtype=np.float64)
    if comm.size() > 1:
        comm.allreduce_sum(buf)
    return buf


def comm_exchange(comm: Any, first: np.ndarray, last: np.ndarray, tag: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Sends ``first`` to the left neighbour and ``last`` to the right one over an engine
    communicator;
    returns (the left neighbour's ``last``, the right neighbour's ``first``), None at the ends."""
    rank, size = comm.rank(), comm.size()
    first, last = np.ascontiguousarray(first, dtype=np.float64), np.ascontiguousarray(last, dtype=np.float64)
    left = np.empty_like(last) if rank > 0 else None
    right = np.empty_like(first) if rank < size - 1 else None
    reqs = []
    if left is not None:
        reqs.append(comm.irecv(left, rank - 1, tag))
        reqs.append(comm.isend(first, rank - 1, tag + 1))
    if right is not None:
        reqs.append(comm.irecv(right, rank + 1, tag + 1))
        reqs.append(comm.isend(last, rank + 1, tag))
    for r in reqs:
        comm.wait(r)
    return left, right
