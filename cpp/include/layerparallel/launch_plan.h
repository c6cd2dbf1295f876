// One launch plan per kernel operation: its grid, block, dynamic shared memory
// and, for batched kernels (one batch row per block row, grid.y), the split of
// the rows into launches CUDA accepts. CudaBackend (cuda/) and EmulatedBackend
// (emulated_backend.cpp) take every launch from these functions, so the
// emulator runs exactly the launches a GPU runs, splits included, and a backend
// operation takes any number of chains, layers or batch entries.
//
// A batched kernel indexes its arrays by block row (iv.in[block.y], u[block.y],
// ...). A launch of rows [row0, row0 + grid.y) gets its arguments through
// for_launch(args, launch), which advances the per-row arrays by row0, so the
// kernel bodies never see the split.
//
// Plain C++ (no CUDA header); the plan functions are host code and throw
// std::invalid_argument for a launch CUDA would refuse.
#pragma once

#include <climits>
#include <cstddef>

#include "layerparallel/conv_impl.h"
#include "layerparallel/conv_kernels_impl.h"
#include "layerparallel/dense_kernels_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel::kernels {

// ---- CUDA's limits on one launch (compute capability 8.0 and 9.0)
/// Most blocks along grid.y (and grid.z).
constexpr int kMaxGridRows = 65535;
/// Most blocks along grid.x.
constexpr long long kMaxGridBlocks = 2147483647LL;
/// Most threads of a block.
constexpr int kMaxBlockThreads = 1024;
/// Most dynamic shared memory of a block without a per-kernel opt-in
/// (cudaFuncSetAttribute), which these kernels do not make.
constexpr int kMaxSharedBytes = 48 * 1024;

// ---- block sizes of the kernels not given elsewhere
/// Threads per block of the grid-stride kernels over whole states (elementwise
/// arithmetic, norms, dots, wide epilogues, the reference GEMM); a power of two
/// (the norm's tree halves it).
constexpr int kStateThreads = 256;
/// Most blocks of the grid-stride elementwise, epilogue and reference-GEMM kernels.
constexpr int kStateMaxBlocks = 1024;
/// Threads per block of the final sums (sum_partials, sum_rows, conv_gradient_sum).
constexpr int kSumThreads = 128;

/// The batch rows [row0, row0 + rows) of one launch.
struct RowRange {
  int row0 = 0, rows = 0;
};

/// How many launches `rows` batch rows take (0 for none).
LP_HOST_DEVICE inline int row_launches(int rows) { return rows <= 0 ? 0 : (rows - 1) / kMaxGridRows + 1; }

/// The rows of launch i: full launches of kMaxGridRows first, the rest last.
LP_HOST_DEVICE inline RowRange row_range(int rows, int i) {
  const int row0 = i * kMaxGridRows;
  const int left = rows - row0;
  return {row0, left < kMaxGridRows ? left : kMaxGridRows};
}

/// One kernel launch: grid.y is the launch's row count, its block row y batch row row0 + y.
struct Launch {
  Idx3 grid{0, 0, 0}, block{0, 0, 0};
  int shared_doubles = 0;  ///< dynamic shared memory
  int row0 = 0;
  std::size_t shared_bytes() const { return static_cast<std::size_t>(shared_doubles) * sizeof(double); }
};

/// The launches of one kernel operation: `rows` batch rows (1 for an unbatched
/// kernel) of `blocks` blocks each, in row_launches(rows) launches.
struct LaunchPlan {
  Idx3 block{0, 0, 0};
  int blocks = 0;  ///< grid.x of every launch
  int rows = 0;    ///< batch rows over all launches
  int shared_doubles = 0;

  int launches() const { return blocks > 0 ? row_launches(rows) : 0; }
  Launch launch(int i) const {
    const RowRange r = row_range(rows, i);
    return {Idx3{blocks, r.rows, 1}, block, shared_doubles, r.row0};
  }
  /// f(launch) for every launch, in row order.
  template <class F>
  void each(F&& f) const {
    for (int i = 0; i < launches(); ++i) f(launch(i));
  }
  std::size_t shared_bytes() const { return static_cast<std::size_t>(shared_doubles) * sizeof(double); }
  /// Doubles of a partial buffer with one row of len per block of every batch row.
  std::size_t partial_doubles(int len) const {
    return static_cast<std::size_t>(blocks) * static_cast<std::size_t>(rows) * static_cast<std::size_t>(len);
  }
  /// Threads of one batch row (grid.x * block.x): the grid-stride kernels' scratch slices.
  std::size_t row_threads() const { return static_cast<std::size_t>(blocks) * static_cast<std::size_t>(block.x); }
};

inline long long blocks_needed(long long n, int threads) { return (n + threads - 1) / threads; }

/// A plan checked against CUDA's limits (std::invalid_argument naming `what` otherwise).
inline LaunchPlan make_plan(const char* what, long long blocks, int threads, int rows, long long shared_doubles) {
  LP_REQUIRE(blocks >= 0 && blocks <= kMaxGridBlocks,
             what << ": " << blocks << " blocks exceed CUDA's grid.x limit of " << kMaxGridBlocks);
  LP_REQUIRE(threads >= 1 && threads <= kMaxBlockThreads,
             what << ": " << threads << " threads per block, CUDA takes 1.." << kMaxBlockThreads);
  LP_REQUIRE(shared_doubles >= 0 && shared_doubles * static_cast<long long>(sizeof(double)) <= kMaxSharedBytes,
             what << " needs " << shared_doubles * static_cast<long long>(sizeof(double))
                  << " bytes of shared memory per block, more than the " << kMaxSharedBytes << " a launch takes");
  LP_REQUIRE(rows >= 0, what << ": negative batch (" << rows << ")");
  LaunchPlan p;
  p.block = Idx3{threads, 1, 1};
  p.blocks = static_cast<int>(blocks);
  p.rows = rows;
  p.shared_doubles = static_cast<int>(shared_doubles);
  return p;
}

/// Capped grids of the grid-stride kernels (a loop covers the rest).
inline long long capped(long long blocks, long long cap) { return blocks < cap ? blocks : cap; }

// ================================================================== narrow dense layer (narrow_kernels_impl.h)
// One thread per example: grid.x covers s examples; batched ones take a row per
// chain (block propagation) or per layer (activation derivatives).

inline LaunchPlan plan_dense_step(int w, int s) {
  return make_plan("dense_step", blocks_needed(s, kStepThreads), kStepThreads, 1, dense_step_shared(w));
}
/// deriv: the variant with the stored act'(.) (dense_adjoint_deriv_*).
inline LaunchPlan plan_dense_adjoint(int w, int s, bool deriv) {
  return make_plan("dense_adjoint", blocks_needed(s, kStepThreads), kStepThreads, 1,
                   deriv ? dense_adjoint_deriv_shared(w) : dense_adjoint_shared(w));
}
inline LaunchPlan plan_block_propagate(int w, int s, int chains) {
  return make_plan("block_propagate", blocks_needed(s, kStepThreads), kStepThreads, chains, block_propagate_shared(w));
}
inline LaunchPlan plan_block_adjoint(int w, int s, int chains) {
  return make_plan("block_adjoint", blocks_needed(s, kStepThreads), kStepThreads, chains, block_adjoint_shared(w));
}
inline LaunchPlan plan_layer_derivs(int w, int s, int count) {
  return make_plan("layer_derivs", blocks_needed(s, kStepThreads), kStepThreads, count, layer_derivs_shared(w));
}
/// One row of layer_gradient_len(w) partials per block (then plan_sum_partials).
inline LaunchPlan plan_layer_gradient(int w, int s) {
  return make_plan("layer_gradient", blocks_needed(s, kReduceThreads), kReduceThreads, 1,
                   layer_gradient_shared(w, kReduceThreads));
}
inline LaunchPlan plan_classifier(int nc, int s) {
  return make_plan("classifier", blocks_needed(s, kReduceThreads), kReduceThreads, 1,
                   classifier_shared(nc, kReduceThreads));
}
inline LaunchPlan plan_dense_opening(int s) {
  return make_plan("dense_opening", blocks_needed(s, kStepThreads), kStepThreads, 1, 0);
}
inline LaunchPlan plan_opening_gradient(int w, int s) {
  return make_plan("dense_opening_gradient", blocks_needed(s, kReduceThreads), kReduceThreads, 1,
                   opening_gradient_shared(w, kReduceThreads));
}

// ================================================================== whole states (state_kernels_impl.h)

/// The second kernel of a reduction: one thread per entry of a partial row of len.
inline LaunchPlan plan_sum_partials(int len) {
  return make_plan("sum_partials", blocks_needed(len, kSumThreads), kSumThreads, 1, 0);
}
/// A grid-stride tree reduction over n entries (sumsq_*, dot_load): one partial per
/// block, at most kNormMaxBlocks of them; `rows` batch rows for sum_sq_diff_batch.
inline LaunchPlan plan_tree_reduce(long long n, int rows = 1) {
  return make_plan("a reduction", capped(blocks_needed(n, kStateThreads), kNormMaxBlocks), kStateThreads, rows,
                   kStateThreads);
}
/// sum_rows: one thread per batch row.
inline LaunchPlan plan_sum_rows(int rows) {
  return make_plan("sum_rows", blocks_needed(rows, kSumThreads), kSumThreads, 1, 0);
}
/// Elementwise state arithmetic over n entries; `rows` batch entries for the batched form.
inline LaunchPlan plan_elementwise(long long n, int rows = 1) {
  return make_plan("elementwise", capped(blocks_needed(n, kStateThreads), kStateMaxBlocks), kStateThreads, rows, 0);
}
inline LaunchPlan plan_wide_epilogue(int w, int s, int count) {
  return make_plan("wide_epilogue", capped(blocks_needed(static_cast<long long>(s) * w, kStateThreads), kStateMaxBlocks),
                   kStateThreads, count, 0);
}
/// The emulator's stand-in for one cuBLAS GEMM (gemm_reference): one thread per entry of C.
inline LaunchPlan plan_gemm_reference(int m, int n) {
  return make_plan("gemm_reference", capped(blocks_needed(static_cast<long long>(m) * n, kStateThreads),
                                            kStateMaxBlocks),
                   kStateThreads, 1, 0);
}
/// A batched GEMM goes to cuBLAS in calls of at most kMaxGridRows entries (the
/// batch of some of its kernels is a grid dimension); the emulator splits alike.
/// Call i takes the entries row_range(batch, i).
inline int gemm_calls(int batch) { return row_launches(batch); }

// ================================================================== convolutional layer (conv_kernels_impl.h)

/// One thread per (example, output channel): s C threads, an int index in the body.
inline LaunchPlan plan_conv_step(const ConvShape& sh, int s) {
  const long long threads = static_cast<long long>(s) * sh.C;
  LP_REQUIRE(threads <= INT_MAX, "conv_step: " << s << " examples of " << sh.C
                                               << " channels exceed the kernel's int thread index");
  return make_plan("conv_step", blocks_needed(threads, kConvThreads), kConvThreads, 1, 0);
}
/// Grid-stride over examples; scratch: row_threads() * conv_adjoint_scratch(sh) doubles.
inline LaunchPlan plan_conv_adjoint(int s) {
  return make_plan("conv_adjoint", capped(blocks_needed(s, kConvThreads), kConvMaxBlocks), kConvThreads, 1, 0);
}
/// Rounds over examples; scratch: row_threads() * sh.size() doubles, partials:
/// partial_doubles(conv_gradient_len(sh)), then plan_conv_gradient_sum.
inline LaunchPlan plan_conv_gradient(int s) {
  return make_plan("conv_gradient", capped(blocks_needed(s, kConvGradThreads), kConvMaxBlocks), kConvGradThreads, 1,
                   0);
}
inline LaunchPlan plan_conv_gradient_sum(const ConvShape& sh) {
  return make_plan("conv_gradient_sum", blocks_needed(conv_gradient_out_len(sh), kSumThreads), kSumThreads, 1, 0);
}
inline LaunchPlan plan_replicate_opening(int s) {
  return make_plan("replicate_opening", blocks_needed(s, kConvThreads), kConvThreads, 1, 0);
}

// ================================================================== the arguments of one launch
// The per-row arrays advanced to the launch's first row (null arrays stay null).

template <class T>
LP_HOST_DEVICE inline T* rows_from(T* p, const Launch& l) {
  return p ? p + l.row0 : p;
}

/// Interval c of the launch is interval row0 + c: step_start, the index lists
/// (count_c + 1 per interval, found at step_start[c] + c) and the start states
/// advance by row0; out and rhs are addressed through step_start, so stay.
LP_HOST_DEVICE inline IntervalSteps for_launch(const IntervalSteps& iv, const Launch& l) {
  IntervalSteps r = iv;
  r.intervals = l.grid.y;
  r.step_start = rows_from(iv.step_start, l);
  r.idx = rows_from(iv.idx, l);
  r.in = rows_from(iv.in, l);
  return r;
}
LP_HOST_DEVICE inline PropagateArgs for_launch(const PropagateArgs& a, const Launch& l) {
  PropagateArgs r = a;
  r.iv = for_launch(a.iv, l);
  return r;
}
LP_HOST_DEVICE inline AdjointPropagateArgs for_launch(const AdjointPropagateArgs& a, const Launch& l) {
  AdjointPropagateArgs r = a;
  r.iv = for_launch(a.iv, l);
  return r;
}
/// Row j of the launch is layer first + row0 + j, its deriv block row0 + j.
LP_HOST_DEVICE inline LayerDerivArgs for_launch(const LayerDerivArgs& a, const Launch& l) {
  LayerDerivArgs r = a;
  r.first = a.first + l.row0;
  r.u = rows_from(a.u, l);
  r.deriv = a.deriv + static_cast<std::size_t>(l.row0) * a.s * a.w;
  return r;
}
LP_HOST_DEVICE inline WideArgs for_launch(const WideArgs& a, const Launch& l) {
  WideArgs r = a;
  r.a = rows_from(a.a, l);
  r.b = rows_from(a.b, l);
  r.z = rows_from(a.z, l);
  r.out = rows_from(a.out, l);
  r.rhs = rows_from(a.rhs, l);
  r.dt = rows_from(a.dt, l);
  r.bias = rows_from(a.bias, l);
  return r;
}
LP_HOST_DEVICE inline ElementBatchArgs for_launch(const ElementBatchArgs& e, const Launch& l) {
  ElementBatchArgs r = e;
  r.dst = rows_from(e.dst, l);
  r.a = rows_from(e.a, l);
  r.b = rows_from(e.b, l);
  return r;
}
/// sumsq_batch_store writes row q's partials at q * grid.x: the launch's rows start at row0 * grid.x.
LP_HOST_DEVICE inline double* partial_rows_for_launch(double* partial, const Launch& l) {
  return partial + static_cast<std::size_t>(l.row0) * l.grid.x;
}

}  // namespace layerparallel::kernels
