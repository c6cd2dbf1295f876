"""Predicting wall time on P dedicated processes from traces of real runs.

A traced run (an engine communicator with tracing on, :func:`layerparallel.comm.core_comm`,
e.g. ``solver.comm`` of a :class:`layerparallel.Solver` with split layers) records,
per process and in order, every communication call together with the main
thread's CPU time spent since the previous call (the compute span). Thread CPU
time does not grow when processes share cores, so a run that oversubscribes
this machine still records what each process computes.

:func:`replay` re-runs those event lists on a simple machine model: every
process has its own core; a message of ``b`` bytes posted at time ``t``
arrives at ``t + latency + b / bandwidth``; a wait on a receive ends at the
later of the waiting process's clock and the message's arrival; sends are
buffered (waiting on a send costs nothing); an all-reduce of ``b`` bytes over
``P`` processes releases everyone at the last arrival plus
``2 ceil(log2 P) (latency + b / bandwidth)`` (a broadcast or barrier at half
of that). Receives match sends in order per (source, destination, tag), as in
MPI. The prediction is the latest finishing time over the processes.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Interconnect", "replay", "trace_summary"]


@dataclass(frozen=True)
class Interconnect:
    """Latency (seconds) and bandwidth (bytes per second) of the modelled interconnect."""

    latency: float
    bandwidth: float

    def __post_init__(self) -> None:
        if not (self.latency >= 0 and math.isfinite(self.latency)):
            raise ValueError(f"latency must be a finite number >= 0 seconds, got {self.latency}")
        if not (self.bandwidth > 0):
            raise ValueError(f"bandwidth must be > 0 bytes per second, got {self.bandwidth}")

    def message(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


def _collective_cost(kind: str, nbytes: float, procs: int, net: Interconnect) -> float:
    rounds = math.ceil(math.log2(procs)) if procs > 1 else 0
    if kind == "allreduce":
        return 2 * rounds * net.message(nbytes)
    if kind == "bcast":
        return rounds * net.message(nbytes)
    return 2 * rounds * net.latency  # barrier


def replay(traces: Sequence[Sequence[tuple]], net: Interconnect) -> dict:
    """Predicted wall time of the traced region on ``len(traces)`` dedicated processes.

    ``traces[r]`` is rank r's event list (spans in nanoseconds). Returns a dict with
    ``wall`` (seconds, the latest finish), ``finish`` (per rank), ``compute`` (per
    rank, the sum of spans) and ``messages`` / ``bytes`` (point-to-point totals).
    Raises ValueError when the traces cannot be matched (a receive without its
    send, collectives that do not line up)."""
    P = len(traces)
    if P == 0:
        raise ValueError("replay needs at least one trace")
    clock = [0.0] * P
    pos = [0] * P
    entered = [False] * P          # the current event's span has been added
    arrivals: dict[tuple, list[float]] = defaultdict(list)   # (src, dst, tag) -> arrival times
    posted: dict[tuple, int] = defaultdict(int)              # (src, dst, tag) -> receives posted
    requests: list[dict[int, tuple]] = [dict() for _ in range(P)]
    coll_seq = [0] * P
    coll: dict[int, dict] = {}
    messages = 0
    nbytes_total = 0.0
    compute = [sum(ev[1] for ev in tr) * 1e-9 for tr in traces]

    def step(r: int) -> bool:
        """Advance rank r by one event; False when it is blocked."""
        nonlocal messages, nbytes_total
        ev = traces[r][pos[r]]
        kind = ev[0]
        if not entered[r]:
            clock[r] += ev[1] * 1e-9
            entered[r] = True
        if kind == "send":
            _, _, dest, tag, nb, rid = ev
            arrivals[(r, dest, tag)].append(clock[r] + net.message(nb))
            requests[r][rid] = ("send",)
            messages += 1
            nbytes_total += nb
        elif kind == "recv":
            _, _, src, tag, nb, rid = ev
            key = (src, r, tag)
            requests[r][rid] = ("recv", key, posted[key])
            posted[key] += 1
        elif kind == "wait":
            req = requests[r].get(ev[2])
            if req is None:
                raise ValueError(f"rank {r} waits on an unknown request {ev[2]}")
            if req[0] == "recv":
                _, key, k = req
                if len(arrivals[key]) <= k:
                    return False  # the matching send has not happened yet
                clock[r] = max(clock[r], arrivals[key][k])
            del requests[r][ev[2]]
        elif kind in ("allreduce", "bcast", "barrier"):
            k = coll_seq[r]
            c = coll.setdefault(k, {"kind": kind, "bytes": ev[2], "at": {}, "release": None})
            if c["kind"] != kind:
                raise ValueError(f"collective {k}: rank {r} calls {kind}, another rank {c['kind']}")
            c["at"][r] = clock[r]
            if len(c["at"]) == P and c["release"] is None:
                c["release"] = max(c["at"].values()) + _collective_cost(kind, c["bytes"], P, net)
            if c["release"] is None:
                return False
            clock[r] = c["release"]
            coll_seq[r] += 1
        elif kind != "end":
            raise ValueError(f"unknown trace event {kind!r}")
        pos[r] += 1
        entered[r] = False
        return True

    remaining = sum(len(t) for t in traces)
    while remaining:
        progressed = False
        for r in range(P):
            while pos[r] < len(traces[r]) and step(r):
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = {r: traces[r][pos[r]] for r in range(P) if pos[r] < len(traces[r])}
            raise ValueError(f"the traces cannot be replayed (blocked forever): {stuck}")
    return {"wall": max(clock), "finish": clock, "compute": compute, "messages": messages,
            "bytes": nbytes_total}


def trace_summary(traces: Sequence[Sequence[tuple]]) -> dict:
    """Totals of a set of traces: compute seconds per rank, messages and bytes sent."""
    sends = [ev for tr in traces for ev in tr if ev[0] == "send"]
    return {"compute": [sum(ev[1] for ev in tr) * 1e-9 for tr in traces], "messages": len(sends),
            "bytes": float(sum(ev[4] for ev in sends)),
            "collectives": sum(1 for ev in traces[0] if ev[0] in ("allreduce", "bcast", "barrier"))}


def __getattr__(name: str) -> Any:
    if name == "Network":  # the former name, which clashed with layerparallel.model.Network
        warnings.warn("layerparallel.scaling.Network is renamed Interconnect", DeprecationWarning, stacklevel=2)
        return Interconnect
    raise AttributeError(f"module 'layerparallel.scaling' has no attribute {name!r}")
