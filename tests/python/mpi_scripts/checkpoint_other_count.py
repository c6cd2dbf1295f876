"""Run under mpiexec (argv: folder, layer_procs, max_iter, "write" or "resume", mode):
train the small network with checkpoints into folder (write: 20 steps, a checkpoint
every 10), or resume from it; rank 0 saves the parameters and the history (no
wall-clock columns) to folder/result-<processes>.npz."""
import json
import sys
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
folder, layer_procs, max_iter, phase, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \
    sys.argv[5]
P = comm.Get_size()
grid = lp.ProcessGrid.create(comm, layer_procs=layer_procs, data_procs=P // layer_procs)
data = lp.generate_peaks(200, 50, seed=3)
model = lp.ResNet(2, 5, 8, 30, 5.0, seed=1, init="normal", init_opening=1.0, init_hidden=0.2, init_classifier=0.2,
                  regularization=lp.Regularization(1e-4, 1e-4, 1e-4))
solver = lp.Solver(model, mode, lp.MgritOptions(cfactor=4, min_coarse=2), grid=grid)
res = lp.train(model, data, solver=solver, max_iter=max_iter,
               checkpoint=Checkpointer(folder, 10 if phase == "write" else 0, comm if P > 1 else None),
               resume=phase == "resume")
if comm.Get_rank() == 0:
    keep = [{k: v for k, v in row.items() if k != "seconds"} for row in res.history]
    np.savez(folder / f"result-{P}.npz", theta=model.theta, history=np.array(json.dumps(keep)))
