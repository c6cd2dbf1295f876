// Compiler glue shared by the CPU and CUDA builds: the one place that spells
// __host__ __device__ and the error-check macros.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define LP_HOST_DEVICE __host__ __device__
#define LP_DEVICE __device__
#else
#define LP_HOST_DEVICE
#define LP_DEVICE
#endif

/// Asks the host compiler to vectorise the loop that follows (gcc -O2 uses a
/// "very cheap" cost model that skips loops of unknown trip count); no-op in nvcc.
#define LP_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define LP_SIMD _Pragma("omp simd")
/// A vectorised sum into `var` (partial sums per lane, added in a fixed order).
#define LP_SIMD_SUM(var) LP_PRAGMA(omp simd reduction(+ : var))
#else
#define LP_SIMD
#define LP_SIMD_SUM(var)
#endif

/// For the small functions of hot loops (activations): a call left out of line
/// stops the loop around it from vectorising.
#if defined(__CUDACC__)
#define LP_ALWAYS_INLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define LP_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LP_ALWAYS_INLINE inline
#endif

#if defined(__CUDACC__) || defined(__GNUC__) || defined(__clang__)
#define LP_RESTRICT __restrict__
#else
#define LP_RESTRICT
#endif

namespace layerparallel::detail {
[[noreturn]] inline void throw_invalid(const char* file, int line, const std::string& msg) {
  (void)file;
  (void)line;
  throw std::invalid_argument(msg);
}
[[noreturn]] inline void throw_runtime(const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << msg << " (" << file << ":" << line << ")";
  throw std::runtime_error(os.str());
}
}  // namespace layerparallel::detail

/// Throws std::invalid_argument (ValueError in Python) with a message built by
/// streaming: LP_REQUIRE(n > 0, "layers must be at least 1, got " << n).
#define LP_REQUIRE(cond, msg)                                                     \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::ostringstream lp_os_;                                                  \
      lp_os_ << msg;                                                              \
      ::layerparallel::detail::throw_invalid(__FILE__, __LINE__, lp_os_.str());   \
    }                                                                             \
  } while (0)

/// Internal invariant: std::runtime_error with file and line.
#define LP_CHECK(cond, msg)                                                       \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::ostringstream lp_os_;                                                  \
      lp_os_ << "internal error: " << msg;                                        \
      ::layerparallel::detail::throw_runtime(__FILE__, __LINE__, lp_os_.str());   \
    }                                                                             \
  } while (0)
