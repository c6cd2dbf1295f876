"""Processes: communicators, the layer x data process grid, layer-parallel and
data-parallel evaluation, and whole-job failure handling.

Works with any mpi4py communicator and without MPI at all (a one-process
communicator stands in). The ``layer_procs`` processes of a grid row split the
layers into contiguous blocks (no divisibility needed); the MGRIT engine sends
through :class:`CoreComm`, which forwards to the row's mpi4py communicator and
can record a trace of compute spans and messages for the scaling model
(:mod:`layerparallel.scaling`). The ``data_procs`` rows split the examples.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from . import _core

__all__ = ["SelfComm", "world", "local_processes", "ProcessGrid", "shard", "abort_on_error",
           "CoreComm", "PyCoreComm", "comm_sum", "comm_exchange", "LayerShard", "LayerParallelSolver"]


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


# ---------------------------------------------------------------------- layers over processes

class PyCoreComm(_core.Comm):
    """The engine's communicator in Python: forwards the C++ engine's calls (and
    the Python solver's own messages) to an mpi4py communicator, one Python call
    per message. The fallback of :func:`CoreComm` when the MPI library cannot be
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



def CoreComm(comm: Any, trace: bool = False) -> Any:
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
    """Element-wise sum over a CoreComm's processes (a float64 copy of ``values``)."""
    buf = np.array(values, dtype=np.float64)
    if comm.size() > 1:
        comm.allreduce_sum(buf)
    return buf


def comm_exchange(comm: Any, first: np.ndarray, last: np.ndarray, tag: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Sends ``first`` to the left neighbour and ``last`` to the right one over a CoreComm;
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


class LayerShard:
    """Which entries of the flat parameter vector this process owns when the layers
    are split over a layer communicator (a :class:`CoreComm`, or None for one
    process): its layers' blocks of every per-layer array (``weights``,
    ``biases``), the opening on the first process and the classifier on the last.
    Optimisers work on the owned entries (:meth:`local`).

    Reductions are reproducible: every inner product and the regulariser's value
    are sums over fixed blocks (each named block, and each layer's row of a
    per-layer array) in one fixed order. A process fills the slots of its blocks,
    the slots are all-reduced (exactly: each slot has one non-zero contribution)
    and summed left to right, so the result has the same rounding on any number of
    processes, and training with the layers split is bit for bit training on one."""

    PER_LAYER = ("weights", "biases")

    def __init__(self, model: Any, comm: Any = None):
        self.model = model
        self.comm = comm  # a CoreComm, or None: one process
        P, r = (comm.size(), comm.rank()) if comm is not None else (1, 0)
        N = model.layers
        if N < P:
            raise ValueError(f"the {N} layers cannot be split over parallel.layer_procs = {P} processes: "
                             "each needs at least one layer")
        sl = shard(N, P, r)
        a, b = sl.start, sl.stop
        self.layers = (a, b)
        self.first, self.last = r == 0, r == P - 1
        idx: list[np.ndarray] = []
        bounds, slots, hidden_slots, classifier_slots = [0], [], [], []
        self.blocks: dict[str, tuple[int, int]] = {}
        pos = slot = 0
        for name, off, shape in model._layout:
            n = int(np.prod(shape)) if shape else 1
            if name in self.PER_LAYER:
                per = n // N
                self.blocks[name] = (pos, per)
                idx.append(np.arange(off + a * per, off + b * per))
                for layer in range(a, b):
                    bounds.append(bounds[-1] + per)
                    slots.append(slot + layer)
                hidden_slots.extend(range(slot, slot + N))
                slot += N
                pos += (b - a) * per
                continue
            owned = self.last if name.startswith("classifier") else self.first
            (classifier_slots if name.startswith("classifier") else hidden_slots).append(slot)
            if owned:
                idx.append(np.arange(off, off + n))
                bounds.append(bounds[-1] + n)
                slots.append(slot)
                pos += n
            slot += 1
        self.index = np.concatenate(idx).astype(np.int64)
        self.size = int(self.index.size)
        self._bounds = np.asarray(bounds, dtype=np.int64)
        self._slots = np.asarray(slots, dtype=np.int64)
        self.n_slots = slot
        self._hidden = np.isin(self._slots, hidden_slots)
        self._classifier = np.isin(self._slots, classifier_slots)
        # Entries of the classifier blocks (for the classifier's Tikhonov gradient).
        self.classifier_mask = np.zeros(self.size, dtype=bool)
        for k in np.flatnonzero(self._classifier):
            self.classifier_mask[self._bounds[k]:self._bounds[k + 1]] = True

    def local(self, theta: np.ndarray) -> np.ndarray:
        """The owned entries of a full parameter vector."""
        return np.asarray(theta, dtype=np.float64)[self.index].copy()

    def scatter(self, local: np.ndarray, full: np.ndarray) -> None:
        full[self.index] = local

    def gather(self, local: np.ndarray) -> np.ndarray:
        """The full parameter vector on every layer process (for files and plots)."""
        full = np.zeros(self.model.size)
        full[self.index] = local
        return comm_sum(self.comm, full) if self.comm is not None else full

    def _reduce(self, slot_values: np.ndarray) -> float:
        """Left-to-right sum of slot values after an exact all-reduce of the slots."""
        if self.comm is not None and self.comm.size() > 1:
            self.comm.allreduce_sum(slot_values)
        return float(_core.ordered_sum(slot_values))

    def _slot_vector(self, partial: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n_slots)
        out[self._slots] = partial
        return out

    def dot(self, a: np.ndarray, b: np.ndarray) -> float:
        """Inner product of two distributed vectors, with the same rounding on any split."""
        return self._reduce(self._slot_vector(_core.block_dots(a, b, self._bounds)))

    def regularization(self, local: np.ndarray) -> tuple[float, np.ndarray]:
        """(value, gradient of the owned entries) of the regularisers: Tikhonov on the
        opening and the hidden layers, the classifier term, and the smoothness term
        (g/2) sum_n |(theta_n - theta_{n-1}) / h|^2 with term n counted by the owner of
        layer n (one neighbouring layer is exchanged with each side). The value is a
        sum of per-block slots, reproducible like :meth:`dot`."""
        r = self.model.regularization
        grad = np.zeros_like(local)
        sq = _core.block_dots(local, local, self._bounds)
        tik = np.where(self._hidden, 0.5 * r.tikhonov * sq, 0.0) if r.tikhonov > 0 else np.zeros_like(sq)
        cls = np.where(self._classifier, 0.5 * r.classifier * sq, 0.0) if r.classifier > 0 else np.zeros_like(sq)
        values = [self._slot_vector(tik), self._slot_vector(cls)]
        hidden = ~self.classifier_mask
        if r.tikhonov > 0:
            grad[hidden] += r.tikhonov * local[hidden]
        if r.classifier > 0:
            c = self.classifier_mask
            grad[c] += r.classifier * local[c]
        N = self.model.layers
        if r.ddt > 0 and N > 1:
            h = self.model.h
            g = r.ddt / (h * h)
            a, b = self.layers
            for k, name in enumerate(self.PER_LAYER):
                pos, per = self.blocks[name]
                blk = local[pos:pos + (b - a) * per].reshape(b - a, per)
                if self.comm is not None and self.comm.size() > 1:
                    left, right = comm_exchange(self.comm, blk[0], blk[-1], tag=1000 + 2 * k)
                else:
                    left = right = None
                ext = np.vstack([x for x in (left, blk, right) if x is not None])
                d = np.diff(ext, axis=0)
                off = 1 if left is not None else 0
                ns = np.arange(a, b)
                prev = ns[ns >= 1]           # layers with a term theta_n - theta_{n-1}
                nxt = ns[ns + 1 <= N - 1]    # layers with a term theta_{n+1} - theta_n
                d_prev = np.ascontiguousarray(d[prev - 1 - a + off]).reshape(-1)
                term = np.zeros(N)           # slot n: (g/2) |theta_n - theta_{n-1}|^2
                term[prev] = 0.5 * g * _core.block_dots(d_prev, d_prev, np.arange(prev.size + 1) * per)
                values.append(term)
                gb = grad[pos:pos + (b - a) * per].reshape(b - a, per)
                gb[prev - a] += g * d[prev - 1 - a + off]
                gb[nxt - a] -= g * d[nxt - a + off]
        slots = np.concatenate(values)
        return self._reduce(slots), grad


class LayerParallelSolver:
    """The gradient solver of training: layers split over ``grid.layer_comm`` and
    examples over ``grid.data_comm`` (``grid = None``: one process).

    Wraps a gradient solver (serial sweeps, the serial pipeline or MGRIT; with
    split layers its engine is distributed over the layer processes). Parameters
    and gradients are the owned entries (:class:`LayerShard`); the loss and
    accuracy are summed in the engine over the layer processes and here over the
    data processes; the regulariser is computed per shard. One process goes
    through the same code, so that splitting the layers changes no bit of the
    training (splitting the examples changes the order of the loss sums)."""

    def __init__(self, inner: Any, grid: Optional[ProcessGrid] = None, core_comm: Any = None):
        self.inner = inner
        self.model = inner.model
        self.grid = grid
        self.comm = core_comm if core_comm is not None and core_comm.size() > 1 else None
        self.shard = LayerShard(self.model, self.comm)
        self.data_comm = grid.data_comm if grid is not None else SelfComm()
        self.columns = inner.columns
        self._full = np.zeros(self.model.size)
        self._shards: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._val: dict[int, Any] = {}
        self._sends: list[tuple[int, int]] = []
        self._recvs: list[tuple[int, int]] = []
        if self.comm is not None:
            self._plan_foreign_layers()

    def _plan_foreign_layers(self) -> None:
        """Which layers' parameters go to which process before every evaluation (the
        coarse forward steps into a process's first point of a level use the layer at
        the step's left end, owned further left)."""
        P, N = self.comm.size(), self.model.layers
        probe = _core.ResNetMgrit(self.model.core, 1, self.inner.options, self.inner.options, self.comm)
        needed = [int(n) for n in probe.foreign_layers]
        del probe
        wanted = self.grid.layer_comm.allgather(needed)
        a, b = self.shard.layers
        owner = np.concatenate([np.full(shard(N, P, r).stop - shard(N, P, r).start, r) for r in range(P)])
        self._sends = [(r, n) for r, lst in enumerate(wanted) for n in lst if a <= n < b]
        self._recvs = [(int(owner[n]), n) for n in needed]
        self._rows = [(off, int(np.prod(shape)) // N) for name, off, shape in self.model._layout
                      if name in LayerShard.PER_LAYER]

    def _fetch_foreign(self, local: np.ndarray) -> None:
        if not self._sends and not self._recvs:
            return
        a = self.shard.layers[0]
        width = sum(per for _, per in self._rows)
        bufs = [np.empty(width) for _ in self._recvs]
        reqs = [self.comm.irecv(buf, src, 1990) for buf, (src, _) in zip(bufs, self._recvs)]
        for dest, n in self._sends:
            row = np.concatenate([local[self.shard.blocks[name][0] + (n - a) * per:
                                        self.shard.blocks[name][0] + (n - a + 1) * per]
                                  for name, (_, per) in zip(LayerShard.PER_LAYER, self._rows)])
            reqs.append(self.comm.isend(row, dest, 1990))
        for r in reqs:
            self.comm.wait(r)
        for buf, (_, n) in zip(bufs, self._recvs):
            k = 0
            for off, per in self._rows:
                self._full[off + n * per:off + (n + 1) * per] = buf[k:k + per]
                k += per

    def _local_examples(self, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.data_comm.Get_size() == 1:
            return features, labels
        hit = self._shards.get(id(features))
        if hit is None or hit[0] is not features:
            sl = shard(features.shape[0], self.data_comm.Get_size(), self.data_comm.Get_rank())
            hit = (features, features[sl], labels[sl])
            if len(self._shards) >= 4:  # the training and validation sets, plus a mini-batch
                self._shards.pop(next(iter(self._shards)))
            self._shards[id(features)] = hit
        return hit[1], hit[2]

    def full(self, local: np.ndarray) -> np.ndarray:
        self.shard.scatter(local, self._full)
        return self._full

    def _sum_over_data(self, buf: np.ndarray) -> np.ndarray:
        if self.data_comm.Get_size() == 1:
            return buf
        total = np.empty_like(buf)
        self.data_comm.Allreduce(buf, total)
        return total

    def __call__(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> Any:
        from .model import Evaluation

        X, y = self._local_examples(features, labels)
        s_local, s_total = X.shape[0], features.shape[0]
        if s_local == 0 and self.comm is not None:
            raise ValueError(f"{s_total} examples cannot be split over parallel.data_procs = "
                             f"{self.data_comm.Get_size()} processes when the layers are split too")
        if s_local:
            full = self.full(theta)
            self._fetch_foreign(theta)
            ev = self.inner(full, X, y, regularized=False)
            loss, correct, grad = ev.loss, float(ev.correct), ev.gradient[self.shard.index]
        else:  # more data processes than examples: this one contributes nothing
            loss, correct, grad = 0.0, 0.0, np.zeros(self.shard.size)
        if self.data_comm.Get_size() > 1:  # mean over all examples: weight each share by its size
            total = self._sum_over_data(np.concatenate([[loss * s_local, correct], grad * s_local]))
            loss, correct, grad = total[0] / s_total, total[1], total[2:] / s_total
        reg, greg = self.shard.regularization(theta)
        out = Evaluation(objective=loss + reg, loss=loss, regularization=reg, accuracy=correct / s_total,
                         correct=int(round(correct)), examples=s_total, gradient=grad + greg)
        self.inner.remember(out, theta, features)
        self.evaluations = self.inner.evaluations
        return out

    def validate(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) without gradient: with split layers a forward pipeline
        over the layer processes, else the serial forward sweep."""
        X, y = self._local_examples(features, labels)
        s = X.shape[0]
        if s == 0:
            loss_sum, correct = 0.0, 0.0
        elif self.comm is None:
            ev = self.model.evaluate(X, y, theta=self.full(theta), gradient=False, regularized=False)
            loss_sum, correct = ev.loss * s, float(ev.correct)
        else:
            solver = self._val.get(s)
            if solver is None:
                one = {"max_levels": 1, "threads": self.inner.options["threads"]}
                solver = _core.ResNetMgrit(self.model.core, s, one, one, self.comm)
                self._val[s] = solver
            d = solver.evaluate(self.full(theta), X, y, 0.0, 0.0, 0.0, -1, -1, False)
            loss_sum, correct = d["loss"] * s, float(d["correct"])
        if self.data_comm.Get_size() == 1:
            return float(loss_sum / s), float(correct / s)
        total = self._sum_over_data(np.array([loss_sum, correct]))
        return float(total[0] / features.shape[0]), float(total[1] / features.shape[0])

    def monitor(self) -> Optional[str]:
        """The safeguard's decision, made collectively so every process switches together."""
        if self.grid is None or self.grid.size == 1:
            return self.inner.monitor()
        reasons = self.grid.comm.allgather(self.inner.monitor())
        return next((f"rank {r}: {why}" for r, why in enumerate(reasons) if why), None)

    def cached(self, theta: np.ndarray, features: np.ndarray) -> Any:
        return self.inner.cached(theta, features)

    def __getattr__(self, name: str) -> Any:  # stats, tighten(), summary(), ... of the inner solver
        return getattr(self.inner, name)
