"""Run under mpiexec: rank 1 fails while the others wait in a collective; the
whole job must end promptly with rank 1's message (never hang)."""
import time

from layerparallel.comm import abort_on_error, world

comm = world()
with abort_on_error(comm):
    if comm.Get_rank() == 1:
        time.sleep(0.5)
        raise RuntimeError("injected failure on rank 1")
    comm.Barrier()  # would wait forever without the abort
