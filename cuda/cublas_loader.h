// cuBLAS, loaded at run time (internal to cuda/). The wide layers' GEMMs call
// cuBLAS. It is opened with dlopen on first use rather than linked, so a build
// needs no cuBLAS (a toolkit may come without it) and a GPU machine uses its own
// (the CUDA toolkit's, or the nvidia-cublas wheel's, found through
// LD_LIBRARY_PATH or LP_CUBLAS_LIBRARY). The declarations are cuBLAS's
// documented C API (cublas_api.h, CUDA 12/13).
#pragma once

#include <string>

namespace layerparallel {

struct CublasApi {
  using Handle = void*;  // cublasHandle_t (struct cublasContext*)
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*dgemm)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
               const double*, double*, int) = nullptr;
  int (*dgemm_batched)(Handle, int, int, int, int, int, const double*, const double* const*, int,
                       const double* const*, int, const double*, double* const*, int, int) = nullptr;
  std::string error;  // why cuBLAS cannot be used (empty when it can)
};

constexpr int kCublasOpN = 0, kCublasOpT = 1;  // CUBLAS_OP_N, CUBLAS_OP_T

/// The function table, loaded once per process (handles are per backend: a
/// cuBLAS handle must not be used by two host threads at once). Throws
/// std::runtime_error with the reason when cuBLAS cannot be used.
const CublasApi& cublas();

/// Throws std::runtime_error naming `what` unless status is CUBLAS_STATUS_SUCCESS (0).
void check_cublas(int status, const char* what);

}  // namespace layerparallel
