"""Run under mpiexec (argv: layer_procs, then "lbfgs" or "adam"): 40 steps straight
against 20 steps with checkpoints + resume to 40, on this process grid; prints one
JSON line on rank 0: whether parameters and history are equal bit for bit."""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import layerparallel as lp
from layerparallel.checkpoint import Checkpointer

comm = lp.world()


def _abort(kind, value, tb):  # an error on one process ends the job instead of a hang
    import traceback
    traceback.print_exception(kind, value, tb)
    comm.Abort(1)


sys.excepthook = _abort
P = comm.Get_size()
layer_procs, optimizer = int(sys.argv[1]), sys.argv[2]
grid = lp.ProcessGrid.create(comm, layer_procs=layer_procs, data_procs=P // layer_procs)
data = lp.generate_peaks(200, 50, seed=3)
opts = lp.MgritOptions(cfactor=4, min_coarse=2, fwd_iterations=2, bwd_iterations=1)
folder = Path(comm.bcast(tempfile.mkdtemp() if comm.Get_rank() == 0 else None))


def run(max_iter, checkpoint=None, resume=False):
    model = lp.ResNet(2, 5, 8, 30, 5.0, seed=1, init="normal", init_opening=1.0, init_hidden=0.2,
                      init_classifier=0.2, regularization=lp.Regularization(1e-4, 1e-4, 1e-4))
    opt = lp.LBFGS() if optimizer == "lbfgs" else lp.Adam(0.01)
    batch = 0 if optimizer == "lbfgs" else 32
    res = lp.train(model, data, solver=lp.Solver(model, "simultaneous", opts, grid=grid), optimizer=opt,
                   max_iter=max_iter, batch_size=batch, checkpoint=checkpoint, resume=resume)
    return model.theta.copy(), res


theta, straight = run(40)
run(20, Checkpointer(folder, 10, comm))
theta2, resumed = run(40, Checkpointer(folder, 0, comm), resume=True)
skip = ("seconds", "examples_per_second")
same_history = len(straight.history) == len(resumed.history) and all(
    all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a if k not in skip)
    for a, b in zip(straight.history, resumed.history))
if comm.Get_rank() == 0:
    print(json.dumps({"theta": bool(np.array_equal(theta, theta2)), "history": bool(same_history),
                      "files": sorted(p.name for p in (folder / "checkpoint-00000020").iterdir())}))
