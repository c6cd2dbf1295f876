// Thread-count control shared by the batch loops, the interval loops of the
// MGRIT engine and the BLAS library, so that they never oversubscribe.
#pragma once

namespace layerparallel {

/// Threads used by the next parallel region (0 = all cores). Also caps BLAS.
/// Throws std::invalid_argument naming n unless 0 <= n <= thread_limit().
void set_num_threads(int n);
/// The most threads a parallel region may ask for: 64 per core, and no more than
/// OpenMP's own limit. Far beyond any useful oversubscription, far below where
/// thread creation fails (libgomp aborts near 40000 threads, and crashes beyond).
int thread_limit();
int num_threads();
/// Number of cores OpenMP sees.
int max_threads();

}  // namespace layerparallel
