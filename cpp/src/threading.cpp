// Thread-count control: OpenMP for our own loops, and the BLAS library's own
// pool when it has one (OpenBLAS), kept at the same count. Also the build's
// description (build_info.h).
#include "layerparallel/threading.h"

#include <omp.h>

#include <algorithm>

#include <sstream>

#include "layerparallel/blas.h"
#include "layerparallel/build_info.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
int g_threads = 0;
}

int thread_limit() {
  const long per_core = 64L * std::max(1, omp_get_num_procs());
  return static_cast<int>(std::min<long>(per_core, std::max(1, omp_get_thread_limit())));
}

void set_num_threads(int n) {
  LP_REQUIRE(n >= 0 && n <= thread_limit(), "the number of threads must be between 0 (all cores) and "
                                                << thread_limit() << " (64 per core on this machine's "
                                                << omp_get_num_procs() << " cores), got " << n);
  const int t = n > 0 ? n : omp_get_num_procs();
  g_threads = t;
  omp_set_num_threads(t);
  // Nested regions run serially: threads over intervals and threads over
  // examples compose without oversubscription.
  omp_set_max_active_levels(1);
#if defined(LP_WITH_BLAS) && defined(OPENBLAS_VERSION)
  LP_BLAS(openblas_set_num_threads)(t);
#endif
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

int max_threads() { return omp_get_num_procs(); }

BuildInfo build_info() {
  BuildInfo b;
#if defined(LP_BLAS_VENDOR)
  b.blas = LP_BLAS_VENDOR;
#else
  b.blas = "none";
#endif
#if defined(LP_WITH_BLAS) && defined(OPENBLAS_VERSION)
  b.blas_config = LP_BLAS(openblas_get_config)();
  b.blas_config += std::string(" (core ") + LP_BLAS(openblas_get_corename)() + ")";
  b.blas_threads = LP_BLAS(openblas_get_num_threads)();
#endif
#if defined(__AVX512F__)
  b.simd = "AVX-512";
  b.simd_doubles = 8;
#elif defined(__AVX2__)
  b.simd = "AVX2";
  b.simd_doubles = 4;
#elif defined(__AVX__)
  b.simd = "AVX";
  b.simd_doubles = 4;
#elif defined(__SSE2__)
  b.simd = "SSE2";
  b.simd_doubles = 2;
#elif defined(__ARM_NEON)
  b.simd = "NEON";
  b.simd_doubles = 2;
#else
  b.simd = "none";
#endif
#if defined(__FMA__)
  b.simd += "+FMA";
#endif
  b.vector_math =
      "built-in (vector_math.h: branch-free tanh from an expm1 polynomial, max error 2.45 ulp measured, 2.5 tested; ReLU and "
      "smooth ReLU as selects), vectorised by the compiler";
#if defined(_OPENMP)
  b.openmp_version = _OPENMP;
#endif
  b.openmp_threads = num_threads();
  std::ostringstream c;
#if defined(__clang__)
  c << "clang " << __clang_major__ << "." << __clang_minor__;
#elif defined(__GNUC__)
  c << "gcc " << __GNUC__ << "." << __GNUC_MINOR__;
#else
  c << "unknown";
#endif
  b.compiler = c.str();
  return b;
}

}  // namespace layerparallel
