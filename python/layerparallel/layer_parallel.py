"""Training with the layers split over processes: which parameters a process
owns (:class:`LayerShard`, with reproducible inner products and regulariser) and
the gradient solver that splits layers and examples over a :class:`ProcessGrid`
(:class:`LayerParallelSolver`).

The ``layer_procs`` processes of a grid row split the layers into contiguous
blocks (no divisibility needed); the MGRIT engine sends through the row's
engine communicator (:func:`layerparallel.comm.core_comm`). The ``data_procs``
rows split the examples.
"""
from __future__ import annotations

import math

from typing import Any, Optional

import numpy as np

from . import _core
from .comm import SelfComm, comm_exchange, comm_sum
from .grid import ProcessGrid, shard
from .model import Evaluation

__all__ = ["LayerShard", "LayerParallelSolver"]


class LayerShard:
    """Which entries of the flat parameter vector this process owns when the layers
    are split over a layer communicator (an engine communicator, :func:`core_comm`, or None for one
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
        self.comm = comm  # an engine communicator (comm.core_comm), or None: one process
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
        bounds, slots = [0], []
        self.blocks: dict[str, tuple[int, int]] = {}
        self._offsets: dict[str, int] = {}  # per-layer blocks in the full vector
        pos = slot = 0
        for name, off, shape in model.layout:
            n = int(np.prod(shape)) if shape else 1
            if name in self.PER_LAYER:
                per = n // N
                self.blocks[name] = (pos, per)
                self._offsets[name] = off
                idx.append(np.arange(off + a * per, off + b * per))
                for layer in range(a, b):
                    bounds.append(bounds[-1] + per)
                    slots.append(slot + layer)
                slot += N
                pos += (b - a) * per
                continue
            owned = self.last if name.startswith("classifier") else self.first
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
        # The full vector the compiled regulariser reads: the owned entries and, with
        # split layers, the neighbouring layers' rows; nothing else is read.
        self._reg_full = np.zeros(model.size)

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
        layer n (one neighbouring layer is exchanged with each side). The arithmetic is
        the engine's one regulariser (``regularization_values`` of the compiled network,
        per-slot values); the value is their sum, reproducible like :meth:`dot`."""
        r = self.model.regularization
        full = self._reg_full  # only the owned entries and the neighbour rows are ever written
        full[self.index] = local
        a, b = self.layers
        if r.ddt > 0 and self.model.layers > 1 and self.comm is not None and self.comm.size() > 1:
            for k, name in enumerate(self.PER_LAYER):
                pos, per = self.blocks[name]
                blk = local[pos:pos + (b - a) * per].reshape(b - a, per)
                left, right = comm_exchange(self.comm, blk[0], blk[-1], tag=1000 + 2 * k)
                off = self._offsets[name]
                if left is not None:
                    full[off + (a - 1) * per:off + a * per] = left
                if right is not None:
                    full[off + b * per:off + (b + 1) * per] = right
        values, grad = self.model.core.regularization_values(full, a, b, self.first, self.last,
                                                             r.tikhonov, r.classifier, r.ddt)
        return self._reduce(values), grad[self.index]


class LayerParallelSolver:
    """The gradient solver of training: layers split over ``grid.layer_comm`` and
    examples over ``grid.data_comm`` (``grid = None``: one process).

    Wraps a gradient solver (serial sweeps, the serial pipeline or MGRIT; with
    split layers its engine is distributed over the layer processes). Parameters
    and gradients are the owned entries (:class:`LayerShard`); the loss and
    accuracy are summed in the engine over the layer processes and here over the
    data processes; the regulariser is computed per shard. One process goes
    through the same code, so that splitting the layers changes no bit of the
    training (splitting the examples changes the order of the loss sums).
    :class:`layerparallel.Solver` builds one from a mode, MGRIT options and a device."""

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
        self._rows = [(off, int(np.prod(shape)) // N) for name, off, shape in self.model.layout
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
            stats = ev.mgrit
        else:  # more data processes than examples: this one contributes nothing
            loss, correct, grad, stats = 0.0, 0.0, np.zeros(self.shard.size), None
        if self.data_comm.Get_size() > 1:  # mean over all examples: weight each share by its size
            total = self._sum_over_data(np.concatenate([[loss * s_local, correct], grad * s_local]))
            loss, correct, grad = total[0] / s_total, total[1], total[2:] / s_total
        reg, greg = self.shard.regularization(theta)
        if getattr(self.inner, "adaptive", False):  # its tolerance follows the gradient norm
            g = grad + greg
            self.inner.observe_gradient(math.sqrt(self.shard.dot(g, g)))
        out = Evaluation(objective=loss + reg, loss=loss, regularization=reg, accuracy=correct / s_total,
                         correct=int(round(correct)), examples=s_total, gradient=grad + greg, mgrit=stats)
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
