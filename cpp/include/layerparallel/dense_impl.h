// Per-example math of a dense residual layer, written once as host/device
// inline functions. The CPU backend runs them over examples with OpenMP; the
// CUDA kernels run them with one thread per example. W is the width when known
// at compile time (loops unroll, state stays in registers) or 0 for a runtime
// width `wr`.
#pragma once

#include "layerparallel/activation_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel {

template <int W>
LP_HOST_DEVICE inline int width_of(int wr) {
  return W > 0 ? W : wr;
}

/// z = K u + b for one example, from Kt = K^T (vectorises over the rows r).
template <int W>
LP_HOST_DEVICE inline void dense_preact_example(int wr, const double* LP_RESTRICT Kt, double b,
                                                const double* LP_RESTRICT u, double* LP_RESTRICT z) {
  const int w = width_of<W>(wr);
  for (int r = 0; r < w; ++r) z[r] = b;
  for (int c = 0; c < w; ++c) {
    const double uc = u[c];
    const double* Kc = Kt + c * w;
    for (int r = 0; r < w; ++r) z[r] += Kc[r] * uc;
  }
}

/// out = u + dt * act(K u + b) for one example. Kt is K transposed, (w, w)
/// row-major: the update runs over output rows r with contiguous loads, which
/// vectorises (one SIMD register holds a width-8 state).
template <class Act, int W>
LP_HOST_DEVICE inline void dense_step_example(int wr, const double* LP_RESTRICT Kt, double b, double dt,
                                              const double* LP_RESTRICT u, double* LP_RESTRICT out) {
  const int w = width_of<W>(wr);
  dense_preact_example<W>(wr, Kt, b, u, out);
  LP_SIMD
  for (int r = 0; r < w; ++r) out[r] = u[r] + dt * Act::f(out[r]);
}

/// lam = lam_next + dt K^T d for one example (w <= 32, as every caller's scratch).
/// On the host dt d is formed as a vector first and its entries are then broadcast
/// from memory (no scalar multiply and lane shuffle per row); the products are the
/// same as dt * d[r] one row at a time, which a device thread computes directly.
template <int W>
LP_HOST_DEVICE LP_ALWAYS_INLINE void dense_transpose_add(int wr, const double* LP_RESTRICT K, double dt,
                                                         const double* LP_RESTRICT d,
                                                         const double* LP_RESTRICT lam_next,
                                                         double* LP_RESTRICT lam) {
  const int w = width_of<W>(wr);
#if !defined(__CUDA_ARCH__)
  double dd[W > 0 ? W : 32];
  LP_SIMD
  for (int r = 0; r < w; ++r) dd[r] = dt * d[r];
#endif
  for (int c = 0; c < w; ++c) lam[c] = lam_next[c];
  for (int r = 0; r < w; ++r) {
#if defined(__CUDA_ARCH__)
    const double dr = dt * d[r];
#else
    const double dr = dd[r];
#endif
    const double* Kr = K + r * w;
    for (int c = 0; c < w; ++c) lam[c] += Kr[c] * dr;
  }
}

/// Adjoint of one step for one example, linearised about the primal input u:
///   d = act'(K u + b) * lam_next;  lam = lam_next + dt K^T d.
/// Kt is K transposed (for the pre-activation), K itself for K^T d. Writes d
/// (needed for the parameter gradient) and lam.
template <class Act, int W>
LP_HOST_DEVICE inline void dense_adjoint_example(int wr, const double* LP_RESTRICT K,
                                                 const double* LP_RESTRICT Kt, double b, double dt,
                                                 const double* LP_RESTRICT u,
                                                 const double* LP_RESTRICT lam_next,
                                                 double* LP_RESTRICT d, double* LP_RESTRICT lam) {
  const int w = width_of<W>(wr);
  dense_preact_example<W>(wr, Kt, b, u, d);
  LP_SIMD
  for (int r = 0; r < w; ++r) d[r] = Act::df(d[r]) * lam_next[r];
  dense_transpose_add<W>(wr, K, dt, d, lam_next, lam);
}

/// The adjoint step when act'(K u + b) is already known (`deriv`, from the primal
/// state): d = deriv * lam_next; lam = lam_next + dt K^T d. Half the work of
/// dense_adjoint_example; MGRIT reuses one deriv per layer across all cycles.
template <int W>
LP_HOST_DEVICE inline void dense_adjoint_deriv_example(int wr, const double* LP_RESTRICT K, double dt,
                                                       const double* LP_RESTRICT deriv,
                                                       const double* LP_RESTRICT lam_next,
                                                       double* LP_RESTRICT d, double* LP_RESTRICT lam) {
  const int w = width_of<W>(wr);
  LP_SIMD
  for (int r = 0; r < w; ++r) d[r] = deriv[r] * lam_next[r];
  dense_transpose_add<W>(wr, K, dt, d, lam_next, lam);
}

/// deriv = act'(K u + b) for one example (Kt = K^T).
template <class Act, int W>
LP_HOST_DEVICE inline void dense_deriv_example(int wr, const double* LP_RESTRICT Kt, double b,
                                               const double* LP_RESTRICT u, double* LP_RESTRICT deriv) {
  const int w = width_of<W>(wr);
  dense_preact_example<W>(wr, Kt, b, u, deriv);
  LP_SIMD
  for (int r = 0; r < w; ++r) deriv[r] = Act::df(deriv[r]);
}

/// Kt = K^T for a (w, w) matrix.
LP_HOST_DEVICE inline void transpose_square(int w, const double* LP_RESTRICT K, double* LP_RESTRICT Kt) {
  for (int r = 0; r < w; ++r)
    for (int c = 0; c < w; ++c) Kt[c * w + r] = K[r * w + c];
}

/// Parameter-gradient contribution of one example: gK += dt d u^T, gb += dt sum(d).
template <int W>
LP_HOST_DEVICE inline void dense_gradient_example(int wr, double dt, const double* LP_RESTRICT d,
                                                  const double* LP_RESTRICT u, double* LP_RESTRICT gK,
                                                  double& gb) {
  const int w = width_of<W>(wr);
  double sd = 0.0;
  for (int r = 0; r < w; ++r) {
    const double dr = dt * d[r];
    sd += dr;
    double* gr = gK + r * w;
    for (int c = 0; c < w; ++c) gr[c] += dr * u[c];
  }
  gb += sd;
}

/// Dense opening u0 = act(Ko y + bo) for one example; Ko is (w, nf).
template <class Act>
LP_HOST_DEVICE inline void dense_opening_example(int w, int nf, const double* LP_RESTRICT Ko, double bo,
                                                 const double* LP_RESTRICT y, double* LP_RESTRICT u0) {
  for (int r = 0; r < w; ++r) {
    double z = bo;
    const double* Kr = Ko + r * nf;
    for (int c = 0; c < nf; ++c) z += Kr[c] * y[c];
    u0[r] = Act::f(z);
  }
}

/// Gradient of the dense opening for one example: gKo += d y^T, gbo += sum d with
/// d = act'(Ko y + bo) * lam0.
template <class Act>
LP_HOST_DEVICE inline void dense_opening_grad_example(int w, int nf, const double* LP_RESTRICT Ko, double bo,
                                                      const double* LP_RESTRICT y,
                                                      const double* LP_RESTRICT lam0,
                                                      double* LP_RESTRICT gKo, double& gbo) {
  for (int r = 0; r < w; ++r) {
    double z = bo;
    const double* Kr = Ko + r * nf;
    for (int c = 0; c < nf; ++c) z += Kr[c] * y[c];
    const double dr = Act::df(z) * lam0[r];
    gbo += dr;
    double* gr = gKo + r * nf;
    for (int c = 0; c < nf; ++c) gr[c] += dr * y[c];
  }
}

/// Softmax cross-entropy of one example with logits z = Wc u + mu (Wc is (nc, w)).
/// Writes p - onehot(label) scaled by `scale` into `delta` (nc entries) and
/// returns the loss; `correct` is set when argmax z == label (first max wins).
LP_HOST_DEVICE inline double softmax_xent_example(int w, int nc, const double* LP_RESTRICT Wc,
                                                  const double* LP_RESTRICT mu,
                                                  const double* LP_RESTRICT u, int label, double scale,
                                                  double* LP_RESTRICT z, double* LP_RESTRICT delta,
                                                  bool& correct) {
  double zmax = -1.0e308;
  int amax = 0;
  for (int k = 0; k < nc; ++k) {
    double s = mu[k];
    const double* Wk = Wc + k * w;
    for (int c = 0; c < w; ++c) s += Wk[c] * u[c];
    z[k] = s;
    if (s > zmax) {
      zmax = s;
      amax = k;
    }
  }
  double sum = 0.0;
  for (int k = 0; k < nc; ++k) {
    delta[k] = std::exp(z[k] - zmax);
    sum += delta[k];
  }
  const double inv = 1.0 / sum;
  for (int k = 0; k < nc; ++k) delta[k] = (delta[k] * inv - (k == label ? 1.0 : 0.0)) * scale;
  correct = (amax == label);
  return -(z[label] - zmax) + std::log(sum);
}

}  // namespace layerparallel
