// The convolutional residual network of docs/algorithm.md section 1 (the paper's
// MNIST network): replicate opening, 3x3 C -> C residual layers with zero
// padding, a classifier on the flattened final image.
#pragma once

#include <string>

#include "layerparallel/conv_impl.h"
#include "layerparallel/network.h"

namespace layerparallel {

struct ConvSpec {
  int channels = 4;
  int height = 28;
  int width = 28;
  int n_classes = 10;
  int layers = 32;
  double T = 5.0;
  Activation activation = Activation::Tanh;
  bool bias_per_channel = false;  ///< false: one bias per pixel shared over channels (the paper)
  /// false: the replicate opening (no parameters); true: a learned 3x3 convolution from the
  /// one input channel, u0 = act(conv(K_o, p / 255) + b_o), bias kind as in the layers.
  bool conv_opening = false;

  double h() const { return T / layers; }
  ConvShape shape() const { return ConvShape{channels, height, width, bias_per_channel}; }
  /// Throws std::invalid_argument naming the first bad field.
  void validate() const;
};

/// Offsets in the flat parameter vector: [opening_weight (C, 1, 3, 3), opening_bias
/// (H*W or C) for the conv opening], weights (N, C, C, 3, 3), biases (N, H*W or C),
/// classifier_weight (n_c, C*H*W), classifier_bias (n_c).
struct ConvLayout {
  explicit ConvLayout(const ConvSpec& spec);
  std::size_t opening_weight = 0, opening_bias = 0;
  std::size_t weights = 0, biases = 0, classifier_weight = 0, classifier_bias = 0, size = 0;
  std::size_t per_layer_weights = 0, per_layer_biases = 0;
};

/// The convolutional residual network, on any backend (the learned conv opening
/// only where the backend has it: the cpu).
class ConvResNet : public ResidualNetwork {
 public:
  /// backend: the cpu when null. Throws std::invalid_argument naming the first bad field.
  explicit ConvResNet(const ConvSpec& spec, std::shared_ptr<Backend> backend = nullptr);

  const ConvSpec& spec() const { return spec_; }
  const ConvLayout& layout() const { return layout_; }

  int layers() const override { return spec_.layers; }
  double h() const override { return spec_.h(); }
  int input_size() const override { return spec_.height * spec_.width; }
  int classes() const override { return spec_.n_classes; }
  int state_width() const override { return spec_.channels * spec_.height * spec_.width; }
  ParameterLayout parameters() const override;

  void opening(const double* theta, const double* X, int s, double* U0) const override;
  void step(const double* theta, int n, double dt, const double* in, double* out, int s,
            double* deriv = nullptr) const override;
  void adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                    double* lam, int s, double* grad = nullptr, double gscale = 0.0,
                    const double* deriv = nullptr) const override;
  void layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                      double* grad, double gscale, const double* deriv = nullptr) const override;
  void activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const override;
  double classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                    double scale, std::int64_t* correct, double* lam, double* grad) const override;
  /// Nothing for the replicate opening (it has no parameters).
  void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                        double* grad) const override;
  void classifier_logits(const double* theta, const double* UN, int s, double* Z) const override;

 private:
  const double* K(const double* theta, int n) const { return theta + layout_.weights + n * layout_.per_layer_weights; }
  const double* B(const double* theta, int n) const { return theta + layout_.biases + n * layout_.per_layer_biases; }

  ConvSpec spec_;
  ConvLayout layout_;
};

}  // namespace layerparallel
