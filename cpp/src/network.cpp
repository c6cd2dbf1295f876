// The dense residual network: validation, parameter layout, serial sweeps,
// objective and gradient (ALGORITHM.md sections 1-2).
#include "layerparallel/network.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "layerparallel/dense.h"
#include "layerparallel/dense_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
// Per-thread scratch reused across evaluations: a fresh 10-100 MB allocation per
// gradient would cost more in page faults than the sweeps themselves.
enum Slot { kStates = 0, kDerivs, kLam, kLam2, kLamN, kSlots };
double* workspace(Slot slot, std::size_t n) {
  thread_local std::vector<double> buf[kSlots];
  if (buf[slot].size() < n) {
    buf[slot].clear();
    buf[slot].shrink_to_fit();
    buf[slot].resize(n);
  }
  return buf[slot].data();
}
}  // namespace

Activation parse_activation(const std::string& name) {
  if (name == "tanh") return Activation::Tanh;
  if (name == "relu") return Activation::Relu;
  if (name == "smooth_relu") return Activation::SmoothRelu;
  LP_REQUIRE(false, "activation must be one of tanh, relu, smooth_relu, got '" << name << "'");
}

Opening parse_opening(const std::string& name) {
  if (name == "dense") return Opening::Dense;
  if (name == "expand") return Opening::Expand;
  LP_REQUIRE(false, "opening must be one of dense, expand, got '" << name << "'");
}

std::string activation_name(Activation a) {
  switch (a) {
    case Activation::Tanh: return "tanh";
    case Activation::Relu: return "relu";
    default: return "smooth_relu";
  }
}

std::string opening_name(Opening o) { return o == Opening::Dense ? "dense" : "expand"; }

void NetworkSpec::validate() const {
  LP_REQUIRE(n_features >= 1, "n_features must be at least 1, got " << n_features);
  LP_REQUIRE(n_classes >= 2, "n_classes must be at least 2, got " << n_classes);
  LP_REQUIRE(width >= 1, "width must be at least 1, got " << width);
  LP_REQUIRE(layers >= 1, "layers must be at least 1, got " << layers);
  LP_REQUIRE(std::isfinite(T) && T > 0.0, "T must be a positive finite number, got " << T);
  LP_REQUIRE(width >= n_classes,
             "width must be at least the number of classes (" << n_classes << "), got " << width);
  LP_REQUIRE(opening != Opening::Expand || n_features <= width,
             "the expand opening needs width >= n_features (" << n_features << "), got width "
                                                              << width);
  const int a = static_cast<int>(activation);
  LP_REQUIRE(a >= 0 && a <= 2, "unknown activation code " << a);
  const int o = static_cast<int>(opening);
  LP_REQUIRE(o >= 0 && o <= 1, "unknown opening code " << o);
}

void Regularization::validate() const {
  LP_REQUIRE(std::isfinite(tikhonov) && tikhonov >= 0.0,
             "regularization.tikhonov must be >= 0, got " << tikhonov);
  LP_REQUIRE(std::isfinite(classifier) && classifier >= 0.0,
             "regularization.classifier must be >= 0, got " << classifier);
  LP_REQUIRE(std::isfinite(ddt) && ddt >= 0.0, "regularization.ddt must be >= 0, got " << ddt);
}

ParamLayout::ParamLayout(const NetworkSpec& spec) {
  const std::size_t w = spec.width, nf = spec.n_features, N = spec.layers, nc = spec.n_classes;
  has_opening = spec.opening == Opening::Dense;
  std::size_t at = 0;
  opening_weight = at;
  if (has_opening) at += w * nf;
  opening_bias = at;
  if (has_opening) at += 1;
  weights = at;
  at += N * w * w;
  biases = at;
  at += N;
  classifier_weight = at;
  at += nc * w;
  classifier_bias = at;
  at += nc;
  size = at;
}

DenseResNet::DenseResNet(const NetworkSpec& spec) : spec_(spec), layout_((spec.validate(), spec)) {}

// ------------------------------------------------------------------ building blocks
void DenseResNet::opening(const double* theta, const double* X, int s, double* U0) const {
  const int w = spec_.width, nf = spec_.n_features;
  if (spec_.opening == Opening::Dense) {
    dense_opening(spec_.activation, w, nf, theta + layout_.opening_weight, theta[layout_.opening_bias], X,
                  U0, s);
  } else {
    expand_opening(w, nf, X, U0, s);
  }
}

void DenseResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                       double* deriv) const {
  const int w = spec_.width;
  dense_step(spec_.activation, w, theta + layout_.weights + static_cast<std::size_t>(n) * w * w,
             theta[layout_.biases + n], dt, in, out, s, deriv);
}

void DenseResNet::adjoint_step(const double* theta, int n, double dt, const double* u,
                               const double* lam_next, double* lam, int s, double* grad, double gscale,
                               const double* deriv) const {
  const int w = spec_.width;
  const std::size_t ko = static_cast<std::size_t>(n) * w * w;
  dense_adjoint_step(spec_.activation, w, theta + layout_.weights + ko, theta[layout_.biases + n], dt, u,
                     lam_next, lam, s, deriv, grad ? grad + layout_.weights + ko : nullptr,
                     grad ? grad + layout_.biases + n : nullptr, gscale);
}

void DenseResNet::layer_gradient(const double* theta, int n, const double* u, const double* lam_next,
                                 int s, double* grad, double gscale, const double* deriv) const {
  const int w = spec_.width;
  const std::size_t ko = static_cast<std::size_t>(n) * w * w;
  dense_layer_gradient(spec_.activation, w, theta + layout_.weights + ko, theta[layout_.biases + n], u,
                       lam_next, s, grad + layout_.weights + ko, grad + layout_.biases + n, gscale, deriv);
}

void DenseResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  const int w = spec_.width;
  dense_activation_deriv(spec_.activation, w, theta + layout_.weights + static_cast<std::size_t>(n) * w * w,
                         theta[layout_.biases + n], u, deriv, s);
}

double DenseResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                               double scale, std::int64_t* correct, double* lam, double* grad) const {
  return classifier_loss(spec_.width, spec_.n_classes, theta + layout_.classifier_weight,
                         theta + layout_.classifier_bias, UN, labels, s, scale, correct, lam,
                         grad ? grad + layout_.classifier_weight : nullptr,
                         grad ? grad + layout_.classifier_bias : nullptr);
}

void DenseResNet::opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                   double* grad) const {
  if (spec_.opening != Opening::Dense) return;
  dense_opening_gradient(spec_.activation, spec_.width, spec_.n_features, theta + layout_.opening_weight,
                         theta[layout_.opening_bias], X, lam0, s, grad + layout_.opening_weight,
                         grad + layout_.opening_bias);
}

double DenseResNet::regularization(const double* theta, const Regularization& reg, double* grad) const {
  const std::size_t w = spec_.width, N = spec_.layers;
  double value = 0.0;
  // Tikhonov on the opening (if it has parameters) and every hidden layer.
  if (reg.tikhonov > 0.0) {
    value += tikhonov_term(theta, layout_.opening_weight, layout_.weights, reg.tikhonov, grad);
    value += tikhonov_term(theta, layout_.weights, layout_.classifier_weight, reg.tikhonov, grad);
  }
  if (reg.classifier > 0.0)
    value += tikhonov_term(theta, layout_.classifier_weight, layout_.size, reg.classifier, grad);
  // Smoothness in the layer index: (g/2) sum_{n>=1} |(theta_n - theta_{n-1}) / h|^2.
  if (reg.ddt > 0.0 && N > 1) {
    const double g = reg.ddt / (spec_.h() * spec_.h());
    value += smoothness_term(theta, layout_.weights, w * w, static_cast<int>(N), g, grad);
    value += smoothness_term(theta, layout_.biases, 1, static_cast<int>(N), g, grad);
  }
  return value;
}

double tikhonov_term(const double* theta, std::size_t begin, std::size_t end, double g, double* grad) {
  double s2 = 0.0;
  for (std::size_t k = begin; k < end; ++k) {
    s2 += theta[k] * theta[k];
    if (grad) grad[k] += g * theta[k];
  }
  return 0.5 * g * s2;
}

double smoothness_term(const double* theta, std::size_t offset, std::size_t per_layer, int N, double g_over_h2,
                       double* grad) {
  double s2 = 0.0;
  for (int n = 1; n < N; ++n) {
    const double* cur = theta + offset + n * per_layer;
    const double* prev = cur - per_layer;
    double* gcur = grad ? grad + offset + n * per_layer : nullptr;
    for (std::size_t k = 0; k < per_layer; ++k) {
      const double d = cur[k] - prev[k];
      s2 += d * d;
      if (gcur) {
        gcur[k] += g_over_h2 * d;
        gcur[k - per_layer] -= g_over_h2 * d;
      }
    }
  }
  return 0.5 * g_over_h2 * s2;
}

// ------------------------------------------------------------------ generic serial sweeps
void ResidualNetwork::forward_sweep(const double* theta, const double* X, int s, double* states,
                                    double* derivs) const {
  const std::size_t sz = state_size(s);
  opening(theta, X, s, states);
  for (int n = 0; n < layers(); ++n)
    step(theta, n, h(), states + n * sz, states + (n + 1) * sz, s, derivs ? derivs + n * sz : nullptr);
}

void ResidualNetwork::backward_sweep(const double* theta, const double* X, const double* states,
                                     const double* lamN, int s, double* grad, const double* derivs) const {
  const std::size_t sz = state_size(s);
  double* a = workspace(kLam, sz);
  double* b = workspace(kLam2, sz);
  std::copy(lamN, lamN + sz, a);
  for (int n = layers() - 1; n >= 0; --n) {
    adjoint_step(theta, n, h(), states + n * sz, a, b, s, grad, h(), derivs ? derivs + n * sz : nullptr);
    std::swap(a, b);
  }
  opening_gradient(theta, X, a, s, grad);
}

Evaluation ResidualNetwork::evaluate(const double* theta, const double* X, const std::int64_t* labels, int s,
                                     const Regularization& reg, double* grad) const {
  LP_REQUIRE(s >= 1, "the batch must hold at least one example, got " << s);
  const std::size_t sz = state_size(s);
  const int N = layers();
  const bool derivs_kept = grad != nullptr && keep_derivs();
  double* states = workspace(kStates, (N + 1) * sz);
  double* derivs = derivs_kept ? workspace(kDerivs, N * sz) : nullptr;
  forward_sweep(theta, X, s, states, derivs);

  Evaluation ev;
  ev.examples = s;
  const double scale = 1.0 / s;
  double* lamN = grad ? workspace(kLamN, sz) : nullptr;
  if (grad) std::fill(grad, grad + param_size(), 0.0);
  const double total = classifier(theta, states + N * sz, labels, s, scale, &ev.correct, lamN, grad);
  ev.loss = total / s;
  if (grad) backward_sweep(theta, X, states, lamN, s, grad, derivs);
  ev.regularization = regularization(theta, reg, grad);
  ev.objective = ev.loss + ev.regularization;
  return ev;
}

void ResidualNetwork::logits(const double* theta, const double* X, int s, double* Z) const {
  const std::size_t sz = state_size(s);
  double* a = workspace(kLam, sz);
  double* b = workspace(kLam2, sz);
  opening(theta, X, s, a);
  for (int n = 0; n < layers(); ++n) {
    step(theta, n, h(), a, b, s);
    std::swap(a, b);
  }
  classifier_logits(theta, a, s, Z);
}

// ------------------------------------------------------------------ dense sweeps
void DenseResNet::forward_sweep(const double* theta, const double* X, int s, double* states,
                                double* derivs) const {
  const std::size_t sz = state_size(s);
  const double h = spec_.h();
  const int w = spec_.width, N = spec_.layers;
  if (w > kFusedMaxWidth || derivs != nullptr) {
    // Wide: one BLAS GEMM per layer over the whole batch.
    ResidualNetwork::forward_sweep(theta, X, s, states, derivs);
    return;
  }
  // Narrow: each thread carries its chunks of examples through every layer, so a
  // sweep has one parallel region and no barrier per layer.
  const std::size_t ww = static_cast<std::size_t>(w) * w;
  std::vector<double> Kt(N * ww);
  for (int n = 0; n < N; ++n) transpose_square(w, theta + layout_.weights + n * ww, Kt.data() + n * ww);
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int c = 0; c < chunks; ++c) {
    const int rows = std::min(s - c * kReduceChunk, kReduceChunk);
    const std::size_t off = static_cast<std::size_t>(c) * kReduceChunk * w;
    opening(theta, X + static_cast<std::size_t>(c) * kReduceChunk * spec_.n_features, rows, states + off);
    for (int n = 0; n < N; ++n)
      dense_step_block(spec_.activation, w, Kt.data() + n * ww, theta[layout_.biases + n], h,
                       states + n * sz + off, states + (n + 1) * sz + off, rows);
  }
}

void DenseResNet::backward_sweep(const double* theta, const double* X, const double* states,
                                 const double* lamN, int s, double* grad, const double* derivs) const {
  const std::size_t sz = state_size(s);
  const double h = spec_.h();
  const int w = spec_.width, N = spec_.layers;
  if (w > kFusedMaxWidth || derivs != nullptr) {
    ResidualNetwork::backward_sweep(theta, X, states, lamN, s, grad, derivs);
    return;
  }
  // Narrow: one parallel region; each chunk accumulates its own full gradient and
  // the chunks are summed in order (the same result for any thread count).
  const std::size_t ww = static_cast<std::size_t>(w) * w;
  std::vector<double> Kt(N * ww);
  for (int n = 0; n < N; ++n) transpose_square(w, theta + layout_.weights + n * ww, Kt.data() + n * ww);
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  const std::size_t P = layout_.classifier_weight;  // opening and layer blocks come first
  std::vector<double> partial(static_cast<std::size_t>(chunks) * P, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int c = 0; c < chunks; ++c) {
    const int rows = std::min(s - c * kReduceChunk, kReduceChunk);
    const std::size_t off = static_cast<std::size_t>(c) * kReduceChunk * w;
    double* pg = partial.data() + static_cast<std::size_t>(c) * P;
    std::vector<double> a(lamN + off, lamN + off + static_cast<std::size_t>(rows) * w), b(a.size());
    for (int n = N - 1; n >= 0; --n) {
      const double* K = theta + layout_.weights + n * ww;
      dense_adjoint_block(spec_.activation, w, K, Kt.data() + n * ww, theta[layout_.biases + n], h,
                          states + n * sz + off, a.data(), b.data(), rows, pg + layout_.weights + n * ww,
                          pg + layout_.biases + n, h);
      a.swap(b);
    }
    opening_gradient(theta, X + static_cast<std::size_t>(c) * kReduceChunk * spec_.n_features, a.data(), rows,
                     pg);
  }
  for (int c = 0; c < chunks; ++c) {
    const double* pg = partial.data() + static_cast<std::size_t>(c) * P;
    for (std::size_t k = 0; k < P; ++k) grad[k] += pg[k];
  }
}

void DenseResNet::classifier_logits(const double* theta, const double* UN, int s, double* Z) const {
  layerparallel::classifier_logits(spec_.width, spec_.n_classes, theta + layout_.classifier_weight,
                                   theta + layout_.classifier_bias, UN, s, Z);
}

// ------------------------------------------------------------------ fused chains for MGRIT
namespace {
// outs[k] += rhs[k] on the rows [off, off + n) of a chunk.
inline void add_rhs(const double* const* rhs, int k, double* out, std::size_t off, std::size_t n) {
  if (rhs && rhs[k])
    for (std::size_t i = 0; i < n; ++i) out[i] += rhs[k][off + i];
}
}  // namespace

bool DenseResNet::propagate(const double* theta_, const int* idx, int count, const double* in,
                            double* const* outs, const double* const* rhs, int batch_) const {
  return forward_chain(theta_, idx, count, in, outs, rhs, batch_, nullptr, 0);
}

// The chain of propagate(); with derivs, also act' of each layer stepped through
// (propagate_derivs, unit steps).
bool DenseResNet::forward_chain(const double* theta_, const int* idx, int count, const double* in,
                                double* const* outs, const double* const* rhs, int batch_, double* derivs_,
                                int first) const {
  const NetworkSpec& sp = spec_;
  const int w = sp.width;
  if (w > kFusedMaxWidth) return false;
  const std::size_t ww = static_cast<std::size_t>(w) * w;
  const std::size_t sz = state_size(batch_);
  const ParamLayout& L = layout_;
  std::vector<double> Kt(static_cast<std::size_t>(count) * ww);
  for (int k = 0; k < count; ++k) transpose_square(w, theta_ + L.weights + idx[k] * ww, Kt.data() + k * ww);
  for_each_chunk(batch_, [&](int r0, int rows) {
    const std::size_t off = static_cast<std::size_t>(r0) * w;
    const double* prev = in + off;
    for (int k = 0; k < count; ++k) {
      double* dk = derivs_ ? derivs_ + static_cast<std::size_t>(idx[k] - first) * sz + off : nullptr;
      dense_step_block(sp.activation, w, Kt.data() + k * ww, theta_[L.biases + idx[k]], (idx[k + 1] - idx[k]) * sp.h(),
                       prev, outs[k] + off, rows, dk);
      add_rhs(rhs, k, outs[k] + off, off, static_cast<std::size_t>(rows) * w);
      prev = outs[k] + off;
    }
  });
  return true;
}

bool DenseResNet::adjoint_propagate(const double* theta_, const int* idx, int count, const double* in,
                                    double* const* outs, const double* const* rhs, int batch_,
                                    const double* derivs_, int first) const {
  return adjoint_chain(theta_, idx, count, in, outs, rhs, batch_, derivs_, first, nullptr, nullptr);
}

// The chain of adjoint_propagate(); with slots, also each layer's parameter-gradient
// partial sum per chunk of examples (adjoint_propagate_gradient, unit steps).
bool DenseResNet::adjoint_chain(const double* theta_, const int* idx, int count, const double* in,
                                double* const* outs, const double* const* rhs, int batch_, const double* derivs_,
                                int first, const double* const* states, double* slots) const {
  const NetworkSpec& sp = spec_;
  const int w = sp.width, N = sp.layers;
  if (w > kFusedMaxWidth) return false;
  const std::size_t ww = static_cast<std::size_t>(w) * w, slot = ww + 1;
  const std::size_t sz = state_size(batch_);
  const ParamLayout& L = layout_;
  for_each_chunk(batch_, [&](int r0, int rows) {
    const std::size_t off = static_cast<std::size_t>(r0) * w;
    const std::size_t c = static_cast<std::size_t>(r0 / kReduceChunk);
    const double* prev = in + off;
    for (int k = 0; k < count; ++k) {
      const int n1 = N - idx[k], n0 = N - idx[k + 1];
      // With slots: layer_gradient's partial sum of this chunk, from the step's own d.
      double* g = slots ? slots + (c * N + n0) * slot : nullptr;
      if (g) std::fill(g, g + slot, 0.0);
      dense_adjoint_block(sp.activation, w, theta_ + L.weights + n0 * ww, nullptr, 0.0, (n1 - n0) * sp.h(),
                          g ? states[n0] + off : nullptr, prev, outs[k] + off, rows, g, g ? g + ww : nullptr,
                          g ? sp.h() : 0.0, derivs_ + static_cast<std::size_t>(n0 - first) * sz + off);
      add_rhs(rhs, k, outs[k] + off, off, static_cast<std::size_t>(rows) * w);
      prev = outs[k] + off;
    }
  });
  return true;
}

bool DenseResNet::propagate_derivs(const double* theta_, const int* idx, int count, const double* in,
                                   double* const* outs, int batch_, double* derivs_, int first) const {
  for (int k = 0; k < count; ++k) LP_CHECK(idx[k + 1] == idx[k] + 1, "propagate_derivs: finest-level (unit) steps only");
  return forward_chain(theta_, idx, count, in, outs, nullptr, batch_, derivs_, first);
}

std::size_t DenseResNet::grad_slot_size() const {
  return spec_.width > kFusedMaxWidth ? 0 : static_cast<std::size_t>(spec_.width) * spec_.width + 1;
}

bool DenseResNet::adjoint_propagate_gradient(const double* theta_, const int* idx, int count, const double* in,
                                             double* const* outs, int batch_, const double* derivs_, int first,
                                             const double* const* states, double* slots) const {
  for (int k = 0; k < count; ++k) LP_CHECK(idx[k + 1] == idx[k] + 1, "adjoint_propagate_gradient: unit steps only");
  return adjoint_chain(theta_, idx, count, in, outs, nullptr, batch_, derivs_, first, states, slots);
}

void DenseResNet::reduce_gradient_slots(const double* slots, int a, int b, int s, double* grad) const {
  const int w = spec_.width, N = spec_.layers;
  const std::size_t ww = static_cast<std::size_t>(w) * w, slot = ww + 1;
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> sum(slot);
  for (int n = a; n < b; ++n) {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int c = 0; c < chunks; ++c) {
      const double* g = slots + (static_cast<std::size_t>(c) * N + n) * slot;
      for (std::size_t k = 0; k < slot; ++k) sum[k] += g[k];
    }
    double* gK = grad + layout_.weights + n * ww;
    for (std::size_t k = 0; k < ww; ++k) gK[k] += sum[k];
    grad[layout_.biases + n] += sum[ww];
  }
}

}  // namespace layerparallel
