// Device-resident dense and convolutional ResNets and their MGRIT solver (device_network.h).
#include "layerparallel/device_network.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
// The whole number of fine steps in dt (every MGRIT step spans whole fine steps).
int fine_steps(double dt, double h) {
  const long m = std::lround(dt / h);
  LP_REQUIRE(m >= 1 && std::fabs(static_cast<double>(m) * h - dt) <= 1e-9 * dt,
             "the device network steps whole multiples of h = " << h << ", got dt = " << dt);
  return static_cast<int>(m);
}
}  // namespace

// ------------------------------------------------------------------ what every device network shares

DeviceNetwork::DeviceNetwork(std::shared_ptr<DeviceBackend> backend, int classes) : dev_(std::move(backend)) {
  LP_REQUIRE(dev_ != nullptr, "a device network needs a device backend");
  LP_REQUIRE(classes <= kernels::kMaxClasses,
             "device-resident training takes up to " << kernels::kMaxClasses << " classes, got " << classes);
}

const double* DeviceNetwork::host_theta() const {
  LP_REQUIRE(host_theta_ != nullptr, "a device network: set_host_theta() was not called");
  return host_theta_;
}

void DeviceNetwork::add_host(double* grad, std::size_t begin, const double* values, std::size_t n) const {
  if (n == 0) return;
  double* tmp = scratch(n);  // reused: no device allocation per evaluation
  dev_->upload(tmp, values, n);
  dev_->add(grad + begin, tmp, n);
}

// ------------------------------------------------------------------ dense

DeviceDenseResNet::DeviceDenseResNet(const NetworkSpec& spec, std::shared_ptr<DeviceBackend> backend)
    : DeviceNetwork(std::move(backend), spec.n_classes), host_(spec) {}

// The dense opening on the device: one thread per example for narrow networks;
// for wide ones z = W x (a GEMM over the uploaded features), U0 = act(z + b). The expand opening has no parameters: its output is the
// features padded with zeros, built on the host and uploaded (it is the input).
const double* DeviceNetwork::device_features(const double* X, int s) const {
  const std::size_t n = static_cast<std::size_t>(s) * input_size();
  if (features_.size() < n) {
    features_ = StateBuffer(*dev_, n);
    features_of_ = nullptr;
  }
  if (X != features_of_) {
    dev_->upload(features_.data(), X, n);
    features_of_ = X;
  }
  return features_.data();
}

void DeviceDenseResNet::opening(const double* theta, const double* X, int s, double* U0) const {
  const int w = spec().width, nf = spec().n_features;
  if (spec().opening != Opening::Dense) {
    std::vector<double> u(state_size(s));
    host_.opening(nullptr, X, s, u.data());
    dev_->upload(U0, u.data(), u.size());
    return;
  }
  features_of_ = nullptr;  // a new evaluation: the caller may have refilled X in place
  const double* x = device_features(X, s);
  if (!wide()) {
    dev_->dense_opening(spec().activation, w, nf, theta + layout().opening_weight, theta + layout().opening_bias, x,
                        U0, s);
    return;
  }
  const double* W[1] = {theta + layout().opening_weight};
  double* Z[1] = {U0};
  dev_->gemm_batched(true, false, w, s, nf, 1.0, W, nf, &x, nf, 0.0, Z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Activate;
  e.z = {U0};
  e.out = {U0};
  e.bias = {theta + layout().opening_bias};
  dev_->wide_epilogue(spec().activation, w, s, e);
}

void DeviceDenseResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                             double* deriv) const {
  LP_REQUIRE(deriv == nullptr, "DeviceDenseResNet::step does not return act'(.): use activation_deriv");
  const int idx[2] = {n, n + fine_steps(dt, h())};
  double* outs[1] = {out};
  const Propagator::Chain c{idx, 1, in, outs, nullptr};
  propagate_chains(theta, &c, 1, s);
}

void DeviceDenseResNet::adjoint_step(const double* theta, int n, double dt, const double*, const double* lam_next,
                                     double* lam, int s, double* grad, double, const double* deriv) const {
  LP_REQUIRE(deriv != nullptr, "DeviceDenseResNet::adjoint_step needs act'(.) of the layer (deriv)");
  LP_REQUIRE(grad == nullptr, "DeviceDenseResNet::adjoint_step does not accumulate gradients: use layer_gradient");
  // Reversed index k = N - n: the step k0 -> k1 = N - n uses layer n.
  const int k1 = layers() - n;
  const int idx[2] = {k1 - fine_steps(dt, h()), k1};
  double* outs[1] = {lam};
  const Propagator::Chain c{idx, 1, lam_next, outs, nullptr};
  adjoint_propagate_chains(theta, &c, 1, s, deriv, n);
}

void DeviceDenseResNet::layer_gradient(const double*, int n, const double* u, const double* lam_next, int s,
                                       double* grad, double gscale, const double* deriv) const {
  LP_REQUIRE(deriv != nullptr, "DeviceDenseResNet::layer_gradient needs act'(.) of the layer (deriv)");
  const int w = spec().width;
  double* gK = grad + layout().weights + static_cast<std::size_t>(n) * w * w;
  double* gb = grad + layout().biases + n;
  if (!wide()) {
    dev_->layer_gradient(w, s, u, lam_next, deriv, gK, gb, gscale);
    return;
  }
  // D = deriv * lam_next; gK += gscale D^T u (a GEMM); gb += gscale sum(D).
  const std::size_t sz = state_size(s);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Product;
  e.a = {deriv};
  e.b = {lam_next};
  e.z = {scratch(sz)};
  dev_->wide_epilogue(spec().activation, w, s, e);
  const double* A[1] = {u};
  const double* B[1] = {e.z[0]};
  double* C[1] = {gK};
  dev_->gemm_batched(false, true, w, w, s, gscale, A, w, B, w, 1.0, C, w, 1);
  dev_->dot_accumulate(deriv, lam_next, sz, gscale, gb);
}

void DeviceDenseResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  const int w = spec().width;
  if (!wide()) {
    dev_->layer_derivs(spec().activation, w, s, K(theta), bias(theta), n, 1, &u, deriv);
    return;
  }
  // z = K_n u (a GEMM), deriv = act'(z + b_n).
  const double* A[1] = {K(theta) + static_cast<std::size_t>(n) * w * w};
  double* Z[1] = {scratch(state_size(s))};
  dev_->gemm_batched(true, false, w, s, w, 1.0, A, w, &u, w, 0.0, Z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Deriv;
  e.z = {Z[0]};
  e.out = {deriv};
  e.bias = {bias(theta) + n};
  dev_->wide_epilogue(spec().activation, w, s, e);
}

double* DeviceNetwork::scratch(std::size_t n) const {
  if (scratch_.size() < n) scratch_ = StateBuffer(*dev_, n);
  return scratch_.data();
}

// Wide layers: step k of every chain at once, as one batched GEMM (z_q = K_{n_q}
// cur_q) and one epilogue launch over the chains.
void DeviceDenseResNet::wide_propagate(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  const int w = spec().width;
  const std::size_t sz = state_size(s);
  int steps = 0;
  for (int q = 0; q < n; ++q) steps = std::max(steps, chains[q].count);
  double* z = scratch(static_cast<std::size_t>(n) * sz);
  for (int k = 0; k < steps; ++k) {
    std::vector<const double*> A, B;
    DeviceBackend::WideBatch e;
    e.op = kernels::WideOp::Step;
    for (int q = 0; q < n; ++q) {
      const Propagator::Chain& c = chains[q];
      if (k >= c.count) continue;
      const double* cur = k == 0 ? c.in : c.outs[k - 1];
      A.push_back(K(theta) + static_cast<std::size_t>(c.idx[k]) * w * w);
      B.push_back(cur);
      e.z.push_back(z + e.z.size() * sz);
      e.a.push_back(cur);
      e.out.push_back(c.outs[k]);
      e.rhs.push_back(c.rhs ? c.rhs[k] : nullptr);
      e.dt.push_back((c.idx[k + 1] - c.idx[k]) * h());
      e.bias.push_back(bias(theta) + c.idx[k]);
    }
    dev_->gemm_batched(true, false, w, s, w, 1.0, A.data(), w, B.data(), w, 0.0, e.z.data(), w,
                       static_cast<int>(A.size()));
    dev_->wide_epilogue(spec().activation, w, s, e);
  }
}

// The adjoint: z_q = dt act'(.) * cur_q and out_q = cur_q (+ rhs), then out_q += K^T z_q.
void DeviceDenseResNet::wide_adjoint(const double* theta, const Propagator::Chain* chains, int n, int s,
                                     const double* derivs, int first) const {
  const int w = spec().width, N = layers();
  const std::size_t sz = state_size(s);
  int steps = 0;
  for (int q = 0; q < n; ++q) steps = std::max(steps, chains[q].count);
  double* z = scratch(static_cast<std::size_t>(n) * sz);
  for (int k = 0; k < steps; ++k) {
    std::vector<const double*> A;
    DeviceBackend::WideBatch e;
    e.op = kernels::WideOp::AdjointPre;
    for (int q = 0; q < n; ++q) {
      const Propagator::Chain& c = chains[q];
      if (k >= c.count) continue;
      const int n0 = N - c.idx[k + 1];
      A.push_back(K(theta) + static_cast<std::size_t>(n0) * w * w);
      e.a.push_back(k == 0 ? c.in : c.outs[k - 1]);
      e.b.push_back(derivs + static_cast<std::ptrdiff_t>(n0 - first) * static_cast<std::ptrdiff_t>(sz));
      e.z.push_back(z + e.z.size() * sz);
      e.out.push_back(c.outs[k]);
      e.rhs.push_back(c.rhs ? c.rhs[k] : nullptr);
      e.dt.push_back((c.idx[k + 1] - c.idx[k]) * h());
    }
    dev_->wide_epilogue(spec().activation, w, s, e);
    std::vector<const double*> Z(e.z.begin(), e.z.end());
    dev_->gemm_batched(false, false, w, s, w, 1.0, A.data(), w, Z.data(), w, 1.0, e.out.data(), w,
                       static_cast<int>(A.size()));
  }
}

double DeviceDenseResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                                     double scale, std::int64_t* correct, double* lam, double* grad) const {
  const ParamLayout& L = layout();
  return dev_->classifier(spec().width, spec().n_classes, theta + L.classifier_weight, theta + L.classifier_bias, UN,
                          labels, s, scale, correct, lam, grad ? grad + L.classifier_weight : nullptr,
                          grad ? grad + L.classifier_bias : nullptr);
}

// d = act'(W x + b) * lam0: narrow networks reduce per block; wide ones take
// gb += sum d (a dot of act'(.) with lam0) and gW += d x^T (a GEMM).
void DeviceDenseResNet::opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                         double* grad) const {
  if (spec().opening != Opening::Dense) return;  // no parameters
  const int w = spec().width, nf = spec().n_features;
  const std::size_t sz = state_size(s);
  const double* x = device_features(X, s);
  if (!wide()) {
    dev_->dense_opening_gradient(spec().activation, w, nf, theta + layout().opening_weight,
                                 theta + layout().opening_bias, x, lam0, s, grad + layout().opening_weight,
                                 grad + layout().opening_bias);
    return;
  }
  double* z = scratch(2 * sz);
  double* D = z + sz;
  const double* W[1] = {theta + layout().opening_weight};
  dev_->gemm_batched(true, false, w, s, nf, 1.0, W, nf, &x, nf, 0.0, &z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Deriv;
  e.z = {z};
  e.out = {z};
  e.bias = {theta + layout().opening_bias};
  dev_->wide_epilogue(spec().activation, w, s, e);
  dev_->dot_accumulate(z, lam0, sz, 1.0, grad + layout().opening_bias);
  DeviceBackend::WideBatch p;
  p.op = kernels::WideOp::Product;
  p.a = {z};
  p.b = {lam0};
  p.z = {D};
  dev_->wide_epilogue(spec().activation, w, s, p);
  const double* Dp = D;
  double* G[1] = {grad + layout().opening_weight};
  dev_->gemm_batched(false, true, nf, w, s, 1.0, &x, nf, &Dp, w, 1.0, G, nf, 1);
}

double DeviceNetwork::regularization(const double*, const Regularization& reg, double* grad) const {
  std::vector<double> g(grad ? param_size() : 0, 0.0);
  const double v = host().regularization(host_theta(), reg, grad ? g.data() : nullptr);
  if (grad) add_host(grad, 0, g.data(), g.size());
  return v;
}

void DeviceNetwork::classifier_logits(const double*, const double*, int, double*) const {
  throw std::runtime_error("a device network: logits are computed by the host network (predict on the CPU)");
}

bool DeviceNetwork::propagate(const double* theta, const int* idx, int count, const double* in,
                                  double* const* outs, const double* const* rhs, int s) const {
  const Propagator::Chain c{idx, count, in, outs, rhs};
  propagate_chains(theta, &c, 1, s);
  return true;
}

bool DeviceNetwork::adjoint_propagate(const double* theta, const int* idx, int count, const double* in,
                                          double* const* outs, const double* const* rhs, int s,
                                          const double* derivs, int first) const {
  const Propagator::Chain c{idx, count, in, outs, rhs};
  adjoint_propagate_chains(theta, &c, 1, s, derivs, first);
  return true;
}

// A launch takes at most kMaxLaunchRows chains (grid.y); more go in several launches.
constexpr int kMaxLaunchRows = 65535;

void DeviceDenseResNet::propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  for (int q0 = 0; q0 < n; q0 += kMaxLaunchRows) {
    const int c = std::min(n - q0, kMaxLaunchRows);
    if (wide())
      wide_propagate(theta, chains + q0, c, s);
    else
      dev_->block_propagate(spec().activation, spec().width, s, h(), K(theta), bias(theta), chains + q0, c);
  }
}

void DeviceDenseResNet::adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                                 const double* derivs, int first) const {
  for (int q0 = 0; q0 < n; q0 += kMaxLaunchRows) {
    const int c = std::min(n - q0, kMaxLaunchRows);
    if (wide())
      wide_adjoint(theta, chains + q0, c, s, derivs, first);
    else
      dev_->block_adjoint(spec().width, s, layers(), h(), K(theta), derivs, first, chains + q0, c);
  }
}

void DeviceNetwork::forward_sweep(const double*, const double*, int, double*, double*) const {
  throw std::runtime_error("a device network: the serial sweep on the device is a one-level DeviceResNetMgrit");
}

void DeviceNetwork::backward_sweep(const double*, const double*, const double*, const double*, int, double*,
                                       const double*) const {
  throw std::runtime_error("a device network: the serial sweep on the device is a one-level DeviceResNetMgrit");
}

// ------------------------------------------------------------------ convolutional

DeviceConvResNet::DeviceConvResNet(const ConvSpec& spec, std::shared_ptr<DeviceBackend> backend)
    : DeviceNetwork(std::move(backend), spec.n_classes), host_(spec) {
  LP_REQUIRE(!spec.conv_opening, "device-resident training of convolutional networks takes the replicate opening "
                                 "(model.opening = \"replicate\"); the learned conv opening runs on the cpu");
}

void DeviceConvResNet::opening(const double*, const double* X, int s, double* U0) const {
  new_features();
  dev_->replicate_opening(spec().shape(), device_features(X, s), U0, s);
}

void DeviceConvResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                            double* deriv) const {
  dev_->conv_step(spec().activation, spec().shape(), K(theta, n), B(theta, n), dt, in, out, s, deriv);
}

void DeviceConvResNet::adjoint_step(const double* theta, int n, double dt, const double*, const double* lam_next,
                                    double* lam, int s, double* grad, double, const double* deriv) const {
  LP_REQUIRE(deriv != nullptr, "DeviceConvResNet::adjoint_step needs act'(.) of the layer (deriv)");
  LP_REQUIRE(grad == nullptr, "DeviceConvResNet::adjoint_step does not accumulate gradients: use layer_gradient");
  dev_->conv_adjoint(spec().shape(), K(theta, n), dt, deriv, lam_next, lam, s);
}

void DeviceConvResNet::layer_gradient(const double*, int n, const double* u, const double* lam_next, int s,
                                      double* grad, double gscale, const double* deriv) const {
  LP_REQUIRE(deriv != nullptr, "DeviceConvResNet::layer_gradient needs act'(.) of the layer (deriv)");
  const ConvLayout& L = layout();
  dev_->conv_gradient(spec().shape(), u, lam_next, deriv, s, grad + L.weights + n * L.per_layer_weights,
                      grad + L.biases + n * L.per_layer_biases, gscale);
}

void DeviceConvResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  // The step kernel returns act'(.) along with a step nobody needs.
  dev_->conv_step(spec().activation, spec().shape(), K(theta, n), B(theta, n), 0.0, u, scratch(state_size(s)), s,
                  deriv);
}

double DeviceConvResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                                    double scale, std::int64_t* correct, double* lam, double* grad) const {
  const ConvLayout& L = layout();
  return dev_->classifier(state_width(), spec().n_classes, theta + L.classifier_weight, theta + L.classifier_bias,
                          UN, labels, s, scale, correct, lam, grad ? grad + L.classifier_weight : nullptr,
                          grad ? grad + L.classifier_bias : nullptr);
}

void DeviceConvResNet::opening_gradient(const double*, const double*, const double*, int, double*) const {}

// No fused interval kernel for convolutions: one step launch per step, the
// right-hand side added by the state space.
void DeviceConvResNet::propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  const std::size_t sz = state_size(s);
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    for (int k = 0; k < c.count; ++k) {
      step(theta, c.idx[k], (c.idx[k + 1] - c.idx[k]) * h(), k == 0 ? c.in : c.outs[k - 1], c.outs[k], s);
      if (c.rhs && c.rhs[k]) dev_->add(c.outs[k], c.rhs[k], sz);
    }
  }
}

void DeviceConvResNet::adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                                const double* derivs, int first) const {
  const std::size_t sz = state_size(s);
  const int N = layers();
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    for (int k = 0; k < c.count; ++k) {
      const int n0 = N - c.idx[k + 1];
      dev_->conv_adjoint(spec().shape(), K(theta, n0), (c.idx[k + 1] - c.idx[k]) * h(),
                         derivs + static_cast<std::ptrdiff_t>(n0 - first) * static_cast<std::ptrdiff_t>(sz),
                         k == 0 ? c.in : c.outs[k - 1], c.outs[k], s);
      if (c.rhs && c.rhs[k]) dev_->add(c.outs[k], c.rhs[k], sz);
    }
  }
}

// ------------------------------------------------------------------ the solver

namespace {
MgritOptions one_thread(MgritOptions o) {
  o.threads = 1;  // one host thread drives the device; its launches are the parallelism
  return o;
}
}  // namespace

DeviceResNetMgrit::DeviceResNetMgrit(const NetworkSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint,
                                     Comm* comm, const std::string& device)
    : DeviceResNetMgrit(make_device_backend(device), batch, std::move(forward), std::move(adjoint), comm,
                        [&](std::shared_ptr<DeviceBackend> d) { return std::make_unique<DeviceDenseResNet>(spec, d); }) {}

DeviceResNetMgrit::DeviceResNetMgrit(const ConvSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint,
                                     Comm* comm, const std::string& device)
    : DeviceResNetMgrit(make_device_backend(device), batch, std::move(forward), std::move(adjoint), comm,
                        [&](std::shared_ptr<DeviceBackend> d) { return std::make_unique<DeviceConvResNet>(spec, d); }) {}

DeviceResNetMgrit::DeviceResNetMgrit(std::shared_ptr<DeviceBackend> dev, int batch, MgritOptions forward,
                                     MgritOptions adjoint, Comm* comm, const NetFactory& make_net)
    : dev_(std::move(dev)),
      net_(make_net(dev_)),
      solver_(std::make_unique<ResNetMgrit>(*net_, batch, one_thread(std::move(forward)),
                                            one_thread(std::move(adjoint)), comm)),
      theta_(*dev_, net_->param_size()),
      grad_(*dev_, net_->param_size()),
      batch_(batch) {
  labels_ = dev_->allocate_bytes(static_cast<std::size_t>(batch) * sizeof(std::int64_t));
}

DeviceResNetMgrit::~DeviceResNetMgrit() {
  solver_.reset();  // its states live in the backend's memory
  net_.reset();
  if (labels_) dev_->release_bytes(labels_);
}

MgritEvaluation DeviceResNetMgrit::evaluate(const double* theta, const double* X, const std::int64_t* labels,
                                            const Regularization& reg, double* grad, int forward_budget,
                                            int adjoint_budget) {
  const std::size_t np = net_->param_size();
  dev_->upload(theta_.data(), theta, np);
  dev_->upload_bytes(labels_, labels, static_cast<std::size_t>(batch_) * sizeof(std::int64_t));
  // The host theta is valid only during this call, also when it throws.
  struct HostTheta {
    DeviceNetwork& net;
    HostTheta(DeviceNetwork& n, const double* t) : net(n) { net.set_host_theta(t); }
    ~HostTheta() { net.set_host_theta(nullptr); }
  } host_theta(*net_, theta);
  MgritEvaluation e = solver_->evaluate(theta_.data(), X, static_cast<const std::int64_t*>(labels_), reg,
                                        grad ? grad_.data() : nullptr, forward_budget, adjoint_budget);
  if (grad) dev_->download(grad, grad_.data(), np);
  return e;
}

void DeviceResNetMgrit::state(int n, double* out) {
  dev_->download(out, solver_->state(n), net_->state_size(batch_));
}

void DeviceResNetMgrit::adjoint(int n, double* out) {
  dev_->download(out, solver_->adjoint(n), net_->state_size(batch_));
}

}  // namespace layerparallel
