// What every kernel body shares (dense_kernels_impl.h describes the bodies and
// their conventions): launch indices, block sizes, the compile-time widths, and
// the cooperative loads into shared memory.
#pragma once

#include <type_traits>

#include "layerparallel/macros.h"

namespace layerparallel::kernels {

/// A launch index or extent (blockIdx, threadIdx, blockDim, gridDim).
struct Idx3 {
  int x, y, z;
};

/// Widest layer the one-thread-per-example kernels take (state in registers, K in shared memory).
constexpr int kMaxWidth = 32;
/// Most classes the classifier kernel takes (per-thread logits).
constexpr int kMaxClasses = 64;

/// Threads per block of the one-thread-per-example kernels.
constexpr int kStepThreads = 128;
/// Threads per block of the reductions (a power of two: the tree halves it).
constexpr int kReduceThreads = 64;
/// Most blocks of the grid-stride residual norm (bounds the serial final sum).
constexpr int kNormMaxBlocks = 1024;

/// Calls f(std::integral_constant<int, W>) with the compile-time width the
/// one-thread-per-example kernels are instantiated for: 8, 16, 32, or 0 (any
/// width, read at run time). Host code: the CUDA launchers, the emulator and the
/// harness tests pick kernels the same way.
template <class F>
inline void with_kernel_width(int w, F&& f) {
  switch (w) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

LP_HOST_DEVICE inline int example_of(Idx3 block, Idx3 thread, Idx3 block_dim) {
  return block.x * block_dim.x + thread.x;
}

/// Cooperative load of K^T ((w, w), row-major K) into shared memory.
LP_HOST_DEVICE inline void load_transposed(Idx3 thread, Idx3 block_dim, int w, const double* LP_RESTRICT K,
                                           double* LP_RESTRICT sh) {
  for (int k = thread.x; k < w * w; k += block_dim.x) sh[k] = K[(k % w) * w + k / w];
}

/// Cooperative copy of n doubles into shared memory.
LP_HOST_DEVICE inline void load_copy(Idx3 thread, Idx3 block_dim, int n, const double* LP_RESTRICT src,
                                     double* LP_RESTRICT sh) {
  for (int k = thread.x; k < n; k += block_dim.x) sh[k] = src[k];
}

}  // namespace layerparallel::kernels
