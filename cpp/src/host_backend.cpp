// The "cpu" backend (backend.h): host memory, the CPU kernels of dense.h and
// conv.h. Narrow dense layers (w <= kFusedMaxWidth) run chains of steps chunk by
// chunk, each chunk of examples through all of a chain's steps while it is in
// cache; wide ones step by step through BLAS GEMMs.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include "layerparallel/backend.h"
#include "layerparallel/conv.h"
#include "layerparallel/dense.h"
#include "layerparallel/dense_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {

// outs[k] += rhs[k] on the rows [off, off + n) of a chunk.
inline void add_rhs(const double* const* rhs, int k, double* out, std::size_t off, std::size_t n) {
  if (rhs && rhs[k])
    for (std::size_t i = 0; i < n; ++i) out[i] += rhs[k][off + i];
}

class HostBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool fuses_chains() const override { return false; }
  int max_classes() const override { return std::numeric_limits<int>::max(); }

  void* allocate_bytes(std::size_t bytes) override { return ::operator new(std::max<std::size_t>(bytes, 1)); }
  void release_bytes(void* p) noexcept override { ::operator delete(p); }
  void upload_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }

  // ---- dense
  void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                     int s) override {
    layerparallel::dense_opening(act, w, nf, W, *b, X, U0, s);
  }
  void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              const double* lam0, int s, double* gW, double* gb) override {
    layerparallel::dense_opening_gradient(act, w, nf, W, *b, X, lam0, s, gW, gb);
  }
  void expand_opening(int w, int nf, const double* X, double* U0, int s) override {
    layerparallel::expand_opening(w, nf, X, U0, s);
  }
  void dense_step(const DenseLayers& L, int n, double dt, const double* in, double* out, int s,
                  double* deriv) override {
    layerparallel::dense_step(L.act, L.w, K(L, n), L.bias[n], dt, in, out, s, deriv);
  }
  void dense_adjoint_step(const DenseLayers& L, int n, double dt, const double* u, const double* lam_next,
                          double* lam, int s, const double* deriv, double* gK, double* gb, double gscale) override {
    if (lam == nullptr)
      dense_layer_gradient(L.act, L.w, K(L, n), L.bias[n], u, lam_next, s, gK, gb, gscale, deriv);
    else
      layerparallel::dense_adjoint_step(L.act, L.w, K(L, n), L.bias[n], dt, u, lam_next, lam, s, deriv, gK, gb,
                                        gscale);
  }
  void dense_deriv(const DenseLayers& L, int n, const double* u, double* deriv, int s) override {
    dense_activation_deriv(L.act, L.w, K(L, n), L.bias[n], u, deriv, s);
  }
  bool dense_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, double* derivs,
                    int first) override;
  bool dense_adjoint_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                            const double* derivs, int first, const double* const* states, double* slots) override;
  std::size_t dense_grad_slot_size(int w) const override {
    return w > kFusedMaxWidth ? 0 : static_cast<std::size_t>(w) * w + 1;
  }
  void dense_reduce_slots(const DenseLayers& L, const double* slots, int a, int b, int s, double* gK,
                          double* gb) override;
  /// Only wide layers keep act'(.) (it saves a GEMM; narrow ones recompute it in registers).
  bool dense_keeps_derivs(int w) const override { return w > kFusedMaxWidth; }

  // ---- classifier
  double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                    int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) override {
    return classifier_loss(w, nc, Wc, mu, U, labels, s, scale, correct, lam, gW, gmu);
  }
  void classifier_logits(int w, int nc, const double* Wc, const double* mu, const double* U, int s,
                         double* Z) override {
    layerparallel::classifier_logits(w, nc, Wc, mu, U, s, Z);
  }

  // ---- conv
  void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                 const double* in, double* out, int s, double* deriv) override {
    layerparallel::conv_step(act, sh, K, bias, dt, in, out, s, deriv);
  }
  void conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                         const double* u, const double* lam_next, double* lam, int s, const double* deriv,
                         double* gK, double* gb, double gscale) override {
    layerparallel::conv_adjoint_step(act, sh, K, bias, dt, u, lam_next, lam, s, deriv, gK, gb, gscale);
  }
  void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) override {
    layerparallel::replicate_opening(sh, pixels, U0, s);
  }
  bool has_conv_opening() const override { return true; }
  void conv_opening(Activation act, const ConvShape& sh, const double* Ko, const double* bo, const double* pixels,
                    double* U0, int s) override;
  void conv_opening_gradient(Activation act, const ConvShape& sh, const double* Ko, const double* bo,
                             const double* pixels, const double* lam0, int s, double* gKo, double* gbo) override;

 private:
  static const double* K(const DenseLayers& L, int n) { return L.K + static_cast<std::size_t>(n) * L.w * L.w; }
};

// Narrow widths: each chunk of examples goes through all the chain's steps in
// cache; with derivs, also act' of each layer stepped through (unit steps).
bool HostBackend::dense_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                               double* derivs, int first) {
  const int w = L.w;
  if (w > kFusedMaxWidth) return false;
  const std::size_t ww = static_cast<std::size_t>(w) * w;
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    const int* idx = c.idx;
    if (derivs)
      for (int k = 0; k < c.count; ++k)
        LP_CHECK(idx[k + 1] == idx[k] + 1, "dense_chains: act' is captured on unit steps only");
    std::vector<double> Kt(static_cast<std::size_t>(c.count) * ww);
    for (int k = 0; k < c.count; ++k) transpose_square(w, K(L, idx[k]), Kt.data() + k * ww);
    for_each_chunk(s, [&](int r0, int rows) {
      const std::size_t off = static_cast<std::size_t>(r0) * w;
      const double* prev = c.in + off;
      for (int k = 0; k < c.count; ++k) {
        double* dk = derivs ? derivs + static_cast<std::size_t>(idx[k] - first) * sz + off : nullptr;
        dense_step_block(L.act, w, Kt.data() + k * ww, L.bias[idx[k]], (idx[k + 1] - idx[k]) * L.h, prev,
                         c.outs[k] + off, rows, dk);
        add_rhs(c.rhs, k, c.outs[k] + off, off, static_cast<std::size_t>(rows) * w);
        prev = c.outs[k] + off;
      }
    });
  }
  return true;
}

// The adjoint chains; with slots, also each layer's parameter-gradient partial
// sum per chunk of examples, from the step's own D (unit steps). Without derivs
// act'(.) is recomputed in registers from the primal states (K^T per step).
bool HostBackend::dense_adjoint_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                                       const double* derivs, int first, const double* const* states,
                                       double* slots) {
  const int w = L.w, N = L.layers;
  if (w > kFusedMaxWidth) return false;
  LP_CHECK(derivs != nullptr || states != nullptr, "dense_adjoint_chains needs act'(.) or the primal states");
  LP_CHECK(slots == nullptr || states != nullptr, "dense_adjoint_chains: the gradient needs the primal states");
  const std::size_t ww = static_cast<std::size_t>(w) * w, slot = ww + 1;
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    const int* idx = c.idx;
    if (slots)
      for (int k = 0; k < c.count; ++k)
        LP_CHECK(idx[k + 1] == idx[k] + 1, "dense_adjoint_chains: the gradient is captured on unit steps only");
    std::vector<double> Kt(derivs ? 0 : static_cast<std::size_t>(c.count) * ww);
    for (int k = 0; k < c.count && !derivs; ++k) transpose_square(w, K(L, N - idx[k + 1]), Kt.data() + k * ww);
    for_each_chunk(s, [&](int r0, int rows) {
      const std::size_t off = static_cast<std::size_t>(r0) * w;
      const std::size_t ch = static_cast<std::size_t>(r0 / kReduceChunk);
      const double* prev = c.in + off;
      for (int k = 0; k < c.count; ++k) {
        const int n1 = N - idx[k], n0 = N - idx[k + 1];
        double* g = slots ? slots + (ch * N + n0) * slot : nullptr;
        if (g) std::fill(g, g + slot, 0.0);
        const double* u = states ? states[n0] + off : nullptr;
        dense_adjoint_block(L.act, w, K(L, n0), derivs ? nullptr : Kt.data() + k * ww, derivs ? 0.0 : L.bias[n0],
                            (n1 - n0) * L.h, u, prev, c.outs[k] + off, rows, g, g ? g + ww : nullptr,
                            g ? L.h : 0.0,
                            derivs ? derivs + static_cast<std::size_t>(n0 - first) * sz + off : nullptr);
        add_rhs(c.rhs, k, c.outs[k] + off, off, static_cast<std::size_t>(rows) * w);
        prev = c.outs[k] + off;
      }
    });
  }
  return true;
}

void HostBackend::dense_reduce_slots(const DenseLayers& L, const double* slots, int a, int b, int s, double* gK,
                                     double* gb) {
  const int w = L.w, N = L.layers;
  const std::size_t ww = static_cast<std::size_t>(w) * w, slot = ww + 1;
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> sum(slot);
  for (int n = a; n < b; ++n) {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int c = 0; c < chunks; ++c) {
      const double* g = slots + (static_cast<std::size_t>(c) * N + n) * slot;
      for (std::size_t k = 0; k < slot; ++k) sum[k] += g[k];
    }
    double* gKn = gK + n * ww;
    for (std::size_t k = 0; k < ww; ++k) gKn[k] += sum[k];
    gb[n] += sum[ww];
  }
}

void HostBackend::conv_opening(Activation act, const ConvShape& sh, const double* Ko, const double* bo,
                               const double* X, double* U0, int s) {
  const int P = sh.pixels();
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    for_each_chunk(s, [&](int r0, int rows) {
      std::vector<double> xs(P);
      for (int i = r0; i < r0 + rows; ++i) {
        for (int p = 0; p < P; ++p) xs[p] = X[static_cast<std::size_t>(i) * P + p] / 255.0;
        double* u = U0 + static_cast<std::size_t>(i) * sh.size();
        conv_preact_channels(sh.C, 1, sh.H, sh.W, sh.bias_per_channel, Ko, bo, xs.data(), u);
        LP_SIMD
        for (int k = 0; k < sh.size(); ++k) u[k] = Act::f(u[k]);
      }
    });
  });
}

void HostBackend::conv_opening_gradient(Activation act, const ConvShape& sh, const double* Ko, const double* bo,
                                        const double* X, const double* lam0, int s, double* gKo, double* gbo) {
  const int P = sh.pixels(), n = sh.size();
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  const int wlen = sh.C * 9, len = wlen + sh.bias_size();
  std::vector<double> partial(static_cast<std::size_t>(chunks) * len, 0.0);
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    for_each_chunk(s, [&](int r0, int rows) {
      std::vector<double> xs(P), d(n);
      double* pg = partial.data() + static_cast<std::size_t>(r0 / kReduceChunk) * len;
      for (int i = r0; i < r0 + rows; ++i) {
        for (int p = 0; p < P; ++p) xs[p] = X[static_cast<std::size_t>(i) * P + p] / 255.0;
        conv_preact_channels(sh.C, 1, sh.H, sh.W, sh.bias_per_channel, Ko, bo, xs.data(), d.data());
        const double* l = lam0 + static_cast<std::size_t>(i) * n;
        LP_SIMD
        for (int k = 0; k < n; ++k) d[k] = Act::df(d[k]) * l[k];
        conv_gradient_channels(sh.C, 1, sh.H, sh.W, sh.bias_per_channel, 1.0, d.data(), xs.data(), pg, pg + wlen);
      }
    });
  });
  for (int c = 0; c < chunks; ++c) {
    const double* p = partial.data() + static_cast<std::size_t>(c) * len;
    for (int k = 0; k < wlen; ++k) gKo[k] += p[k];
    for (int k = 0; k < sh.bias_size(); ++k) gbo[k] += p[wlen + k];
  }
}

}  // namespace

std::shared_ptr<Backend> cpu_backend() {
  static const std::shared_ptr<Backend> cpu = std::make_shared<HostBackend>();
  return cpu;
}

}  // namespace layerparallel
