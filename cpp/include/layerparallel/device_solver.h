// ResNetMgrit on a device backend ("cuda", or "emulator": the CUDA kernels' bodies
// on the CPU) with host arrays in and out: the parameters go up and the gradient
// comes down once per evaluation; states, adjoints and act'(.) stay in device
// memory (the MGRIT engine keeps its states in the backend's StateSpace and
// relaxes every interval of a level in one launch). The networks are the same
// classes as on the cpu (DenseResNet, ConvResNet) over the device's Backend.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "layerparallel/backend.h"
#include "layerparallel/conv_network.h"
#include "layerparallel/network.h"
#include "layerparallel/resnet_mgrit.h"

namespace layerparallel {

class DeviceResNetMgrit {
 public:
  /// device: "cuda" or "emulator" (or "cpu": the same solver with host states).
  DeviceResNetMgrit(const NetworkSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint, Comm* comm,
                    const std::string& device);
  DeviceResNetMgrit(const ConvSpec& spec, int batch, MgritOptions forward, MgritOptions adjoint, Comm* comm,
                    const std::string& device);
  ~DeviceResNetMgrit();
  DeviceResNetMgrit(const DeviceResNetMgrit&) = delete;
  DeviceResNetMgrit& operator=(const DeviceResNetMgrit&) = delete;

  /// ResNetMgrit::evaluate with host theta (param_size), X (batch, n_features),
  /// labels (batch) and grad (param_size, overwritten; may be null).
  MgritEvaluation evaluate(const double* theta, const double* X, const std::int64_t* labels,
                           const Regularization& reg, double* grad, int forward_budget, int adjoint_budget);
  /// Copies u_n / lambda_n of the last evaluation to host memory (state_size doubles).
  void state(int n, double* out);
  void adjoint(int n, double* out);

  ResNetMgrit& solver() { return *solver_; }
  const ResidualNetwork& network() const { return *net_; }
  std::string device() const { return net_->backend().name(); }

 private:
  DeviceResNetMgrit(std::unique_ptr<ResidualNetwork> net, int batch, MgritOptions forward, MgritOptions adjoint,
                    Comm* comm);

  std::unique_ptr<ResidualNetwork> net_;
  std::unique_ptr<ResNetMgrit> solver_;
  StateBuffer theta_, grad_;
  void* labels_ = nullptr;
  int batch_;
};

}  // namespace layerparallel
