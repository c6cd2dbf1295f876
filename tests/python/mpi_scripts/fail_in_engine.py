"""Run under mpiexec with layers split over the processes: rank 1's communicator
raises inside the MGRIT engine (in the middle of a solve, while its neighbours
wait for its messages); the whole job must end promptly with rank 1's message."""
import sys

from layerparallel import cli
from layerparallel.parallel import CoreComm, world

calls = {"n": 0}
original = CoreComm.isend


def failing_isend(self, buf, dest, tag):
    calls["n"] += 1
    if self.rank() == 1 and calls["n"] == 25:
        raise RuntimeError("injected failure on rank 1 inside the engine")
    return original(self, buf, dest, tag)


CoreComm.isend = failing_isend
world()
sys.exit(cli.main(sys.argv[1:]))
