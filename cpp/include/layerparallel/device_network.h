// Device-resident training of the dense and convolutional ResNets: the
// networks' building blocks on a DeviceBackend (states, adjoints, activation
// derivatives, parameters and gradients in device memory), and the ResNet MGRIT
// solver running on them.
// The MGRIT engine keeps its states in the backend's memory (StateSpace) and
// relaxes every interval of a level in one block-propagation launch.
//
// What crosses between host and device per evaluation: the features (uploaded
// once; the expand opening's zero-padded copy of them), the parameters (up) and
// the gradient (down), and the regularisers' value and gradient (parameter-sized,
// computed on the host). States, adjoints and activation derivatives never cross
// except as MPI messages between processes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layerparallel/conv_network.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/network.h"
#include "layerparallel/resnet_mgrit.h"

namespace layerparallel {

/// What every device-resident network shares: its memory is the backend's
/// (theta, states and gradients are device pointers, X is host memory), the
/// shape and the host-side parts (regularisers, logits) come from the CPU
/// network of the same shape, and the serial sweeps are a one-level
/// DeviceResNetMgrit.
class DeviceNetwork : public ResidualNetwork {
 public:
  DeviceBackend& backend() const { return *dev_; }
  /// The host copy of the parameters of the next calls (the regularisers run on
  /// the host); must equal the device theta passed to them.
  void set_host_theta(const double* theta) { host_theta_ = theta; }
  /// The CPU network of the same shape.
  virtual const ResidualNetwork& host() const = 0;

  int layers() const override { return host().layers(); }
  double h() const override { return host().h(); }
  int input_size() const override { return host().input_size(); }
  int classes() const override { return host().classes(); }
  int state_width() const override { return host().state_width(); }
  std::size_t param_size() const override { return host().param_size(); }
  StateSpace& space() const override { return *dev_; }
  bool fuses_chains() const override { return true; }

  double regularization(const double* theta, const Regularization& reg, double* grad) const override;
  void classifier_logits(const double* theta, const double* UN, int s, double* Z) const override;
  bool propagate(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                 const double* const* rhs, int s) const override;
  bool adjoint_propagate(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                         const double* const* rhs, int s, const double* derivs, int first) const override;
  /// The serial sweeps run as a one-level ResNetMgrit on the device: these throw.
  void forward_sweep(const double* theta, const double* X, int s, double* states,
                     double* derivs = nullptr) const override;
  void backward_sweep(const double* theta, const double* X, const double* states, const double* lamN, int s,
                      double* grad, const double* derivs = nullptr) const override;

 protected:
  DeviceNetwork(std::shared_ptr<DeviceBackend> backend, int classes);
  /// grad[begin, begin + n) += host values.
  void add_host(double* grad, std::size_t begin, const double* values, std::size_t n) const;
  const double* host_theta() const;
  double* scratch(std::size_t n) const;
  /// The features X (host, s x input_size()) in device memory, uploaded when X is
  /// not the array of the last upload; new_features() forces the next upload.
  const double* device_features(const double* X, int s) const;
  void new_features() const { features_of_ = nullptr; }

  std::shared_ptr<DeviceBackend> dev_;
  const double* host_theta_ = nullptr;
  mutable StateBuffer scratch_;   // scratch states (GEMM outputs, unused step results)
  mutable StateBuffer features_;  // the opening's input on the device
  mutable const double* features_of_ = nullptr;  // the host array features_ holds
};

/// DenseResNet on a device. Widths up to kernels::kMaxWidth (32) run the
/// one-thread-per-example kernels (every interval of a level in one launch);
/// wider layers run batched cuBLAS GEMMs with elementwise epilogue kernels.
class DeviceDenseResNet final : public DeviceNetwork {
 public:
  DeviceDenseResNet(const NetworkSpec& spec, std::shared_ptr<DeviceBackend> backend);

  const NetworkSpec& spec() const { return host_.spec(); }
  const ParamLayout& layout() const { return host_.layout(); }
  const ResidualNetwork& host() const override { return host_; }

  void opening(const double* theta, const double* X, int s, double* U0) const override;
  /// dt must be a whole number of h (as every MGRIT step is); deriv must be null.
  void step(const double* theta, int n, double dt, const double* in, double* out, int s,
            double* deriv = nullptr) const override;
  /// Needs deriv (act'(.) of layer n); grad must be null (layer_gradient computes it).
  void adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next, double* lam,
                    int s, double* grad = nullptr, double gscale = 0.0,
                    const double* deriv = nullptr) const override;
  /// Needs deriv.
  void layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s, double* grad,
                      double gscale, const double* deriv = nullptr) const override;
  void activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const override;
  /// labels: int64 in device memory.
  double classifier(const double* theta, const double* UN, const std::int64_t* labels, int s, double scale,
                    std::int64_t* correct, double* lam, double* grad) const override;
  void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                        double* grad) const override;
  void propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const override;
  void adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                const double* derivs, int first) const override;

 private:
  const double* K(const double* theta) const { return theta + host_.layout().weights; }
  const double* bias(const double* theta) const { return theta + host_.layout().biases; }
  // Wide layers (w > kernels::kMaxWidth): batched GEMMs plus epilogue launches.
  bool wide() const { return spec().width > kernels::kMaxWidth; }
  void wide_propagate(const double* theta, const Propagator::Chain* chains, int n, int s) const;
  void wide_adjoint(const double* theta, const Propagator::Chain* chains, int n, int s, const double* derivs,
                    int first) const;

  DenseResNet host_;
};

/// ConvResNet on a device (the replicate opening): one step / adjoint / gradient
/// launch per layer step (cuda/conv_kernels.cu), the classifier on the flattened
/// final image.
class DeviceConvResNet final : public DeviceNetwork {
 public:
  DeviceConvResNet(const ConvSpec& spec, std::shared_ptr<DeviceBackend> backend);

  const ConvSpec& spec() const { return host_.spec(); }
  const ConvLayout& layout() const { return host_.layout(); }
  const ResidualNetwork& host() const override { return host_; }

  void opening(const double* theta, const double* X, int s, double* U0) const override;
  void step(const double* theta, int n, double dt, const double* in, double* out, int s,
            double* deriv = nullptr) const override;
  void adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next, double* lam,
                    int s, double* grad = nullptr, double gscale = 0.0,
                    const double* deriv = nullptr) const override;
  void layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s, double* grad,
                      double gscale, const double* deriv = nullptr) const override;
  void activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const override;
  double classifier(const double* theta, const double* UN, const std::int64_t* labels, int s, double scale,
                    std::int64_t* correct, double* lam, double* grad) const override;
  void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                        double* grad) const override;
  void propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const override;
  void adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                const double* derivs, int first) const override;

 private:
  const double* K(const double* theta, int n) const {
    return theta + host_.layout().weights + n * host_.layout().per_layer_weights;
  }
  const double* B(const double* theta, int n) const {
    return theta + host_.layout().biases + n * host_.layout().per_layer_biases;
  }

  ConvResNet host_;
};

/// ResNetMgrit on a device: host arrays in and out (theta, features, labels,
/// gradient), everything between on the device. device = "cuda" or "emulator";
/// a dense or a convolutional network.
class DeviceResNetMgrit {
 public:
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
  const DeviceNetwork& network() const { return *net_; }
  std::string device() const { return dev_->name(); }

 private:
  using NetFactory = std::function<std::unique_ptr<DeviceNetwork>(std::shared_ptr<DeviceBackend>)>;
  DeviceResNetMgrit(std::shared_ptr<DeviceBackend> dev, int batch, MgritOptions forward, MgritOptions adjoint,
                    Comm* comm, const NetFactory& make_net);

  std::shared_ptr<DeviceBackend> dev_;
  std::unique_ptr<DeviceNetwork> net_;
  std::unique_ptr<ResNetMgrit> solver_;
  StateBuffer theta_, grad_;
  void* labels_ = nullptr;
  int batch_;
};

}  // namespace layerparallel
