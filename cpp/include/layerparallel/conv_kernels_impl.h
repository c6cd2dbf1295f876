// Bodies of the CUDA kernels of the 3x3 convolutional residual layer, as
// host/device inline functions of explicit launch indices (the conventions of
// dense_kernels_impl.h: phases split at barriers, every thread of a block runs
// every phase). cuda/conv_kernels.cu calls them with blockIdx/threadIdx/...;
// tests/cpp/test_conv_harness.cpp runs them over the launch grid on the CPU.
// The per-example math is that of conv_impl.h, never a copy of it. These are
// simple direct kernels (no shared-memory tiling): correct first, fast later.
//
// Scratch: the adjoint and gradient kernels need per-example work arrays (the
// preactivation and D = act' * lam_next, sh.size() doubles each). They run a
// grid-stride loop over examples with a capped grid (kConvMaxBlocks), and each
// thread of the grid owns one slice of a global scratch buffer, so the scratch
// is grid.x * block.x slices regardless of the batch size.
#pragma once

#include <cstddef>

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"
#include "layerparallel/dense_kernels_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel::kernels {

/// Threads per block of the conv forward step (one thread per (example, output channel)),
/// the adjoint step and the opening (one thread per example).
constexpr int kConvThreads = 64;
/// Threads per block of the conv gradient (examples per block and round).
constexpr int kConvGradThreads = 32;
/// Most blocks of the grid-stride conv kernels (bounds the global scratch).
constexpr int kConvMaxBlocks = 128;

/// The global index of a thread in a 1-D grid and the number of threads of the grid.
LP_HOST_DEVICE inline int grid_thread(Idx3 block, Idx3 thread, Idx3 block_dim) {
  return block.x * block_dim.x + thread.x;
}
LP_HOST_DEVICE inline int grid_threads(Idx3 block_dim, Idx3 grid_dim) { return block_dim.x * grid_dim.x; }

// ================================================================== forward step
// out = in + dt act(conv(K, in) + bias), one thread per (example i, output
// channel co): q = i C + co over a 1-D grid with grid.x * block.x >= s C.
// The thread writes the preactivation of its channel straight into out (no
// scratch), then out = in + dt act(out) over that channel; deriv (optional)
// receives act'(preactivation). No shared memory, one phase. in != out.

template <class Act>
LP_HOST_DEVICE inline void conv_step_channel(Idx3 block, Idx3 thread, Idx3 block_dim, const ConvShape& sh,
                                             const double* LP_RESTRICT K, const double* LP_RESTRICT bias, double dt,
                                             const double* LP_RESTRICT in, double* LP_RESTRICT out, int s,
                                             double* LP_RESTRICT deriv) {
  const long long q = grid_thread(block, thread, block_dim);
  if (q >= static_cast<long long>(s) * sh.C) return;
  const int i = static_cast<int>(q / sh.C), co = static_cast<int>(q % sh.C);
  const int C = sh.C, P = sh.pixels();
  const std::size_t o = static_cast<std::size_t>(i) * sh.size();
  const std::size_t oc = o + static_cast<std::size_t>(co) * P;
  double* z = out + oc;
  // One output channel of the C -> C convolution: a 1 <- C convolution with row co of K.
  conv_preact_channels(1, C, sh.H, sh.W, sh.bias_per_channel, K + static_cast<std::size_t>(co) * C * 9,
                       sh.bias_per_channel ? bias + co : bias, in + o, z);
  const double* u = in + oc;
  if (deriv) {
    double* dv = deriv + oc;
    for (int p = 0; p < P; ++p) {
      double f, d;
      Act::fdf(z[p], f, d);
      z[p] = u[p] + dt * f;
      dv[p] = d;
    }
  } else {
    for (int p = 0; p < P; ++p) z[p] = u[p] + dt * Act::f(z[p]);
  }
}

// ================================================================== adjoint step
// lam = lam_next + dt conv^T(K, act'(conv(K, u) + bias) * lam_next) (or with the
// stored deriv = act'(.)), one thread per example in a grid-stride loop.
// Scratch: conv_adjoint_scratch(sh) doubles per grid thread (D and z). One phase.

LP_HOST_DEVICE inline std::size_t conv_adjoint_scratch(const ConvShape& sh) {
  return 2 * static_cast<std::size_t>(sh.size());
}

template <class Act>
LP_HOST_DEVICE inline void conv_adjoint_examples(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                                 const ConvShape& sh, const double* LP_RESTRICT K,
                                                 const double* LP_RESTRICT bias, double dt,
                                                 const double* LP_RESTRICT u, const double* LP_RESTRICT deriv,
                                                 const double* LP_RESTRICT lam_next, double* LP_RESTRICT lam, int s,
                                                 double* LP_RESTRICT scratch) {
  const int g = grid_thread(block, thread, block_dim);
  const std::size_t n = sh.size();
  double* d = scratch + static_cast<std::size_t>(g) * conv_adjoint_scratch(sh);
  double* z = d + n;
  for (int i = g; i < s; i += grid_threads(block_dim, grid_dim)) {
    const std::size_t o = static_cast<std::size_t>(i) * n;
    conv_adjoint_example<Act>(sh, K, bias, dt, u + o, deriv ? deriv + o : nullptr, lam_next + o, d, lam + o, z);
  }
}

// ================================================================== layer gradient
// gK += gscale corr(D, u), gb += gscale sums of D, D = act'(conv(K, u) + bias) *
// lam_next (or deriv * lam_next). Block b of a grid of G blocks of T threads
// handles, in round r, the examples i0 + t, i0 = (r G + b) T, t < T:
//   conv_gradient_rows    thread t writes D of example i0 + t into its scratch
//                         slice (b T + t) (sh.size() doubles);
//   -- barrier --
//   conv_gradient_entries thread co (< C) adds the block's examples, in order,
//                         into its own part of the block's partial row:
//                         row co of gK (C*9 entries) and its bias slot (entry
//                         co of C for per-channel bias; P entries for per-pixel
//                         bias, one set per co, so no two threads share one);
//   -- barrier -- (the next round overwrites D).
// Round 0 zeroes the row first. Then conv_gradient_sum adds the rows in block
// order (and, per-pixel, the co slots in channel order) into gK and gb:
// deterministic, independent of scheduling. No shared memory.

LP_HOST_DEVICE inline int conv_gradient_len(const ConvShape& sh) {
  return sh.weight_size() + (sh.bias_per_channel ? sh.C : sh.C * sh.pixels());
}
LP_HOST_DEVICE inline int conv_gradient_out_len(const ConvShape& sh) { return sh.weight_size() + sh.bias_size(); }
LP_HOST_DEVICE inline int conv_gradient_rounds(int s, Idx3 block_dim, Idx3 grid_dim) {
  const int per_round = grid_threads(block_dim, grid_dim);
  return (s + per_round - 1) / per_round;
}

template <class Act>
LP_HOST_DEVICE inline void conv_gradient_rows(int r, Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                              const ConvShape& sh, const double* LP_RESTRICT K,
                                              const double* LP_RESTRICT bias, const double* LP_RESTRICT u,
                                              const double* LP_RESTRICT lam_next, const double* LP_RESTRICT deriv,
                                              int s, double* LP_RESTRICT scratch) {
  const int g = grid_thread(block, thread, block_dim);
  const long long i = static_cast<long long>(r) * grid_threads(block_dim, grid_dim) + g;
  if (i >= s) return;
  const std::size_t n = sh.size(), o = static_cast<std::size_t>(i) * n;
  double* d = scratch + static_cast<std::size_t>(g) * n;
  if (deriv) {
    for (std::size_t k = 0; k < n; ++k) d[k] = deriv[o + k] * lam_next[o + k];
  } else {
    conv_preact_example(sh, K, bias, u + o, d);  // z in place, then D = act'(z) * lam_next
    for (std::size_t k = 0; k < n; ++k) d[k] = Act::df(d[k]) * lam_next[o + k];
  }
}

LP_HOST_DEVICE inline void conv_gradient_entries(int r, Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                                 const ConvShape& sh, const double* LP_RESTRICT u, int s,
                                                 double gscale, const double* LP_RESTRICT scratch,
                                                 double* LP_RESTRICT partial) {
  const int C = sh.C, P = sh.pixels(), len = conv_gradient_len(sh);
  const std::size_t n = sh.size();
  const long long i0 = static_cast<long long>(r) * grid_threads(block_dim, grid_dim) +
                       static_cast<long long>(block.x) * block_dim.x;
  const long long left = s - i0;
  const int rows = left <= 0 ? 0 : (left < block_dim.x ? static_cast<int>(left) : block_dim.x);
  double* row = partial + static_cast<std::size_t>(block.x) * len;
  for (int co = thread.x; co < C; co += block_dim.x) {
    double* gk = row + co * C * 9;
    double* gb = row + sh.weight_size() + (sh.bias_per_channel ? co : co * P);
    if (r == 0) {
      for (int k = 0; k < C * 9; ++k) gk[k] = 0.0;
      for (int k = 0; k < (sh.bias_per_channel ? 1 : P); ++k) gb[k] = 0.0;
    }
    for (int t = 0; t < rows; ++t) {
      const double* d = scratch + (static_cast<std::size_t>(block.x) * block_dim.x + t) * n;
      // Output channel co of the C -> C layer: a 1 <- C gradient with D's channel co.
      conv_gradient_channels(1, C, sh.H, sh.W, sh.bias_per_channel, gscale, d + static_cast<std::size_t>(co) * P,
                             u + static_cast<std::size_t>(i0 + t) * n, gk, gb);
    }
  }
}

/// Thread e (over the grid, e < conv_gradient_out_len) adds entry e of the
/// result, summed over the nblocks partial rows in block order, into gK / gb.
LP_HOST_DEVICE inline void conv_gradient_sum(Idx3 block, Idx3 thread, Idx3 block_dim, const ConvShape& sh,
                                             const double* LP_RESTRICT partial, int nblocks,
                                             double* LP_RESTRICT gK, double* LP_RESTRICT gb) {
  const int e = grid_thread(block, thread, block_dim);
  if (e >= conv_gradient_out_len(sh)) return;
  const int len = conv_gradient_len(sh), nw = sh.weight_size();
  double acc = 0.0;
  if (e < nw) {
    for (int b = 0; b < nblocks; ++b) acc += partial[static_cast<std::size_t>(b) * len + e];
    gK[e] += acc;
  } else if (sh.bias_per_channel) {
    for (int b = 0; b < nblocks; ++b) acc += partial[static_cast<std::size_t>(b) * len + e];
    gb[e - nw] += acc;
  } else {
    const int p = e - nw, P = sh.pixels();
    for (int b = 0; b < nblocks; ++b)
      for (int co = 0; co < sh.C; ++co) acc += partial[static_cast<std::size_t>(b) * len + nw + co * P + p];
    gb[p] += acc;
  }
}

// ================================================================== replicate opening
// u0 = tanh(6 p / 255 - 3) + 1 copied to every channel, one thread per example.

LP_HOST_DEVICE inline void replicate_opening_examples(Idx3 block, Idx3 thread, Idx3 block_dim, const ConvShape& sh,
                                                      const double* LP_RESTRICT pixels, double* LP_RESTRICT U0,
                                                      int s) {
  const int i = grid_thread(block, thread, block_dim);
  if (i >= s) return;
  replicate_opening_example(sh, pixels + static_cast<std::size_t>(i) * sh.pixels(),
                            U0 + static_cast<std::size_t>(i) * sh.size());
}

}  // namespace layerparallel::kernels
