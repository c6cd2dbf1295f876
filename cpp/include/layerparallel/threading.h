// Thread-count control shared by the batch loops, the interval loops of the
// MGRIT engine and the BLAS library, so that they never oversubscribe.
#pragma once

namespace layerparallel {

/// Threads used by the next parallel region (0 = all cores). Also caps BLAS.
void set_num_threads(int n);
int num_threads();
/// Number of cores OpenMP sees.
int max_threads();

}  // namespace layerparallel
