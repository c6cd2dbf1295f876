// Kernel bodies over whole states (flat arrays, grid-stride loops): the MGRIT
// engine's elementwise state arithmetic, the fixed-order reductions (residual
// norms, dots, the sums of per-block partials) and the wide layers' epilogues
// around cuBLAS, with the reference GEMM the emulator stands in for cuBLAS with.
// Conventions: dense_kernels_impl.h.
#pragma once

#include <cstddef>

#include "layerparallel/activation_impl.h"
#include "layerparallel/kernel_base_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel::kernels {


// ================================================================== elementwise state arithmetic
// The MGRIT engine's operations on states (StateSpace): a grid-stride loop.
enum class ElementOp : int { Zero = 0, Copy = 1, Add = 2, Sum = 3, Fas = 4 };

struct ElementArgs {
  ElementOp op = ElementOp::Zero;
  double* dst = nullptr;
  const double* a = nullptr;  ///< Copy/Add/Sum: first operand; Fas: g_f (may be null)
  const double* b = nullptr;  ///< Sum: second operand; Fas: the prediction p
  long long n = 0;
};

LP_HOST_DEVICE inline void elementwise(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                       const ElementArgs& e) {
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  for (long long k = example_of(block, thread, block_dim); k < e.n; k += stride) {
    switch (e.op) {
      case ElementOp::Zero: e.dst[k] = 0.0; break;
      case ElementOp::Copy: e.dst[k] = e.a[k]; break;
      case ElementOp::Add: e.dst[k] += e.a[k]; break;
      case ElementOp::Sum: e.dst[k] = e.a[k] + e.b[k]; break;
      case ElementOp::Fas: e.dst[k] = (e.a ? e.a[k] + e.b[k] : e.b[k]) - e.dst[k]; break;
    }
  }
}

// ================================================================== fixed-order sums of block partials
// The second kernel of every reduction: thread e (over the grid) sums entry e
// of the per-block partials (nblocks rows of len) in block order, so the result
// does not depend on scheduling, and adds it into one of up to three
// destinations: entries [0, end[0]) into dst[0], [end[0], end[1]) into dst[1],
// [end[1], end[2]) into dst[2] (a null destination is skipped).

struct PartialTargets {
  double* dst[3] = {nullptr, nullptr, nullptr};
  int end[3] = {0, 0, 0};
};

/// The layouts of the reductions' partial rows: one scalar; [a matrix, a bias]
/// (narrow_kernels_impl.h has the layer gradient's and the classifier's).
LP_HOST_DEVICE inline PartialTargets scalar_target(double* dst) {
  PartialTargets t;
  t.dst[0] = dst;
  t.end[0] = t.end[1] = t.end[2] = 1;
  return t;
}

/// [a matrix of n entries, one bias]: a layer gradient (n = w*w) or the opening's (n = w*nf).
LP_HOST_DEVICE inline PartialTargets matrix_bias_targets(int n, double* gM, double* gb) {
  PartialTargets t;
  t.dst[0] = gM;
  t.end[0] = n;
  t.dst[1] = gb;
  t.end[1] = t.end[2] = n + 1;
  return t;
}

LP_HOST_DEVICE inline void sum_partials(Idx3 block, Idx3 thread, Idx3 block_dim, const double* LP_RESTRICT partial,
                                        int nblocks, int len, PartialTargets t) {
  const int e = example_of(block, thread, block_dim);
  if (e >= len) return;
  double acc = 0.0;
  for (int p = 0; p < nblocks; ++p) acc += partial[static_cast<std::size_t>(p) * len + e];
  int seg = 0, start = 0;
  while (seg < 2 && e >= t.end[seg]) start = t.end[seg++];
  if (t.dst[seg]) t.dst[seg][e - start] += acc;
}

/// Many state operations in one launch (StateSpace::sum_batch / fas_batch): entry
/// q = block row grid.y. Sum: dst = a + b (b[q] null: a copy of a); Fas: dst =
/// a + b - dst (a[q] null: b - dst). The pointer arrays are device memory.
struct ElementBatchArgs {
  ElementOp op = ElementOp::Sum;
  double* const* dst = nullptr;
  const double* const* a = nullptr;
  const double* const* b = nullptr;
  long long n = 0;
};

LP_HOST_DEVICE inline void elementwise_batch(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                             const ElementBatchArgs& e) {
  const int q = block.y;
  double* d = e.dst[q];
  const double* a = e.a[q];
  const double* b = e.b[q];
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  for (long long k = example_of(block, thread, block_dim); k < e.n; k += stride) {
    if (e.op == ElementOp::Fas)
      d[k] = (a ? a[k] + b[k] : b[k]) - d[k];
    else
      d[k] = b ? a[k] + b[k] : a[k];
  }
}

// ================================================================== wide layers (w > kMaxWidth)
// A wide layer's matrix products are cuBLAS GEMMs (batched over the intervals
// of a level or the layers of a launch); these bodies are the elementwise
// epilogues around them. Batch entry q = block row grid.y, a grid-stride loop
// over its s w entries. All arrays are device memory; rhs and its entries may
// be null.
//   Step:       out = a + dt act(z + bias) (+ rhs)   after z = K a      (forward step)
//   Deriv:      out = act'(z + bias)                 after z = K u      (linearisation)
//   AdjointPre: z = dt (b * a), out = a (+ rhs)      before out += K^T z (adjoint, b = act'(.))
//   Product:    z = a * b                                                (D of the layer gradient)
//   Activate:   out = act(z + bias)                  after z = W x      (the dense opening)
enum class WideOp : int { Step = 0, Deriv = 1, AdjointPre = 2, Product = 3, Activate = 4 };

struct WideArgs {
  WideOp op = WideOp::Step;
  int w = 0, s = 0;
  const double* const* a = nullptr;
  const double* const* b = nullptr;
  double* const* z = nullptr;
  double* const* out = nullptr;
  const double* const* rhs = nullptr;
  const double* dt = nullptr;            ///< per entry
  const double* const* bias = nullptr;   ///< per entry: the layer's bias value
};

template <class Act>
LP_HOST_DEVICE inline void wide_epilogue(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim, const WideArgs& a) {
  const int q = block.y;
  const long long n = static_cast<long long>(a.s) * a.w;
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  const double* g = a.rhs ? a.rhs[q] : nullptr;
  for (long long k = static_cast<long long>(block.x) * block_dim.x + thread.x; k < n; k += stride) {
    switch (a.op) {
      case WideOp::Step: {
        const double v = a.a[q][k] + a.dt[q] * Act::f(a.z[q][k] + *a.bias[q]);
        a.out[q][k] = g ? v + g[k] : v;
        break;
      }
      case WideOp::Deriv: a.out[q][k] = Act::df(a.z[q][k] + *a.bias[q]); break;
      case WideOp::AdjointPre: {
        const double c = a.a[q][k];
        a.z[q][k] = a.dt[q] * (a.b[q][k] * c);
        a.out[q][k] = g ? c + g[k] : c;
        break;
      }
      case WideOp::Product: a.z[q][k] = a.a[q][k] * a.b[q][k]; break;
      case WideOp::Activate: a.out[q][k] = Act::f(a.z[q][k] + *a.bias[q]); break;
    }
  }
}

/// Column-major C = alpha op(A) op(B) + beta C (cuBLAS's dgemm), one output entry
/// per thread over a grid-stride loop: the emulator's stand-in for cuBLAS, so that
/// the wide path's orchestration runs without a GPU. beta = 0 never reads C.
struct GemmArgs {
  bool ta = false, tb = false;
  int m = 0, n = 0, k = 0;
  double alpha = 1.0, beta = 0.0;
  const double* A = nullptr;
  int lda = 0;
  const double* B = nullptr;
  int ldb = 0;
  double* C = nullptr;
  int ldc = 0;
};

LP_HOST_DEVICE inline void gemm_reference(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim, const GemmArgs& g) {
  const long long total = static_cast<long long>(g.m) * g.n;
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  for (long long e = static_cast<long long>(block.x) * block_dim.x + thread.x; e < total; e += stride) {
    const int i = static_cast<int>(e % g.m), j = static_cast<int>(e / g.m);
    double acc = 0.0;
    for (int l = 0; l < g.k; ++l) {
      const double av = g.ta ? g.A[l + static_cast<std::size_t>(i) * g.lda] : g.A[i + static_cast<std::size_t>(l) * g.lda];
      const double bv = g.tb ? g.B[j + static_cast<std::size_t>(l) * g.ldb] : g.B[l + static_cast<std::size_t>(j) * g.ldb];
      acc += av * bv;
    }
    double* c = g.C + i + static_cast<std::size_t>(j) * g.ldc;
    *c = g.beta == 0.0 ? g.alpha * acc : g.alpha * acc + g.beta * *c;
  }
}

/// sum_k (scale a_k) b_k: the first phase of a scaled dot product (then
/// sumsq_tree, sumsq_store and sum_partials, as for the residual norm).
LP_HOST_DEVICE inline void dot_load(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                    const double* LP_RESTRICT a, const double* LP_RESTRICT b, long long n,
                                    double scale, double* sh) {
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  double acc = 0.0;
  for (long long k = example_of(block, thread, block_dim); k < n; k += stride) acc += (scale * a[k]) * b[k];
  sh[thread.x] = acc;
}

// ================================================================== residual norm
// sum_k (a_k - b_k)^2 (b may be null) over n entries: a grid-stride loop per
// thread, a shared-memory tree per block (block.x a power of two), one partial
// per block, then sum_partials (len 1) in block order.
// Phases: sumsq_load | sumsq_tree(stride) for stride = block.x/2 .. 1 | sumsq_store.
// Shared: block.x doubles.

LP_HOST_DEVICE inline void sumsq_load(Idx3 block, Idx3 thread, Idx3 block_dim, Idx3 grid_dim,
                                      const double* LP_RESTRICT a, const double* LP_RESTRICT b, long long n,
                                      double* sh) {
  const long long stride = static_cast<long long>(block_dim.x) * grid_dim.x;
  double acc = 0.0;
  for (long long k = example_of(block, thread, block_dim); k < n; k += stride) {
    const double dk = b ? a[k] - b[k] : a[k];
    acc += dk * dk;
  }
  sh[thread.x] = acc;
}

LP_HOST_DEVICE inline void sumsq_tree(Idx3 thread, int stride, double* sh) {
  if (thread.x < stride) sh[thread.x] += sh[thread.x + stride];
}

LP_HOST_DEVICE inline void sumsq_store(Idx3 block, Idx3 thread, const double* sh, double* partial) {
  if (thread.x == 0) partial[block.x] = sh[0];
}

// Batched sums of squares (StateSpace::sum_sq_diff_batch): block row grid.y = q
// reduces a[q] - b[q] exactly as the single reduction does (the same grid.x
// blocks), writing partial row q; then sum_rows adds each row in block order.
LP_HOST_DEVICE inline void sumsq_batch_store(Idx3 block, Idx3 thread, Idx3 grid_dim, const double* sh,
                                             double* partial) {
  if (thread.x == 0) partial[static_cast<std::size_t>(block.y) * grid_dim.x + block.x] = sh[0];
}

/// out[q] = the sum of row q of partial (rows x len), in order; one thread per row.
LP_HOST_DEVICE inline void sum_rows(Idx3 block, Idx3 thread, Idx3 block_dim, const double* LP_RESTRICT partial,
                                    int rows, int len, double* LP_RESTRICT out) {
  const int q = example_of(block, thread, block_dim);
  if (q >= rows) return;
  double acc = 0.0;
  for (int p = 0; p < len; ++p) acc += partial[static_cast<std::size_t>(q) * len + p];
  out[q] = acc;
}

}  // namespace layerparallel::kernels
