"""Run under mpiexec: the public Solver with the layers split over all processes
(N = 30, so coarse steps read layers of the left neighbour) gives, gathered, the
one-process objective and gradient bit for bit in every mode, and lp.train with it
ends in the one-process parameters. Prints one JSON line on rank 0."""
import json

import numpy as np

import layerparallel as lp

comm = lp.world()
P = comm.Get_size()
grid = lp.ProcessGrid.create(comm, layer_procs=P, data_procs=1)
data = lp.generate_peaks(200, 50, seed=3)
opts = lp.MgritOptions(cfactor=4, min_coarse=2, fwd_iterations=2, bwd_iterations=1)
out = {}
for mode in ("serial", "exact", "simultaneous"):
    model = lp.ResNet(2, 5, 8, 30, 5.0, seed=1, init="normal", init_opening=1.0, init_hidden=0.2, init_classifier=0.2,
                      regularization=lp.Regularization(1e-4, 1e-4, 1e-4))
    split = lp.Solver(model, mode, opts, grid=grid)
    alone = lp.Solver(model, mode, opts)
    a = split(split.local(model.theta), data.train_x, data.train_y)
    b = alone(model.theta, data.train_x, data.train_y)
    same = a.objective == b.objective and np.array_equal(split.gather(a.gradient), b.gradient)
    if mode != "serial":
        same = same and a.mgrit["forward"]["residuals"] == b.mgrit["forward"]["residuals"]
    m1, m2 = model.copy(), model.copy()
    lp.train(m1, data, solver=lp.Solver(m1, mode, opts, grid=grid), max_iter=3)
    lp.train(m2, data, solver=lp.Solver(m2, mode, opts), max_iter=3)
    out[mode] = {"evaluation": bool(same), "train": bool(np.array_equal(m1.theta, m2.theta)),
                 "foreign": bool(split._recvs or split._sends)}
flags = comm.allgather(out)
if grid.is_root:
    print(json.dumps({"procs": P, "ranks": flags}))
