// Batch kernels of a dense residual layer on the CPU. States are (s, w)
// row-major: one example per row. Narrow widths use fused per-example loops
// (dense_impl.h); wide ones a BLAS GEMM with a fused epilogue.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layerparallel/activation_impl.h"

namespace layerparallel {

/// Widths above this use BLAS GEMMs; at or below it, fused per-example loops.
constexpr int kFusedMaxWidth = 32;

/// Examples per deterministic reduction chunk: gradient sums are formed per
/// chunk and added in chunk order, so results do not depend on the thread count.
constexpr int kReduceChunk = 256;

/// Runs body(first_row, rows) over a batch of s examples in kReduceChunk pieces,
/// on OpenMP threads when there is more than one piece (serially when already
/// inside a parallel region, e.g. the MGRIT engine's intervals).
template <class F>
void for_each_chunk(int s, F&& body, int chunk = kReduceChunk) {
  const int chunks = (s + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int c = 0; c < chunks; ++c) body(c * chunk, s - c * chunk < chunk ? s - c * chunk : chunk);
}

/// out = in + dt * act(in K^T + b). If deriv != nullptr it receives act'(in K^T + b)
/// (saves a GEMM in the adjoint of wide layers).
void dense_step(Activation act, int w, const double* K, double b, double dt, const double* in,
                double* out, int s, double* deriv = nullptr);

/// lam = lam_next + dt * (act'(u K^T + b) * lam_next) K, linearised about u
/// (lam may be nullptr to compute only the gradient; it must not alias lam_next).
/// deriv (optional) is act'(u K^T + b) from dense_step. If gK != nullptr the
/// parameter gradient is accumulated: gK += gscale * D^T u, gb += gscale * sum(D) with
/// D = act'(.) * lam_next (gscale is normally dt).
void dense_adjoint_step(Activation act, int w, const double* K, double b, double dt, const double* u,
                        const double* lam_next, double* lam, int s, const double* deriv = nullptr,
                        double* gK = nullptr, double* gb = nullptr, double gscale = 0.0);

/// Parameter gradient only (no adjoint update): gK += gscale * D^T u, gb += gscale * sum(D).
void dense_layer_gradient(Activation act, int w, const double* K, double b, const double* u,
                          const double* lam_next, int s, double* gK, double* gb, double gscale,
                          const double* deriv = nullptr);

/// Dense opening u0 = act(X Ko^T + bo), X is (s, nf), Ko is (w, nf).
void dense_opening(Activation act, int w, int nf, const double* Ko, double bo, const double* X,
                   double* U0, int s);
/// gKo += D^T X, gbo += sum(D) with D = act'(X Ko^T + bo) * lam0.
void dense_opening_gradient(Activation act, int w, int nf, const double* Ko, double bo,
                            const double* X, const double* lam0, int s, double* gKo, double* gbo);
/// Zero-padding opening: U0[:, :nf] = X, the rest 0.
void expand_opening(int w, int nf, const double* X, double* U0, int s);

/// Serial kernels for narrow widths (<= kFusedMaxWidth) on a block of s rows, for
/// callers that parallelise over examples themselves (one parallel region for a
/// whole sweep instead of one per layer). Kt = K^T, transposed once per layer.
/// dense_adjoint_block adds the block's gradient into gK, gb when gK != nullptr.
void dense_step_block(Activation act, int w, const double* Kt, double b, double dt, const double* in,
                      double* out, int s, double* deriv = nullptr);
void dense_adjoint_block(Activation act, int w, const double* K, const double* Kt, double b, double dt,
                         const double* u, const double* lam_next, double* lam, int s, double* gK, double* gb,
                         double gscale, const double* deriv = nullptr);
void dense_deriv_block(Activation act, int w, const double* Kt, double b, const double* u, double* deriv, int s);

/// deriv = act'(u K^T + b) on a batch: the linearisation of a layer about a fixed
/// primal state, computed once and reused by every adjoint step through that layer.
void dense_activation_deriv(Activation act, int w, const double* K, double b, const double* u, double* deriv,
                            int s);

/// f[k] = act(x[k]) and, when df != nullptr, df[k] = act'(x[k]): the vectorised
/// loop the CPU kernels use (vector_math.h), for tests and benchmarks.
void activation_apply(Activation act, const double* x, double* f, double* df, std::size_t n);

/// Softmax cross-entropy of the classifier z = U Wc^T + mu over a batch.
/// Returns the summed loss; `correct` counts argmax hits. With `scale` the
/// per-example gradient weight (1/s for the mean), writes lam_N = scale-weighted
/// dJ/du_N when lam != nullptr and accumulates gW, gmu when non-null.
double classifier_loss(int w, int nc, const double* Wc, const double* mu, const double* U,
                       const std::int64_t* labels, int s, double scale, std::int64_t* correct,
                       double* lam, double* gW, double* gmu);

/// Logits z = U Wc^T + mu, (s, nc).
void classifier_logits(int w, int nc, const double* Wc, const double* mu, const double* U, int s,
                       double* Z);

}  // namespace layerparallel
