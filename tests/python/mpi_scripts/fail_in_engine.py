"""Run under mpiexec with layers split over the processes: rank 1 fails in the
middle of training while its neighbours wait for its messages inside the MGRIT
engine; the whole job must end promptly with rank 1's message.

With LAYERPARALLEL_COMM=python the failure is raised inside the engine itself
(in rank 1's communicator callback, in the middle of a solve); otherwise just
before rank 1's engine call, while the others already wait in MPI inside theirs."""
import os
import sys

from layerparallel import cli
from layerparallel.comm import PyCoreComm, world
from layerparallel.solver import MgritSolver

calls = {"n": 0}
MESSAGE = "injected failure on rank 1 inside the engine"

if os.environ.get("LAYERPARALLEL_COMM") == "python":
    original = PyCoreComm.isend

    def failing_isend(self, buf, dest, tag):
        calls["n"] += 1
        if self.rank() == 1 and calls["n"] == 25:
            raise RuntimeError(MESSAGE)
        return original(self, buf, dest, tag)

    PyCoreComm.isend = failing_isend
else:
    original_call = MgritSolver.__call__

    def failing_call(self, theta, features, labels, regularized=True):
        calls["n"] += 1
        if self.comm is not None and self.comm.rank() == 1 and calls["n"] == 3:
            raise RuntimeError(MESSAGE)
        return original_call(self, theta, features, labels, regularized)

    MgritSolver.__call__ = failing_call
world()
sys.exit(cli.main(sys.argv[1:]))
