// Thread-count control: OpenMP for our own loops, and the BLAS library's own
// pool when it has one (OpenBLAS), kept at the same count.
#include "layerparallel/threading.h"

#include <omp.h>

#if defined(LP_WITH_BLAS)
#include <cblas.h>
#endif

namespace layerparallel {

namespace {
int g_threads = 0;
}

void set_num_threads(int n) {
  const int t = n > 0 ? n : omp_get_num_procs();
  g_threads = t;
  omp_set_num_threads(t);
  // Nested regions run serially: threads over intervals and threads over
  // examples compose without oversubscription.
  omp_set_max_active_levels(1);
#if defined(LP_WITH_BLAS) && defined(OPENBLAS_VERSION)
  openblas_set_num_threads(t);
#endif
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

int max_threads() { return omp_get_num_procs(); }

}  // namespace layerparallel
