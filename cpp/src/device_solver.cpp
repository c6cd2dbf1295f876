// ResNetMgrit on a device backend with host arrays in and out (device_solver.h).
#include "layerparallel/device_solver.h"

#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
MgritOptions one_thread(MgritOptions o) {
  o.threads = 1;  // one host thread drives the device; its launches are the parallelism
  return o;
}
}  // namespace

DeviceResNetMgrit::DeviceResNetMgrit(const NetworkSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint,
                                     Comm* comm, const std::string& device)
    : DeviceResNetMgrit(std::make_unique<DenseResNet>(spec, make_backend(device)), batch, std::move(forward),
                        std::move(adjoint), comm) {}

DeviceResNetMgrit::DeviceResNetMgrit(const ConvSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint,
                                     Comm* comm, const std::string& device)
    : DeviceResNetMgrit(std::make_unique<ConvResNet>(spec, make_backend(device)), batch, std::move(forward),
                        std::move(adjoint), comm) {}

DeviceResNetMgrit::DeviceResNetMgrit(std::unique_ptr<ResidualNetwork> net, int batch, MgritOptions forward,
                                     MgritOptions adjoint, Comm* comm)
    : net_(std::move(net)),
      solver_(std::make_unique<ResNetMgrit>(*net_, batch, one_thread(std::move(forward)),
                                            one_thread(std::move(adjoint)), comm)),
      theta_(net_->space(), net_->param_size()),
      grad_(net_->space(), net_->param_size()),
      batch_(batch) {
  labels_ = net_->backend().allocate_bytes(static_cast<std::size_t>(batch) * sizeof(std::int64_t));
}

DeviceResNetMgrit::~DeviceResNetMgrit() {
  solver_.reset();  // its states live in the backend's memory
  if (labels_) net_->backend().release_bytes(labels_);
}

MgritEvaluation DeviceResNetMgrit::evaluate(const double* theta, const double* X, const std::int64_t* labels,
                                            const Regularization& reg, double* grad, int forward_budget,
                                            int adjoint_budget) {
  const std::size_t np = net_->param_size();
  Backend& dev = net_->backend();
  dev.upload(theta_.data(), theta, np);
  dev.upload_bytes(labels_, labels, static_cast<std::size_t>(batch_) * sizeof(std::int64_t));
  MgritEvaluation e = solver_->evaluate(theta_.data(), X, static_cast<const std::int64_t*>(labels_), reg,
                                        grad ? grad_.data() : nullptr, forward_budget, adjoint_budget);
  if (grad) dev.download(grad, grad_.data(), np);
  return e;
}

void DeviceResNetMgrit::state(int n, double* out) {
  net_->space().download(out, solver_->state(n), net_->state_size(batch_));
}

void DeviceResNetMgrit::adjoint(int n, double* out) {
  net_->space().download(out, solver_->adjoint(n), net_->state_size(batch_));
}

}  // namespace layerparallel
