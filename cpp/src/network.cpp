// ResidualNetwork's generic parts (serial sweeps, objective, regularisers) and
// the dense residual network over a Backend (docs/algorithm.md sections 1-2).
#include "layerparallel/network.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "layerparallel/dense.h"
#include "layerparallel/macros.h"

namespace layerparallel {

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

// ------------------------------------------------------------------ ResidualNetwork

ResidualNetwork::ResidualNetwork(std::shared_ptr<Backend> backend, std::size_t param_size)
    : backend_(backend ? std::move(backend) : cpu_backend()), param_size_(param_size) {}

// Host scratch is per thread and shared by every network: a fresh 10-100 MB
// allocation per gradient would cost more in page faults than the sweeps
// themselves. Device scratch belongs to the network (one host thread drives it).
double* ResidualNetwork::workspace(Work slot, std::size_t n) const {
  if (space().host()) {
    thread_local std::vector<double> buf[kWorkSlots];
    if (buf[slot].size() < n) {
      buf[slot].clear();
      buf[slot].shrink_to_fit();
      buf[slot].resize(n);
    }
    return buf[slot].data();
  }
  StateBuffer& b = work_.buf[slot];
  if (b.size() < n) b = StateBuffer(space(), n);
  return b.data();
}

double ResidualNetwork::regularization(const double* theta, const Regularization& reg, double* grad) const {
  const ParameterLayout P = parameters();
  if (space().host()) return layerparallel::regularization(P, h(), reg, theta, grad);
  if (reg.tikhonov == 0.0 && reg.classifier == 0.0 && reg.ddt == 0.0) return 0.0;
  // A device network: the parameters come down once, the gradient goes up once.
  std::vector<double> th(param_size()), g(grad ? param_size() : 0, 0.0);
  space().download(th.data(), theta, th.size());
  const double v = layerparallel::regularization(P, h(), reg, th.data(), grad ? g.data() : nullptr);
  if (grad) {
    double* tmp = workspace(kSlots, g.size());
    space().upload(tmp, g.data(), g.size());
    space().add(grad, tmp, g.size());
  }
  return v;
}

void ResidualNetwork::step_chain(const double* theta, const Propagator::Chain& c, int s) const {
  const std::size_t sz = state_size(s);
  for (int k = 0; k < c.count; ++k) {
    step(theta, c.idx[k], (c.idx[k + 1] - c.idx[k]) * h(), k == 0 ? c.in : c.outs[k - 1], c.outs[k], s);
    if (c.rhs && c.rhs[k]) space().add(c.outs[k], c.rhs[k], sz);
  }
}

void ResidualNetwork::adjoint_step_chain(const double* theta, const Propagator::Chain& c, int s,
                                         const double* derivs, int first) const {
  const std::size_t sz = state_size(s);
  const int N = layers();
  for (int k = 0; k < c.count; ++k) {
    const int n0 = N - c.idx[k + 1];
    adjoint_step(theta, n0, (c.idx[k + 1] - c.idx[k]) * h(), nullptr, k == 0 ? c.in : c.outs[k - 1], c.outs[k], s,
                 nullptr, 0.0, derivs + static_cast<std::ptrdiff_t>(n0 - first) * static_cast<std::ptrdiff_t>(sz));
    if (c.rhs && c.rhs[k]) space().add(c.outs[k], c.rhs[k], sz);
  }
}

void ResidualNetwork::propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  for (int q = 0; q < n; ++q) step_chain(theta, chains[q], s);
}

void ResidualNetwork::adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                               const double* derivs, int first) const {
  for (int q = 0; q < n; ++q) adjoint_step_chain(theta, chains[q], s, derivs, first);
}

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
  space().copy(a, lamN, sz);
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
  if (grad) space().zero(grad, param_size());
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

// ------------------------------------------------------------------ DenseResNet

DenseResNet::DenseResNet(const NetworkSpec& spec, std::shared_ptr<Backend> backend)
    : ResidualNetwork(std::move(backend), ParamLayout((spec.validate(), spec)).size), spec_(spec), layout_(spec) {
  LP_REQUIRE(spec.n_classes <= this->backend().max_classes(),
             "the " << this->backend().name() << " backend takes up to " << this->backend().max_classes()
                    << " classes, got " << spec.n_classes);
}

ParameterLayout DenseResNet::parameters() const {
  const NetworkSpec& s = spec_;
  const ParamLayout& L = layout_;
  ParameterLayout P;
  P.layers = s.layers;
  if (L.has_opening) {
    P.blocks.push_back({"opening_weight", L.opening_weight, {s.width, s.n_features}, false, false});
    P.blocks.push_back({"opening_bias", L.opening_bias, {}, false, false});
  }
  P.blocks.push_back({"weights", L.weights, {s.layers, s.width, s.width}, true, false});
  P.blocks.push_back({"biases", L.biases, {s.layers}, true, false});
  P.blocks.push_back({"classifier_weight", L.classifier_weight, {s.n_classes, s.width}, false, true});
  P.blocks.push_back({"classifier_bias", L.classifier_bias, {s.n_classes}, false, true});
  return P;
}

DenseLayers DenseResNet::hidden(const double* theta) const {
  return DenseLayers{spec_.activation, spec_.width, spec_.layers, spec_.h(), theta ? theta + layout_.weights : nullptr,
                     theta ? theta + layout_.biases : nullptr};
}

void DenseResNet::opening(const double* theta, const double* X, int s, double* U0) const {
  const int w = spec_.width, nf = spec_.n_features;
  if (spec_.opening == Opening::Dense)
    backend().dense_opening(spec_.activation, w, nf, theta + layout_.opening_weight, theta + layout_.opening_bias, X,
                            U0, s);
  else
    backend().expand_opening(w, nf, X, U0, s);
}

void DenseResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                       double* deriv) const {
  backend().dense_step(hidden(theta), n, dt, in, out, s, deriv);
}

void DenseResNet::adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                               double* lam, int s, double* grad, double gscale, const double* deriv) const {
  const std::size_t ko = static_cast<std::size_t>(n) * spec_.width * spec_.width;
  backend().dense_adjoint_step(hidden(theta), n, dt, u, lam_next, lam, s, deriv,
                               grad ? grad + layout_.weights + ko : nullptr, grad ? grad + layout_.biases + n : nullptr,
                               gscale);
}

void DenseResNet::layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                                 double* grad, double gscale, const double* deriv) const {
  const std::size_t ko = static_cast<std::size_t>(n) * spec_.width * spec_.width;
  backend().dense_adjoint_step(hidden(theta), n, 0.0, u, lam_next, nullptr, s, deriv, grad + layout_.weights + ko,
                               grad + layout_.biases + n, gscale);
}

void DenseResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  backend().dense_deriv(hidden(theta), n, u, deriv, s);
}

double DenseResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                               double scale, std::int64_t* correct, double* lam, double* grad) const {
  return backend().classifier(spec_.width, spec_.n_classes, theta + layout_.classifier_weight,
                              theta + layout_.classifier_bias, UN, labels, s, scale, correct, lam,
                              grad ? grad + layout_.classifier_weight : nullptr,
                              grad ? grad + layout_.classifier_bias : nullptr);
}

void DenseResNet::opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                   double* grad) const {
  if (spec_.opening != Opening::Dense) return;  // the expand opening has no parameters
  backend().dense_opening_gradient(spec_.activation, spec_.width, spec_.n_features, theta + layout_.opening_weight,
                                   theta + layout_.opening_bias, X, lam0, s, grad + layout_.opening_weight,
                                   grad + layout_.opening_bias);
}

void DenseResNet::classifier_logits(const double* theta, const double* UN, int s, double* Z) const {
  backend().classifier_logits(spec_.width, spec_.n_classes, theta + layout_.classifier_weight,
                              theta + layout_.classifier_bias, UN, s, Z);
}

// ------------------------------------------------------------------ chains for MGRIT

bool DenseResNet::propagate(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                            const double* const* rhs, int s) const {
  const Propagator::Chain c{idx, count, in, outs, rhs};
  return backend().dense_chains(hidden(theta), &c, 1, s, nullptr, 0);
}

bool DenseResNet::adjoint_propagate(const double* theta, const int* idx, int count, const double* in,
                                    double* const* outs, const double* const* rhs, int s, const double* derivs,
                                    int first) const {
  const Propagator::Chain c{idx, count, in, outs, rhs};
  return backend().dense_adjoint_chains(hidden(theta), &c, 1, s, derivs, first, nullptr, nullptr);
}

bool DenseResNet::propagate_derivs(const double* theta, const int* idx, int count, const double* in,
                                   double* const* outs, int s, double* derivs, int first) const {
  const Propagator::Chain c{idx, count, in, outs, nullptr};
  return backend().dense_chains(hidden(theta), &c, 1, s, derivs, first);
}

std::size_t DenseResNet::grad_slot_size() const { return backend().dense_grad_slot_size(spec_.width); }

bool DenseResNet::adjoint_propagate_gradient(const double* theta, const int* idx, int count, const double* in,
                                             double* const* outs, int s, const double* derivs, int first,
                                             const double* const* states, double* slots) const {
  if (grad_slot_size() == 0) return false;
  const Propagator::Chain c{idx, count, in, outs, nullptr};
  return backend().dense_adjoint_chains(hidden(theta), &c, 1, s, derivs, first, states, slots);
}

void DenseResNet::reduce_gradient_slots(const double* slots, int a, int b, int s, double* grad) const {
  backend().dense_reduce_slots(hidden(nullptr), slots, a, b, s, grad + layout_.weights, grad + layout_.biases);
}

void DenseResNet::propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  if (!backend().dense_chains(hidden(theta), chains, n, s, nullptr, 0)) ResidualNetwork::propagate_chains(theta, chains, n, s);
}

void DenseResNet::adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                           const double* derivs, int first) const {
  if (!backend().dense_adjoint_chains(hidden(theta), chains, n, s, derivs, first, nullptr, nullptr))
    ResidualNetwork::adjoint_propagate_chains(theta, chains, n, s, derivs, first);
}

// ------------------------------------------------------------------ serial sweeps

void DenseResNet::forward_sweep(const double* theta, const double* X, int s, double* states, double* derivs) const {
  const std::size_t sz = state_size(s);
  const int N = spec_.layers;
  opening(theta, X, s, states);
  std::vector<int> idx(N + 1);
  std::vector<double*> outs(N);
  for (int n = 0; n <= N; ++n) idx[n] = n;
  for (int n = 0; n < N; ++n) outs[n] = states + (n + 1) * sz;
  const Propagator::Chain c{idx.data(), N, states, outs.data(), nullptr};
  if (backend().dense_chains(hidden(theta), &c, 1, s, derivs, 0)) return;
  for (int n = 0; n < N; ++n)
    step(theta, n, h(), states + n * sz, states + (n + 1) * sz, s, derivs ? derivs + n * sz : nullptr);
}

// Where the backend forms the gradient inside the adjoint chain (narrow layers on
// the cpu): one chain through every layer, its adjoints alternating between two
// buffers, each chunk's gradient partial sums summed in chunk order (the same
// result for any thread count).
void DenseResNet::backward_sweep(const double* theta, const double* X, const double* states, const double* lamN,
                                 int s, double* grad, const double* derivs) const {
  const std::size_t slot = grad_slot_size();
  if (slot == 0 || derivs != nullptr) {
    ResidualNetwork::backward_sweep(theta, X, states, lamN, s, grad, derivs);
    return;
  }
  const std::size_t sz = state_size(s);
  const int N = spec_.layers;
  double* lam[2] = {workspace(kLam, sz), workspace(kLam2, sz)};
  std::vector<int> idx(N + 1);
  std::vector<double*> outs(N);
  std::vector<const double*> u(N + 1);
  for (int k = 0; k <= N; ++k) idx[k] = k;
  for (int k = 0; k < N; ++k) outs[k] = lam[k & 1];
  for (int n = 0; n <= N; ++n) u[n] = states + n * sz;
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  double* slots = workspace(kSlots, static_cast<std::size_t>(chunks) * N * slot);
  const Propagator::Chain c{idx.data(), N, lamN, outs.data(), nullptr};
  const DenseLayers L = hidden(theta);
  LP_CHECK(backend().dense_adjoint_chains(L, &c, 1, s, nullptr, 0, u.data(), slots),
           "a backend with gradient slots must run the adjoint chain");
  backend().dense_reduce_slots(L, slots, 0, N, s, grad + layout_.weights, grad + layout_.biases);
  opening_gradient(theta, X, outs[N - 1], s, grad);
}

}  // namespace layerparallel
