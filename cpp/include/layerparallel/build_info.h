// What this build of the engine is made of, for `layerparallel info` and the
// benchmarks' headers: the BLAS and its threads, the SIMD width the kernels were
// compiled for, the vector math, OpenMP.
#pragma once

#include <string>

namespace layerparallel {

struct BuildInfo {
  std::string blas;            ///< "scipy-openblas32 0.3.x", "system (libopenblas.so)" or "none"
  std::string blas_config;     ///< OpenBLAS's own description (core, threading), or ""
  int blas_threads = 0;        ///< the BLAS pool's threads (0 when unknown or no BLAS)
  std::string simd;            ///< instruction set the kernels were compiled for
  int simd_doubles = 1;        ///< float64 lanes of one vector register
  std::string vector_math;     ///< how activations are evaluated
  int openmp_version = 0;      ///< _OPENMP (yyyymm)
  int openmp_threads = 0;      ///< threads of the next parallel region
  std::string compiler;
};

BuildInfo build_info();

}  // namespace layerparallel
