// CPU backend of the dense residual layer: OpenMP over examples, per-example
// math from dense_impl.h for narrow widths, BLAS GEMMs for wide ones.
#include "layerparallel/dense.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "layerparallel/dense_impl.h"
#include "layerparallel/macros.h"

#include "layerparallel/blas.h"

namespace layerparallel {

namespace {

// Parallel regions open only when there is more than one chunk of work: a region
// costs a barrier, and on a loaded machine a barrier costs a scheduler time slice.

// ------------------------------------------------------------------ dispatch

template <class F>
void with_width(int w, F&& f) {
  switch (w) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

inline int n_chunks(int s) { return (s + kReduceChunk - 1) / kReduceChunk; }

// Sums per-chunk partial results in chunk order (deterministic for any thread count).
void reduce_chunks(const std::vector<double>& partial, int chunks, int len, double* out) {
  for (int c = 0; c < chunks; ++c) {
    const double* p = partial.data() + static_cast<std::size_t>(c) * len;
    for (int k = 0; k < len; ++k) out[k] += p[k];
  }
}

// Row-major C = alpha op(A) op(B) + beta C.
void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
          const double* B, int ldb, double beta, double* C, int ldc) {
#if defined(LP_WITH_BLAS)
  LP_BLAS(cblas_dgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
              alpha, A, lda, B, ldb, beta, C, ldc);
#else
  // Fallback for builds without BLAS: correct, cache-unfriendly only for transposed A.
#pragma omp parallel for schedule(static) if (M > 64)
  for (int i = 0; i < M; ++i) {
    double* Ci = C + static_cast<std::size_t>(i) * ldc;
    for (int j = 0; j < N; ++j) Ci[j] = beta == 0.0 ? 0.0 : beta * Ci[j];
    for (int k = 0; k < K; ++k) {
      const double a = alpha * (ta ? A[static_cast<std::size_t>(k) * lda + i] : A[static_cast<std::size_t>(i) * lda + k]);
      if (a == 0.0) continue;
      if (tb) {
        for (int j = 0; j < N; ++j) Ci[j] += a * B[static_cast<std::size_t>(j) * ldb + k];
      } else {
        const double* Bk = B + static_cast<std::size_t>(k) * ldb;
        for (int j = 0; j < N; ++j) Ci[j] += a * Bk[j];
      }
    }
  }
#endif
}

// Examples whose activations one vectorised pass evaluates in the narrow kernels.
constexpr int kActBatch = 8;

// Batching pays off where the activation is a long dependent chain (tanh) and the
// width is known at compile time; ReLU and the smooth ReLU are a few selects.
template <class Act, int W>
constexpr bool batch_activation() {
  return W > 0 && std::is_same<Act, TanhAct>::value;
}

// Examples per block of the narrow adjoint-and-gradient kernel.
constexpr int kGradBatch = 32;

// acc += gscale * D^T U and gb += gscale * sum(D) over nb examples (rows of D, U),
// W known at compile time. The W x W accumulator is taken R rows at a time so that
// those rows stay in vector registers while the examples stream past; every entry
// adds its examples in order, exactly as dense_gradient_example one by one.
template <int W>
inline void dense_gradient_rows(int nb, double gscale, const double* LP_RESTRICT D, const double* LP_RESTRICT U,
                                double* LP_RESTRICT acc, double& gb) {
  constexpr int R = W >= 32 ? 1 : (W >= 16 ? 2 : (W >= 8 ? 4 : W));
  // gscale * D as vectors first; the loop below broadcasts its entries from memory.
  double ds[kGradBatch * W];
  LP_SIMD
  for (int k = 0; k < nb * W; ++k) ds[k] = gscale * D[k];
  for (int r0 = 0; r0 < W; r0 += R) {
    double a[R * W];
    for (int k = 0; k < R * W; ++k) a[k] = acc[r0 * W + k];
    for (int i = 0; i < nb; ++i) {
      const double* ui = U + i * W;
      const double* di = ds + i * W + r0;
      for (int r = 0; r < R; ++r) {
        const double dr = di[r];
        for (int c = 0; c < W; ++c) a[r * W + c] += dr * ui[c];
      }
    }
    for (int k = 0; k < R * W; ++k) acc[r0 * W + k] = a[k];
  }
  for (int i = 0; i < nb; ++i) {
    double sd = 0.0;
    for (int r = 0; r < W; ++r) sd += ds[i * W + r];
    gb += sd;
  }
}

// Scratch that lives per thread, so concurrent interval relaxations never share it.
double* scratch(std::size_t n, int slot) {
  thread_local std::vector<double> buf[2];
  if (buf[slot].size() < n) buf[slot].resize(n);
  return buf[slot].data();
}

}  // namespace

// ------------------------------------------------------------------ narrow blocks (serial)
void dense_step_block(Activation act, int w, const double* Kt, double b, double dt, const double* in,
                      double* out, int s, double* deriv) {
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    with_width(w, [&](auto WC) {
      constexpr int W = decltype(WC)::value;
      int i = 0;
      if (deriv) {
        // The step and act'(.) (the values of dense_deriv_block) from one evaluation
        // of the activation.
        double z[kFusedMaxWidth] = {};
        for (; i < s; ++i) {
          const std::size_t o = static_cast<std::size_t>(i) * w;
          dense_preact_example<W>(w, Kt, b, in + o, z);
          LP_SIMD
          for (int r = 0; r < w; ++r) {
            double f, d;
            Act::fdf(z[r], f, d);
            out[o + r] = in[o + r] + dt * f;
            deriv[o + r] = d;
          }
        }
        return;
      }
      if constexpr (batch_activation<Act, W>()) {
        // kActBatch examples' pre-activations first, then one vectorised tanh over
        // all of them: independent SIMD lanes instead of one latency-bound chain
        // per example. The same operations per entry as dense_step_example.
        double z[kActBatch * W];
        for (; i + kActBatch <= s; i += kActBatch) {
          const double* ui = in + static_cast<std::size_t>(i) * W;
          double* oi = out + static_cast<std::size_t>(i) * W;
          for (int e = 0; e < kActBatch; ++e) dense_preact_example<W>(W, Kt, b, ui + e * W, z + e * W);
          LP_SIMD
          for (int k = 0; k < kActBatch * W; ++k) oi[k] = ui[k] + dt * Act::f(z[k]);
        }
      }
      for (; i < s; ++i)
        dense_step_example<Act, W>(w, Kt, b, dt, in + static_cast<std::size_t>(i) * w,
                                   out + static_cast<std::size_t>(i) * w);
    });
  });
}

void dense_adjoint_block(Activation act, int w, const double* K, const double* Kt, double b, double dt,
                         const double* u, const double* lam_next, double* lam, int s, double* gK, double* gb,
                         double gscale, const double* deriv) {
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    with_width(w, [&](auto WC) {
      constexpr int W = decltype(WC)::value;
      // Four loops instead of one per-example callback with branches: each inner
      // call inlines, so the width-W example stays in registers (the callback
      // version ran at half the speed of the forward step).
      double d[kFusedMaxWidth];
      if (gK) {
        double acc[kFusedMaxWidth * kFusedMaxWidth] = {};
        double gbl = 0.0;
        if constexpr (W > 0) {
          // Blocks of kGradBatch examples: first d (and lam) of every example of the
          // block, then the block's outer products d u^T added row group by row group
          // with the accumulators in registers (dense_gradient_rows). Each gradient
          // entry still sums its examples in order: the same result as one example
          // at a time, at a quarter of the time.
          double db[kGradBatch * W];
          for (int i0 = 0; i0 < s; i0 += kGradBatch) {
            const int nb = std::min(kGradBatch, s - i0);
            const std::size_t o = static_cast<std::size_t>(i0) * W;
            if (deriv) {
              LP_SIMD
              for (int k = 0; k < nb * W; ++k) db[k] = deriv[o + k] * lam_next[o + k];
            } else {
              for (int e = 0; e < nb; ++e) dense_preact_example<W>(W, Kt, b, u + o + e * W, db + e * W);
              LP_SIMD
              for (int k = 0; k < nb * W; ++k) db[k] = Act::df(db[k]) * lam_next[o + k];
            }
            if (lam)
              for (int e = 0; e < nb; ++e) dense_transpose_add<W>(W, K, dt, db + e * W, lam_next + o + e * W, lam + o + e * W);
            dense_gradient_rows<W>(nb, gscale, db, u + o, acc, gbl);
          }
        } else {
          double scratch_lam[kFusedMaxWidth];
          for (int i = 0; i < s; ++i) {
            const std::size_t o = static_cast<std::size_t>(i) * w;
            double* li = lam ? lam + o : scratch_lam;
            if (deriv)
              dense_adjoint_deriv_example<W>(w, K, dt, deriv + o, lam_next + o, d, li);
            else
              dense_adjoint_example<Act, W>(w, K, Kt, b, dt, u + o, lam_next + o, d, li);
            dense_gradient_example<W>(w, gscale, d, u + o, acc, gbl);
          }
        }
        for (int k = 0; k < w * w; ++k) gK[k] += acc[k];
        *gb += gbl;
      } else if (deriv) {
        for (int i = 0; i < s; ++i) {
          const std::size_t o = static_cast<std::size_t>(i) * w;
          dense_adjoint_deriv_example<W>(w, K, dt, deriv + o, lam_next + o, d, lam + o);
        }
      } else {
        int i = 0;
        if constexpr (batch_activation<Act, W>()) {
          double db[kActBatch * W];
          for (; i + kActBatch <= s; i += kActBatch) {
            const std::size_t o = static_cast<std::size_t>(i) * W;
            for (int e = 0; e < kActBatch; ++e) dense_preact_example<W>(W, Kt, b, u + o + e * W, db + e * W);
            LP_SIMD
            for (int k = 0; k < kActBatch * W; ++k) db[k] = Act::df(db[k]) * lam_next[o + k];
            for (int e = 0; e < kActBatch; ++e)
              dense_transpose_add<W>(W, K, dt, db + e * W, lam_next + o + e * W, lam + o + e * W);
          }
        }
        for (; i < s; ++i) {
          const std::size_t o = static_cast<std::size_t>(i) * w;
          dense_adjoint_example<Act, W>(w, K, Kt, b, dt, u + o, lam_next + o, d, lam + o);
        }
      }
    });
  });
}

void dense_deriv_block(Activation act, int w, const double* Kt, double b, const double* u, double* deriv, int s) {
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    with_width(w, [&](auto WC) {
      constexpr int W = decltype(WC)::value;
      for (int i = 0; i < s; ++i)
        dense_deriv_example<Act, W>(w, Kt, b, u + static_cast<std::size_t>(i) * w,
                                    deriv + static_cast<std::size_t>(i) * w);
    });
  });
}

void dense_activation_deriv(Activation act, int w, const double* K, double b, const double* u, double* deriv,
                            int s) {
  if (w <= kFusedMaxWidth) {
    double Kt[kFusedMaxWidth * kFusedMaxWidth];
    transpose_square(w, K, Kt);
    for_each_chunk(s, [&](int r0, int rows) {
      const std::size_t off = static_cast<std::size_t>(r0) * w;
      dense_deriv_block(act, w, Kt, b, u + off, deriv + off, rows);
    });
    return;
  }
  const std::size_t n = static_cast<std::size_t>(s) * w;
  gemm(false, true, s, w, w, 1.0, u, w, K, w, 0.0, deriv, w);
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
#pragma omp parallel for simd schedule(static) if (n > 16384)
    for (std::size_t k = 0; k < n; ++k) deriv[k] = Act::df(deriv[k] + b);
  });
}

// ------------------------------------------------------------------ forward step
void dense_step(Activation act, int w, const double* K, double b, double dt, const double* in,
                double* out, int s, double* deriv) {
  if (w <= kFusedMaxWidth && deriv == nullptr) {
    double Kt[kFusedMaxWidth * kFusedMaxWidth];
    transpose_square(w, K, Kt);
    for_each_chunk(s, [&](int r0, int rows) {
      const std::size_t off = static_cast<std::size_t>(r0) * w;
      dense_step_block(act, w, Kt, b, dt, in + off, out + off, rows);
    });
    return;
  }
  const std::size_t n = static_cast<std::size_t>(s) * w;
  double* Z = scratch(n, 0);
  gemm(false, true, s, w, w, 1.0, in, w, K, w, 0.0, Z, w);
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    if (deriv) {
#pragma omp parallel for simd schedule(static) if (n > 16384)
      for (std::size_t k = 0; k < n; ++k) {
        double f, d;
        Act::fdf(Z[k] + b, f, d);
        out[k] = in[k] + dt * f;
        deriv[k] = d;
      }
    } else {
#pragma omp parallel for simd schedule(static) if (n > 16384)
      for (std::size_t k = 0; k < n; ++k) out[k] = in[k] + dt * Act::f(Z[k] + b);
    }
  });
}

// ------------------------------------------------------------------ adjoint step
void dense_adjoint_step(Activation act, int w, const double* K, double b, double dt, const double* u,
                        const double* lam_next, double* lam, int s, const double* deriv, double* gK,
                        double* gb, double gscale) {
  if (w <= kFusedMaxWidth) {
    const int chunks = n_chunks(s);
    const int len = w * w + 1;
    std::vector<double> partial(gK ? static_cast<std::size_t>(chunks) * len : 0, 0.0);
    double Kt[kFusedMaxWidth * kFusedMaxWidth];
    transpose_square(w, K, Kt);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int c = 0; c < chunks; ++c) {
      const std::size_t off = static_cast<std::size_t>(c) * kReduceChunk * w;
      double* pg = gK ? partial.data() + static_cast<std::size_t>(c) * len : nullptr;
      dense_adjoint_block(act, w, K, Kt, b, dt, u + off, lam_next + off, lam ? lam + off : nullptr,
                          std::min(s - c * kReduceChunk, kReduceChunk), pg, pg ? pg + w * w : nullptr, gscale,
                          deriv ? deriv + off : nullptr);
    }
    if (gK) {
      std::vector<double> sum(len, 0.0);
      reduce_chunks(partial, chunks, len, sum.data());
      for (int k = 0; k < w * w; ++k) gK[k] += sum[k];
      *gb += sum[w * w];
    }
    return;
  }
  // Wide: D = act'(u K^T + b) * lam_next; lam = lam_next + dt D K; gK += gscale D^T u.
  const std::size_t n = static_cast<std::size_t>(s) * w;
  double* D = scratch(n, 1);
  if (deriv == nullptr) {
    gemm(false, true, s, w, w, 1.0, u, w, K, w, 0.0, D, w);
    with_activation(act, [&](auto A) {
      using Act = decltype(A);
#pragma omp parallel for simd schedule(static) if (n > 16384)
      for (std::size_t k = 0; k < n; ++k) D[k] = Act::df(D[k] + b) * lam_next[k];
    });
  } else {
#pragma omp parallel for schedule(static) if (n > 16384)
    for (std::size_t k = 0; k < n; ++k) D[k] = deriv[k] * lam_next[k];
  }
  if (lam) {
    if (lam != lam_next) std::memcpy(lam, lam_next, n * sizeof(double));
    gemm(false, false, s, w, w, dt, D, w, K, w, 1.0, lam, w);
  }
  if (gK) {
    gemm(true, false, w, w, s, gscale, D, w, u, w, 1.0, gK, w);
    const int chunks = n_chunks(s);
    std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int c = 0; c < chunks; ++c) {
      const std::size_t k0 = static_cast<std::size_t>(c) * kReduceChunk * w;
      const std::size_t k1 = std::min(n, static_cast<std::size_t>(c + 1) * kReduceChunk * w);
      double acc = 0.0;
      for (std::size_t k = k0; k < k1; ++k) acc += D[k];
      partial[c] = acc;
    }
    double sd = 0.0;
    for (int c = 0; c < chunks; ++c) sd += partial[c];
    *gb += gscale * sd;
  }
}

void dense_layer_gradient(Activation act, int w, const double* K, double b, const double* u,
                          const double* lam_next, int s, double* gK, double* gb, double gscale,
                          const double* deriv) {
  // The adjoint kernel without the adjoint update (lam = nullptr).
  dense_adjoint_step(act, w, K, b, 0.0, u, lam_next, nullptr, s, deriv, gK, gb, gscale);
}

void activation_apply(Activation act, const double* x, double* f, double* df, std::size_t n) {
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    if (df) {
      LP_SIMD
      for (std::size_t k = 0; k < n; ++k) Act::fdf(x[k], f[k], df[k]);
    } else {
      LP_SIMD
      for (std::size_t k = 0; k < n; ++k) f[k] = Act::f(x[k]);
    }
  });
}

// ------------------------------------------------------------------ openings
void dense_opening(Activation act, int w, int nf, const double* Ko, double bo, const double* X,
                   double* U0, int s) {
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
#pragma omp parallel for schedule(static) if (s > kReduceChunk)
    for (int i = 0; i < s; ++i)
      dense_opening_example<Act>(w, nf, Ko, bo, X + static_cast<std::size_t>(i) * nf,
                                 U0 + static_cast<std::size_t>(i) * w);
  });
}

void dense_opening_gradient(Activation act, int w, int nf, const double* Ko, double bo,
                            const double* X, const double* lam0, int s, double* gKo, double* gbo) {
  const int chunks = n_chunks(s);
  const int len = w * nf + 1;
  std::vector<double> partial(static_cast<std::size_t>(chunks) * len, 0.0);
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int c = 0; c < chunks; ++c) {
      double* pg = partial.data() + static_cast<std::size_t>(c) * len;
      double gbl = 0.0;
      const int i1 = std::min(s, (c + 1) * kReduceChunk);
      for (int i = c * kReduceChunk; i < i1; ++i)
        dense_opening_grad_example<Act>(w, nf, Ko, bo, X + static_cast<std::size_t>(i) * nf,
                                        lam0 + static_cast<std::size_t>(i) * w, pg, gbl);
      pg[w * nf] = gbl;
    }
  });
  std::vector<double> sum(len, 0.0);
  reduce_chunks(partial, chunks, len, sum.data());
  for (int k = 0; k < w * nf; ++k) gKo[k] += sum[k];
  *gbo += sum[w * nf];
}

void expand_opening(int w, int nf, const double* X, double* U0, int s) {
#pragma omp parallel for schedule(static) if (s > kReduceChunk)
  for (int i = 0; i < s; ++i) {
    double* u = U0 + static_cast<std::size_t>(i) * w;
    const double* x = X + static_cast<std::size_t>(i) * nf;
    for (int c = 0; c < nf; ++c) u[c] = x[c];
    for (int c = nf; c < w; ++c) u[c] = 0.0;
  }
}

// ------------------------------------------------------------------ classifier
double classifier_loss(int w, int nc, const double* Wc, const double* mu, const double* U,
                       const std::int64_t* labels, int s, double scale, std::int64_t* correct,
                       double* lam, double* gW, double* gmu) {
  const int chunks = n_chunks(s);
  const bool want_grad = gW != nullptr;
  const int len = want_grad ? nc * w + nc + 2 : 2;
  std::vector<double> partial(static_cast<std::size_t>(chunks) * len, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int c = 0; c < chunks; ++c) {
    std::vector<double> z(nc), delta(nc);
    double* p = partial.data() + static_cast<std::size_t>(c) * len;
    double loss = 0.0, hits = 0.0;
    const int i1 = std::min(s, (c + 1) * kReduceChunk);
    for (int i = c * kReduceChunk; i < i1; ++i) {
      const double* u = U + static_cast<std::size_t>(i) * w;
      bool ok = false;
      loss += softmax_xent_example(w, nc, Wc, mu, u, static_cast<int>(labels[i]), scale, z.data(),
                                   delta.data(), ok);
      hits += ok ? 1.0 : 0.0;
      if (lam) {
        double* l = lam + static_cast<std::size_t>(i) * w;
        for (int k = 0; k < w; ++k) l[k] = 0.0;
        for (int j = 0; j < nc; ++j) {
          const double dj = delta[j];
          const double* Wj = Wc + static_cast<std::size_t>(j) * w;
          for (int k = 0; k < w; ++k) l[k] += Wj[k] * dj;
        }
      }
      if (want_grad) {
        for (int j = 0; j < nc; ++j) {
          double* g = p + 2 + static_cast<std::size_t>(j) * w;
          for (int k = 0; k < w; ++k) g[k] += delta[j] * u[k];
          p[2 + nc * w + j] += delta[j];
        }
      }
    }
    p[0] = loss;
    p[1] = hits;
  }
  std::vector<double> sum(len, 0.0);
  reduce_chunks(partial, chunks, len, sum.data());
  if (want_grad) {
    for (int k = 0; k < nc * w; ++k) gW[k] += sum[2 + k];
    for (int j = 0; j < nc; ++j) gmu[j] += sum[2 + nc * w + j];
  }
  if (correct) *correct = static_cast<std::int64_t>(sum[1]);
  return sum[0];
}

void classifier_logits(int w, int nc, const double* Wc, const double* mu, const double* U, int s,
                       double* Z) {
#pragma omp parallel for schedule(static) if (s > kReduceChunk)
  for (int i = 0; i < s; ++i) {
    const double* u = U + static_cast<std::size_t>(i) * w;
    for (int j = 0; j < nc; ++j) {
      double acc = mu[j];
      const double* Wj = Wc + static_cast<std::size_t>(j) * w;
      for (int k = 0; k < w; ++k) acc += Wj[k] * u[k];
      Z[static_cast<std::size_t>(i) * nc + j] = acc;
    }
  }
}

}  // namespace layerparallel
