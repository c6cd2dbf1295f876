// Device-resident dense ResNet and its MGRIT solver (device_network.h).
#include "layerparallel/device_network.h"

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

DeviceDenseResNet::DeviceDenseResNet(const NetworkSpec& spec, std::shared_ptr<DeviceBackend> backend)
    : host_(spec), dev_(std::move(backend)) {
  LP_REQUIRE(dev_ != nullptr, "DeviceDenseResNet needs a device backend");
  LP_REQUIRE(spec.width <= kernels::kMaxWidth,
             "device-resident training takes widths up to " << kernels::kMaxWidth << " (the cuBLAS path for wider "
                                                            << "layers is not built yet), got width " << spec.width);
  LP_REQUIRE(spec.n_classes <= kernels::kMaxClasses,
             "device-resident training takes up to " << kernels::kMaxClasses << " classes, got " << spec.n_classes);
}

const double* DeviceDenseResNet::host_theta() const {
  LP_REQUIRE(host_theta_ != nullptr, "DeviceDenseResNet: set_host_theta() was not called");
  return host_theta_;
}

void DeviceDenseResNet::add_host(double* grad, std::size_t begin, const double* values, std::size_t n) const {
  if (n == 0) return;
  StateBuffer tmp(*dev_, n);
  dev_->upload(tmp.data(), values, n);
  dev_->add(grad + begin, tmp.data(), n);
}

void DeviceDenseResNet::opening(const double*, const double* X, int s, double* U0) const {
  std::vector<double> u(state_size(s));
  host_.opening(host_theta(), X, s, u.data());
  dev_->upload(U0, u.data(), u.size());
}

void DeviceDenseResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                             double* deriv) const {
  LP_REQUIRE(deriv == nullptr, "DeviceDenseResNet::step does not return act'(.): use activation_deriv");
  const int idx[2] = {n, n + fine_steps(dt, h())};
  double* outs[1] = {out};
  const Propagator::Chain c{idx, 1, in, outs, nullptr};
  dev_->block_propagate(spec().activation, spec().width, s, h(), K(theta), bias(theta), &c, 1);
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
  dev_->block_adjoint(spec().width, s, layers(), h(), K(theta), deriv, n, &c, 1);
}

void DeviceDenseResNet::layer_gradient(const double*, int n, const double* u, const double* lam_next, int s,
                                       double* grad, double gscale, const double* deriv) const {
  LP_REQUIRE(deriv != nullptr, "DeviceDenseResNet::layer_gradient needs act'(.) of the layer (deriv)");
  const int w = spec().width;
  dev_->layer_gradient(w, s, u, lam_next, deriv, grad + layout().weights + static_cast<std::size_t>(n) * w * w,
                       grad + layout().biases + n, gscale);
}

void DeviceDenseResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  dev_->layer_derivs(spec().activation, spec().width, s, K(theta), bias(theta), n, 1, &u, deriv);
}

double DeviceDenseResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                                     double scale, std::int64_t* correct, double* lam, double* grad) const {
  const ParamLayout& L = layout();
  return dev_->classifier(spec().width, spec().n_classes, theta + L.classifier_weight, theta + L.classifier_bias, UN,
                          labels, s, scale, correct, lam, grad ? grad + L.classifier_weight : nullptr,
                          grad ? grad + L.classifier_bias : nullptr);
}

void DeviceDenseResNet::opening_gradient(const double*, const double* X, const double* lam0, int s,
                                         double* grad) const {
  const std::size_t n = layout().weights;  // the opening's blocks come first
  if (n == 0) return;                        // the expand opening has no parameters
  std::vector<double> l(state_size(s)), g(param_size(), 0.0);
  dev_->download(l.data(), lam0, l.size());
  host_.opening_gradient(host_theta(), X, l.data(), s, g.data());
  add_host(grad, 0, g.data(), n);
}

double DeviceDenseResNet::regularization(const double*, const Regularization& reg, double* grad) const {
  std::vector<double> g(grad ? param_size() : 0, 0.0);
  const double v = host_.regularization(host_theta(), reg, grad ? g.data() : nullptr);
  if (grad) add_host(grad, 0, g.data(), g.size());
  return v;
}

void DeviceDenseResNet::classifier_logits(const double*, const double*, int, double*) const {
  throw std::runtime_error("DeviceDenseResNet: logits are computed by the host network (predict on the CPU)");
}

bool DeviceDenseResNet::propagate(const double* theta, const int* idx, int count, const double* in,
                                  double* const* outs, const double* const* rhs, int s) const {
  const Propagator::Chain c{idx, count, in, outs, rhs};
  propagate_chains(theta, &c, 1, s);
  return true;
}

bool DeviceDenseResNet::adjoint_propagate(const double* theta, const int* idx, int count, const double* in,
                                          double* const* outs, const double* const* rhs, int s,
                                          const double* derivs) const {
  // derivs is indexed from layer 0 here (ResNetAdjointPropagator shifts its block).
  const Propagator::Chain c{idx, count, in, outs, rhs};
  adjoint_propagate_chains(theta, &c, 1, s, derivs, 0);
  return true;
}

void DeviceDenseResNet::propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const {
  dev_->block_propagate(spec().activation, spec().width, s, h(), K(theta), bias(theta), chains, n);
}

void DeviceDenseResNet::adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                                 const double* derivs, int first) const {
  dev_->block_adjoint(spec().width, s, layers(), h(), K(theta), derivs, first, chains, n);
}

void DeviceDenseResNet::forward_sweep(const double*, const double*, int, double*, double*) const {
  throw std::runtime_error("DeviceDenseResNet: the serial sweep on the device is a one-level DeviceResNetMgrit");
}

void DeviceDenseResNet::backward_sweep(const double*, const double*, const double*, const double*, int, double*,
                                       const double*) const {
  throw std::runtime_error("DeviceDenseResNet: the serial sweep on the device is a one-level DeviceResNetMgrit");
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
    : dev_(make_device_backend(device)),
      net_(spec, dev_),
      solver_(std::make_unique<ResNetMgrit>(net_, batch, one_thread(std::move(forward)), one_thread(std::move(adjoint)),
                                            comm)),
      theta_(*dev_, net_.param_size()),
      grad_(*dev_, net_.param_size()),
      batch_(batch) {
  labels_ = dev_->allocate_bytes(static_cast<std::size_t>(batch) * sizeof(std::int64_t));
}

DeviceResNetMgrit::~DeviceResNetMgrit() {
  solver_.reset();  // its states live in the backend's memory
  if (labels_) dev_->release_bytes(labels_);
}

MgritEvaluation DeviceResNetMgrit::evaluate(const double* theta, const double* X, const std::int64_t* labels,
                                            const Regularization& reg, double* grad, int forward_budget,
                                            int adjoint_budget) {
  const std::size_t np = net_.param_size();
  dev_->upload(theta_.data(), theta, np);
  dev_->upload_bytes(labels_, labels, static_cast<std::size_t>(batch_) * sizeof(std::int64_t));
  net_.set_host_theta(theta);
  MgritEvaluation e = solver_->evaluate(theta_.data(), X, static_cast<const std::int64_t*>(labels_), reg,
                                        grad ? grad_.data() : nullptr, forward_budget, adjoint_budget);
  if (grad) dev_->download(grad, grad_.data(), np);
  net_.set_host_theta(nullptr);
  return e;
}

void DeviceResNetMgrit::state(int n, double* out) {
  dev_->download(out, solver_->state(n), net_.state_size(batch_));
}

void DeviceResNetMgrit::adjoint(int n, double* out) {
  dev_->download(out, solver_->adjoint(n), net_.state_size(batch_));
}

}  // namespace layerparallel
