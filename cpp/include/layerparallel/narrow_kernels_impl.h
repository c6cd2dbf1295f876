// Kernel bodies of the narrow dense residual layer (w <= kMaxWidth, one thread
// per example, weights in shared memory): the forward and adjoint steps, the
// block propagation of every interval of a level, the activation derivatives,
// the layer gradient, the classifier and the dense opening. Conventions:
// dense_kernels_impl.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layerparallel/activation_impl.h"
#include "layerparallel/dense_impl.h"
#include "layerparallel/kernel_base_impl.h"
#include "layerparallel/macros.h"
#include "layerparallel/state_kernels_impl.h"

namespace layerparallel::kernels {


// ================================================================== forward step
// out = in + dt act(K in + b), one thread per example, grid.x * block.x >= s.
// Shared: w*w doubles (K^T). Phases: dense_step_load | dense_step_compute.

LP_HOST_DEVICE inline int dense_step_shared(int w) { return w * w; }

LP_HOST_DEVICE inline void dense_step_load(Idx3 thread, Idx3 block_dim, int w, const double* K, double* sh) {
  load_transposed(thread, block_dim, w, K, sh);
}

template <class Act, int W>
LP_HOST_DEVICE inline void dense_step_compute(Idx3 block, Idx3 thread, Idx3 block_dim, int w, double b, double dt,
                                              const double* LP_RESTRICT in, double* LP_RESTRICT out, int s,
                                              const double* LP_RESTRICT sh) {
  const int i = example_of(block, thread, block_dim);
  if (i >= s) return;
  const std::size_t o = static_cast<std::size_t>(i) * w;
  dense_step_example<Act, W>(w, sh, b, dt, in + o, out + o);
}

// ================================================================== adjoint step
// lam = lam_next + dt K^T (act'(K u + b) * lam_next), one thread per example,
// linearised about the primal state u. Shared: 2 w*w doubles (K, then K^T).
// Phases: dense_adjoint_load | dense_adjoint_compute. The variant with a known
// deriv = act'(K u + b) needs K only: dense_adjoint_deriv_load | dense_adjoint_deriv_compute.

LP_HOST_DEVICE inline int dense_adjoint_shared(int w) { return 2 * w * w; }

LP_HOST_DEVICE inline void dense_adjoint_load(Idx3 thread, Idx3 block_dim, int w, const double* K, double* sh) {
  load_copy(thread, block_dim, w * w, K, sh);
  load_transposed(thread, block_dim, w, K, sh + w * w);
}

template <class Act, int W>
LP_HOST_DEVICE inline void dense_adjoint_compute(Idx3 block, Idx3 thread, Idx3 block_dim, int w, double b,
                                                 double dt, const double* LP_RESTRICT u,
                                                 const double* LP_RESTRICT lam_next, double* LP_RESTRICT lam, int s,
                                                 const double* LP_RESTRICT sh) {
  const int i = example_of(block, thread, block_dim);
  if (i >= s) return;
  const std::size_t o = static_cast<std::size_t>(i) * w;
  double d[kMaxWidth];
  dense_adjoint_example<Act, W>(w, sh, sh + w * w, b, dt, u + o, lam_next + o, d, lam + o);
}

LP_HOST_DEVICE inline int dense_adjoint_deriv_shared(int w) { return w * w; }

LP_HOST_DEVICE inline void dense_adjoint_deriv_load(Idx3 thread, Idx3 block_dim, int w, const double* K,
                                                    double* sh) {
  load_copy(thread, block_dim, w * w, K, sh);
}

template <int W>
LP_HOST_DEVICE inline void dense_adjoint_deriv_compute(Idx3 block, Idx3 thread, Idx3 block_dim, int w, double dt,
                                                       const double* LP_RESTRICT deriv,
                                                       const double* LP_RESTRICT lam_next, double* LP_RESTRICT lam,
                                                       int s, const double* LP_RESTRICT sh) {
  const int i = example_of(block, thread, block_dim);
  if (i >= s) return;
  const std::size_t o = static_cast<std::size_t>(i) * w;
  double d[kMaxWidth];
  dense_adjoint_deriv_example<W>(w, sh, dt, deriv + o, lam_next + o, d, lam + o);
}

// ================================================================== block propagation
// One launch relaxes every interval of a level: block row grid.y = interval c,
// grid.x * block.x >= s examples. Interval c runs count_c = step_start[c+1] -
// step_start[c] steps through the fine indices idx[step_start[c] + c + k],
// k = 0..count_c (count_c + 1 indices per interval), starting from in[c] and
// writing step k into out[step_start[c] + k]; the last output is the
// predecessor of the next C-point, exactly as Propagator::propagate's outs.
// Each step loads its own layer's weights into shared memory, so the phases per
// step are: load | step, with a barrier after each (the next load overwrites
// the weights the step reads). The state stays in the thread (`cur`).

struct IntervalSteps {
  int intervals = 0;
  const int* step_start = nullptr;  ///< intervals + 1 prefix sums of the step counts
  const int* idx = nullptr;         ///< fine indices, count_c + 1 per interval
  const double* const* in = nullptr;  ///< start state of each interval, (s, w)
  double* const* out = nullptr;       ///< output of each step, (s, w), step_start[intervals] slots
  /// Right-hand side added to each step's output (MGRIT's coarse levels), one
  /// slot per step like out; null (all of it, or a slot) means none.
  const double* const* rhs = nullptr;

  LP_HOST_DEVICE int count(int c) const { return step_start[c + 1] - step_start[c]; }
  LP_HOST_DEVICE int index(int c, int k) const { return idx[step_start[c] + c + k]; }
  LP_HOST_DEVICE double* output(int c, int k) const { return out[step_start[c] + k]; }
  LP_HOST_DEVICE const double* rhs_of(int c, int k) const { return rhs ? rhs[step_start[c] + k] : nullptr; }
};

/// Writes one step's result of example row `o`: dst = nxt (+ g), and carries it in cur.
template <int W>
LP_HOST_DEVICE inline void store_step(int w, const double* LP_RESTRICT nxt, const double* LP_RESTRICT g,
                                      double* LP_RESTRICT dst, double* LP_RESTRICT cur) {
  for (int r = 0; r < width_of<W>(w); ++r) {
    const double v = g ? nxt[r] + g[r] : nxt[r];
    dst[r] = v;
    cur[r] = v;
  }
}

/// Forward: layer idx[k] with step size (idx[k+1] - idx[k]) h (injected weights, coarse step).
struct PropagateArgs {
  int w = 0, s = 0;
  double h = 0.0;
  const double* K = nullptr;     ///< (layers, w, w), layer n at K + n w^2
  const double* bias = nullptr;  ///< (layers)
  IntervalSteps iv;
};

LP_HOST_DEVICE inline int block_propagate_shared(int w) { return w * w; }

LP_HOST_DEVICE inline int block_propagate_steps(Idx3 block, const IntervalSteps& iv) { return iv.count(block.y); }

/// Loads the interval's start state into the thread (first phase, no barrier needed after it).
LP_HOST_DEVICE inline void block_propagate_begin(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int s,
                                                 const IntervalSteps& iv, double* LP_RESTRICT cur) {
  const int i = example_of(block, thread, block_dim);
  if (i >= s) return;
  const double* src = iv.in[block.y] + static_cast<std::size_t>(i) * w;
  for (int r = 0; r < w; ++r) cur[r] = src[r];
}

LP_HOST_DEVICE inline void block_propagate_load(int k, Idx3 block, Idx3 thread, Idx3 block_dim,
                                                const PropagateArgs& a, double* sh) {
  const int n = a.iv.index(block.y, k);
  load_transposed(thread, block_dim, a.w, a.K + static_cast<std::size_t>(n) * a.w * a.w, sh);
}

template <class Act, int W>
LP_HOST_DEVICE inline void block_propagate_step(int k, Idx3 block, Idx3 thread, Idx3 block_dim,
                                                const PropagateArgs& a, const double* LP_RESTRICT sh,
                                                double* LP_RESTRICT cur) {
  const int i = example_of(block, thread, block_dim);
  if (i >= a.s) return;
  const int c = block.y, w = a.w;
  const int n0 = a.iv.index(c, k), n1 = a.iv.index(c, k + 1);
  double nxt[kMaxWidth];
  dense_step_example<Act, W>(w, sh, a.bias[n0], (n1 - n0) * a.h, cur, nxt);
  const std::size_t o = static_cast<std::size_t>(i) * w;
  const double* g = a.iv.rhs_of(c, k);
  store_step<W>(w, nxt, g ? g + o : nullptr, a.iv.output(c, k) + o, cur);
}

// ================================================================== block adjoint propagation
// The same launch structure for the adjoint in reversed index k = N - n
// (ResNetAdjointPropagator::propagate): a step from fine index k0 to k1 maps
// lambda_{n1} to lambda_{n0}, n1 = N - k0 > n0 = N - k1, with layer n0's K, step
// size (n1 - n0) h and the stored deriv_{n0} = act'(K_{n0} u_{n0} + b_{n0}).

struct AdjointPropagateArgs {
  int w = 0, s = 0, layers = 0;
  double h = 0.0;
  const double* K = nullptr;       ///< (layers, w, w)
  const double* deriv = nullptr;   ///< deriv of layer n at deriv + (n - first) s w
  int first = 0;                   ///< first layer held in deriv
  IntervalSteps iv;
};

LP_HOST_DEVICE inline int block_adjoint_shared(int w) { return w * w; }

LP_HOST_DEVICE inline void block_adjoint_load(int k, Idx3 block, Idx3 thread, Idx3 block_dim,
                                              const AdjointPropagateArgs& a, double* sh) {
  const int n0 = a.layers - a.iv.index(block.y, k + 1);
  load_copy(thread, block_dim, a.w * a.w, a.K + static_cast<std::size_t>(n0) * a.w * a.w, sh);
}

template <int W>
LP_HOST_DEVICE inline void block_adjoint_step(int k, Idx3 block, Idx3 thread, Idx3 block_dim,
                                              const AdjointPropagateArgs& a, const double* LP_RESTRICT sh,
                                              double* LP_RESTRICT cur) {
  const int i = example_of(block, thread, block_dim);
  if (i >= a.s) return;
  const int c = block.y, w = a.w;
  const int n1 = a.layers - a.iv.index(c, k), n0 = a.layers - a.iv.index(c, k + 1);
  const std::size_t o = static_cast<std::size_t>(i) * w;
  double d[kMaxWidth], nxt[kMaxWidth];
  dense_adjoint_deriv_example<W>(w, sh, (n1 - n0) * a.h, a.deriv + static_cast<std::size_t>(n0 - a.first) * a.s * w + o, cur,
                                 d, nxt);
  const double* g = a.iv.rhs_of(c, k);
  store_step<W>(w, nxt, g ? g + o : nullptr, a.iv.output(c, k) + o, cur);
}

// ================================================================== activation derivatives
// deriv_j = act'(K_n u_n + b_n) for layers n = first + j, j = 0..count-1 (the
// adjoint's linearisation, computed once per evaluation): block row grid.y = j,
// one thread per example. u[j] points at the state u_n; deriv is (count, s, w).
// Phases: layer_derivs_load | layer_derivs_compute. Shared: w*w doubles (K_n^T).

struct LayerDerivArgs {
  int w = 0, s = 0, first = 0;
  const double* K = nullptr;           ///< (layers, w, w)
  const double* bias = nullptr;        ///< (layers)
  const double* const* u = nullptr;    ///< count state pointers
  double* deriv = nullptr;             ///< (count, s, w)
};

LP_HOST_DEVICE inline int layer_derivs_shared(int w) { return w * w; }

LP_HOST_DEVICE inline void layer_derivs_load(Idx3 block, Idx3 thread, Idx3 block_dim, const LayerDerivArgs& a,
                                             double* sh) {
  const int n = a.first + block.y;
  load_transposed(thread, block_dim, a.w, a.K + static_cast<std::size_t>(n) * a.w * a.w, sh);
}

template <class Act, int W>
LP_HOST_DEVICE inline void layer_derivs_compute(Idx3 block, Idx3 thread, Idx3 block_dim, const LayerDerivArgs& a,
                                                const double* LP_RESTRICT sh) {
  const int i = example_of(block, thread, block_dim);
  if (i >= a.s) return;
  const int j = block.y, w = a.w;
  const std::size_t o = static_cast<std::size_t>(i) * w;
  dense_deriv_example<Act, W>(w, sh, a.bias[a.first + j], a.u[j] + o,
                              a.deriv + static_cast<std::size_t>(j) * a.s * w + o);
}

// ================================================================== layer gradient
// gK += gscale D^T u, gb += gscale sum(D), D = act'(K u + b) * lam_next (or
// deriv * lam_next when deriv is known). Each block writes one row of partials
// (w*w + 1 entries); sum_partials adds the rows in block order.
// Phases: layer_gradient_load | layer_gradient_rows | layer_gradient_entries.
// The block's share is a small GEMM (D_blk^T U_blk): a tree over threads would
// need block.x (w*w + 1) doubles of shared memory (264 KB at w = 32), so the rows
// of D go to shared memory and thread e forms entry e over the block's examples
// in order (deterministic; u is read from global memory, coalesced along c).
// Shared: w*w (K^T) + block.x * w (D) doubles.

LP_HOST_DEVICE inline int layer_gradient_shared(int w, int threads) { return w * w + threads * w; }
LP_HOST_DEVICE inline int layer_gradient_len(int w) { return w * w + 1; }

LP_HOST_DEVICE inline void layer_gradient_load(Idx3 thread, Idx3 block_dim, int w, const double* K,
                                               const double* deriv, double* sh) {
  if (deriv == nullptr) load_transposed(thread, block_dim, w, K, sh);
}

template <class Act, int W>
LP_HOST_DEVICE inline void layer_gradient_rows(Idx3 block, Idx3 thread, Idx3 block_dim, int w, double b,
                                               const double* LP_RESTRICT u, const double* LP_RESTRICT lam_next,
                                               const double* LP_RESTRICT deriv, int s, double* sh) {
  const int i = example_of(block, thread, block_dim);
  double* d = sh + w * w + thread.x * w;
  if (i >= s) {
    for (int r = 0; r < w; ++r) d[r] = 0.0;
    return;
  }
  const std::size_t o = static_cast<std::size_t>(i) * w;
  if (deriv) {
    for (int r = 0; r < w; ++r) d[r] = deriv[o + r] * lam_next[o + r];
  } else {
    dense_deriv_example<Act, W>(w, sh, b, u + o, d);
    for (int r = 0; r < w; ++r) d[r] *= lam_next[o + r];
  }
}

LP_HOST_DEVICE inline void layer_gradient_entries(Idx3 block, Idx3 thread, Idx3 block_dim, int w,
                                                  const double* LP_RESTRICT u, int s, double gscale,
                                                  const double* LP_RESTRICT sh, double* LP_RESTRICT partial) {
  const int i0 = block.x * block_dim.x;
  const int rows = s - i0 < block_dim.x ? s - i0 : block_dim.x;
  const double* D = sh + w * w;
  const int len = layer_gradient_len(w);
  for (int e = thread.x; e < len; e += block_dim.x) {
    double acc = 0.0;
    if (e < w * w) {
      const int r = e / w, c = e % w;
      for (int i = 0; i < rows; ++i)
        acc += (gscale * D[i * w + r]) * u[static_cast<std::size_t>(i0 + i) * w + c];
    } else {
      for (int i = 0; i < rows; ++i)
        for (int r = 0; r < w; ++r) acc += gscale * D[i * w + r];
    }
    partial[static_cast<std::size_t>(block.x) * len + e] = acc;
  }
}

LP_HOST_DEVICE inline PartialTargets layer_gradient_targets(int w, double* gK, double* gb) {
  return matrix_bias_targets(w * w, gK, gb);
}

// ================================================================== classifier
// Softmax cross-entropy per example (one thread each): loss, correct flag and
// lam_N = Wc^T (p - onehot) scale; then the block's partials of
// [loss, hits, gW (nc*w), gmu (nc)] (gradient entries only when wanted).
// Phases: classifier_rows | classifier_entries. Shared: block.x (nc + 2) doubles.

LP_HOST_DEVICE inline int classifier_shared(int nc, int threads) { return threads * (nc + 2); }
LP_HOST_DEVICE inline int classifier_len(int w, int nc, bool grad) { return grad ? 2 + nc * w + nc : 2; }

/// The classifier kernel's limits (host check before a launch): any width, at most
/// kMaxClasses classes (per-thread logits).
inline void require_classifier_shape(int w, int nc) {
  LP_REQUIRE(w >= 1, "the classifier needs a width >= 1, got " << w);
  LP_REQUIRE(nc >= 1 && nc <= kMaxClasses, "the device classifier takes 1.." << kMaxClasses << " classes, got " << nc);
}

LP_HOST_DEVICE inline void classifier_rows(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int nc,
                                           const double* LP_RESTRICT Wc, const double* LP_RESTRICT mu,
                                           const double* LP_RESTRICT U, const std::int64_t* LP_RESTRICT labels,
                                           int s, double scale, double* LP_RESTRICT lam, double* LP_RESTRICT sh) {
  const int i = example_of(block, thread, block_dim);
  double* delta = sh + thread.x * nc;
  double* loss = sh + block_dim.x * nc;
  double* hits = loss + block_dim.x;
  if (i >= s) {
    for (int j = 0; j < nc; ++j) delta[j] = 0.0;
    loss[thread.x] = 0.0;
    hits[thread.x] = 0.0;
    return;
  }
  const std::size_t o = static_cast<std::size_t>(i) * w;
  double z[kMaxClasses];
  bool ok = false;
  loss[thread.x] = softmax_xent_example(w, nc, Wc, mu, U + o, static_cast<int>(labels[i]), scale, z, delta, ok);
  hits[thread.x] = ok ? 1.0 : 0.0;
  if (lam) {
    double* l = lam + o;
    for (int k = 0; k < w; ++k) l[k] = 0.0;
    for (int j = 0; j < nc; ++j) {
      const double dj = delta[j];
      const double* Wj = Wc + j * w;
      for (int k = 0; k < w; ++k) l[k] += Wj[k] * dj;
    }
  }
}

LP_HOST_DEVICE inline void classifier_entries(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int nc,
                                              const double* LP_RESTRICT U, int s, bool grad,
                                              const double* LP_RESTRICT sh, double* LP_RESTRICT partial) {
  const int i0 = block.x * block_dim.x;
  const int rows = s - i0 < block_dim.x ? s - i0 : block_dim.x;
  const double* loss = sh + block_dim.x * nc;
  const double* hits = loss + block_dim.x;
  const int len = classifier_len(w, nc, grad);
  for (int e = thread.x; e < len; e += block_dim.x) {
    double acc = 0.0;
    if (e < 2) {
      const double* v = e == 0 ? loss : hits;
      for (int i = 0; i < rows; ++i) acc += v[i];
    } else if (e < 2 + nc * w) {
      const int j = (e - 2) / w, k = (e - 2) % w;
      for (int i = 0; i < rows; ++i) acc += sh[i * nc + j] * U[static_cast<std::size_t>(i0 + i) * w + k];
    } else {
      const int j = e - 2 - nc * w;
      for (int i = 0; i < rows; ++i) acc += sh[i * nc + j];
    }
    partial[static_cast<std::size_t>(block.x) * len + e] = acc;
  }
}

LP_HOST_DEVICE inline PartialTargets classifier_targets(int w, int nc, double* totals, double* gW, double* gmu) {
  PartialTargets t;
  t.dst[0] = totals;
  t.end[0] = 2;
  t.dst[1] = gW;
  t.end[1] = gW ? 2 + nc * w : 2;
  t.dst[2] = gmu;
  t.end[2] = gW ? 2 + nc * w + nc : 2;
  return t;
}

// ================================================================== the dense opening (w <= kMaxWidth)
// U0 = act(W x + b) per example, one thread each (opening_compute). Its gradient
// d = act'(W x + b) * lam0: each block writes one row of partials [gW (w*nf),
// gb], then sum_partials (matrix_bias_targets). Phases:
// opening_gradient_rows (d rows into shared memory) | opening_gradient_entries.
// W (w, nf) and b (one value) are read from global memory; shared: block.x * w.

LP_HOST_DEVICE inline int opening_gradient_len(int w, int nf) { return w * nf + 1; }
LP_HOST_DEVICE inline int opening_gradient_shared(int w, int threads) { return threads * w; }

template <class Act>
LP_HOST_DEVICE inline void opening_compute(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int nf,
                                           const double* LP_RESTRICT W, const double* LP_RESTRICT b,
                                           const double* LP_RESTRICT X, double* LP_RESTRICT U0, int s) {
  const int i = example_of(block, thread, block_dim);
  if (i >= s) return;
  dense_opening_example<Act>(w, nf, W, *b, X + static_cast<std::size_t>(i) * nf, U0 + static_cast<std::size_t>(i) * w);
}

template <class Act>
LP_HOST_DEVICE inline void opening_gradient_rows(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int nf,
                                                 const double* LP_RESTRICT W, const double* LP_RESTRICT b,
                                                 const double* LP_RESTRICT X, const double* LP_RESTRICT lam0, int s,
                                                 double* sh) {
  const int i = example_of(block, thread, block_dim);
  double* d = sh + thread.x * w;
  if (i >= s) {
    for (int r = 0; r < w; ++r) d[r] = 0.0;
    return;
  }
  const double* x = X + static_cast<std::size_t>(i) * nf;
  const double* l = lam0 + static_cast<std::size_t>(i) * w;
  for (int r = 0; r < w; ++r) {
    double z = *b;
    for (int c = 0; c < nf; ++c) z += W[r * nf + c] * x[c];
    d[r] = Act::df(z) * l[r];
  }
}

LP_HOST_DEVICE inline void opening_gradient_entries(Idx3 block, Idx3 thread, Idx3 block_dim, int w, int nf,
                                                    const double* LP_RESTRICT X, int s, const double* LP_RESTRICT sh,
                                                    double* LP_RESTRICT partial) {
  const int i0 = block.x * block_dim.x;
  const int rows = s - i0 < block_dim.x ? s - i0 : block_dim.x;
  const int len = opening_gradient_len(w, nf);
  for (int e = thread.x; e < len; e += block_dim.x) {
    double acc = 0.0;
    if (e < w * nf) {
      const int r = e / nf, c = e % nf;
      for (int i = 0; i < rows; ++i) acc += sh[i * w + r] * X[static_cast<std::size_t>(i0 + i) * nf + c];
    } else {
      for (int i = 0; i < rows; ++i)
        for (int r = 0; r < w; ++r) acc += sh[i * w + r];
    }
    partial[static_cast<std::size_t>(block.x) * len + e] = acc;
  }
}

}  // namespace layerparallel::kernels
