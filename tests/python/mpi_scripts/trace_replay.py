"""Run under mpiexec: trace one simultaneous-mode gradient evaluation with the
layers split over the processes, gather the traces and replay them. Prints one
JSON line on rank 0 with the replay's totals (the test checks their structure)."""
import json

import numpy as np
from mpi4py import MPI

from layerparallel import _core
from layerparallel.model import ResNet
from layerparallel.comm import core_comm
from layerparallel.scaling import Interconnect, replay, trace_summary

comm = MPI.COMM_WORLD
m = ResNet(2, 5, 8, 30, 5.0, "smooth_relu", "dense", seed=0, init="normal", init_opening=1.0, init_hidden=0.1,
           init_classifier=0.1)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((40, 2)), rng.integers(0, 5, 40)
opts = {"cfactor": 2, "min_coarse": 2, "relax": "F,FCF", "threads": 1}
core = core_comm(comm)
s = _core.ResNetMgrit(m.core, 40, opts, opts, core)
s.evaluate(m.theta, X, y, 0.0, 0.0, 0.0, 2, 2, True)
core.start_trace()
d = s.evaluate(m.theta, X, y, 0.0, 0.0, 0.0, 2, 2, True)
trace = core.stop_trace()
traces = comm.gather(trace, root=0)
if comm.Get_rank() == 0:
    r = replay(traces, Interconnect(1e-6, 1e9))
    t = trace_summary(traces)
    recvs = sum(1 for tr in traces for ev in tr if ev[0] == "recv")
    print(json.dumps({"wall": r["wall"], "compute": r["compute"], "messages": r["messages"], "sends": t["messages"],
                      "recvs": recvs, "collectives": t["collectives"], "bytes": r["bytes"],
                      "state_bytes": 40 * 8 * 8}))
