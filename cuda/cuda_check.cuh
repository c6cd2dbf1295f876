// Checked CUDA calls and launches: every runtime call and every kernel launch
// goes through these, so a failure throws std::runtime_error with the file, the
// line, the call and CUDA's own message instead of surfacing later elsewhere.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "layerparallel/macros.h"

/// Throws std::runtime_error("CUDA error in <call>: <message> (file:line)") unless call returns cudaSuccess.
#define LP_CUDA_CHECK(call)                                                                            \
  do {                                                                                                 \
    const cudaError_t lp_cuda_err_ = (call);                                                           \
    if (lp_cuda_err_ != cudaSuccess)                                                                   \
      ::layerparallel::detail::throw_runtime(                                                          \
          __FILE__, __LINE__,                                                                          \
          std::string("CUDA error in ") + #call + ": " + cudaGetErrorString(lp_cuda_err_));            \
  } while (0)

/// Launches `kernel` (a plain name or a variable holding a kernel pointer, so
/// template arguments with commas stay out of the macro) and checks the launch.
#define LP_CUDA_LAUNCH(kernel, grid, block, shared_bytes, ...)                                         \
  do {                                                                                                 \
    kernel<<<(grid), (block), (shared_bytes)>>>(__VA_ARGS__);                                          \
    LP_CUDA_CHECK(cudaGetLastError());                                                                 \
  } while (0)
