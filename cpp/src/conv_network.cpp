// The convolutional residual network: layout, validation and the per-layer
// building blocks over a Backend; sweeps, objective and MGRIT come from
// ResidualNetwork.
#include "layerparallel/conv_network.h"

#include <cmath>
#include <vector>

#include "layerparallel/macros.h"

namespace layerparallel {

void ConvSpec::validate() const {
  LP_REQUIRE(channels >= 1, "channels must be at least 1, got " << channels);
  LP_REQUIRE(height >= 1 && width >= 1, "the image must be at least 1x1, got " << height << "x" << width);
  LP_REQUIRE(n_classes >= 2, "n_classes must be at least 2, got " << n_classes);
  LP_REQUIRE(layers >= 1, "layers must be at least 1, got " << layers);
  LP_REQUIRE(std::isfinite(T) && T > 0.0, "T must be a positive finite number, got " << T);
  const int a = static_cast<int>(activation);
  LP_REQUIRE(a >= 0 && a <= 2, "unknown activation code " << a);
}

ConvLayout::ConvLayout(const ConvSpec& spec) {
  const ConvShape sh = spec.shape();
  per_layer_weights = sh.weight_size();
  per_layer_biases = sh.bias_size();
  std::size_t at = 0;
  opening_weight = at;
  if (spec.conv_opening) at += static_cast<std::size_t>(spec.channels) * 9;
  opening_bias = at;
  if (spec.conv_opening) at += per_layer_biases;
  weights = at;
  at += spec.layers * per_layer_weights;
  biases = at;
  at += spec.layers * per_layer_biases;
  classifier_weight = at;
  at += static_cast<std::size_t>(spec.n_classes) * sh.size();
  classifier_bias = at;
  at += spec.n_classes;
  size = at;
}

ConvResNet::ConvResNet(const ConvSpec& spec, std::shared_ptr<Backend> backend)
    : ResidualNetwork(std::move(backend), ConvLayout((spec.validate(), spec)).size), spec_(spec), layout_(spec) {
  LP_REQUIRE(spec.n_classes <= this->backend().max_classes(),
             "the " << this->backend().name() << " backend takes up to " << this->backend().max_classes()
                    << " classes, got " << spec.n_classes);
  LP_REQUIRE(!spec.conv_opening || this->backend().has_conv_opening(),
             "convolutional networks on the " << this->backend().name()
                                              << " backend take the replicate opening (model.opening = "
                                                 "\"replicate\"); the learned conv opening runs on the cpu");
}

ParameterLayout ConvResNet::parameters() const {
  const ConvSpec& s = spec_;
  const ConvLayout& L = layout_;
  const std::vector<int> bias = s.bias_per_channel ? std::vector<int>{s.channels} : std::vector<int>{s.height, s.width};
  std::vector<int> layer_bias{s.layers};
  layer_bias.insert(layer_bias.end(), bias.begin(), bias.end());
  ParameterLayout P;
  P.layers = s.layers;
  if (s.conv_opening) {
    P.blocks.push_back({"opening_weight", L.opening_weight, {s.channels, 1, 3, 3}, false, false});
    P.blocks.push_back({"opening_bias", L.opening_bias, bias, false, false});
  }
  P.blocks.push_back({"weights", L.weights, {s.layers, s.channels, s.channels, 3, 3}, true, false});
  P.blocks.push_back({"biases", L.biases, layer_bias, true, false});
  P.blocks.push_back(
      {"classifier_weight", L.classifier_weight, {s.n_classes, s.channels * s.height * s.width}, false, true});
  P.blocks.push_back({"classifier_bias", L.classifier_bias, {s.n_classes}, false, true});
  return P;
}

void ConvResNet::opening(const double* theta, const double* X, int s, double* U0) const {
  if (!spec_.conv_opening) {
    backend().replicate_opening(spec_.shape(), X, U0, s);
    return;
  }
  backend().conv_opening(spec_.activation, spec_.shape(), theta + layout_.opening_weight,
                         theta + layout_.opening_bias, X, U0, s);
}

void ConvResNet::opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                  double* grad) const {
  if (!spec_.conv_opening) return;  // the replicate opening has no parameters
  backend().conv_opening_gradient(spec_.activation, spec_.shape(), theta + layout_.opening_weight,
                                  theta + layout_.opening_bias, X, lam0, s, grad + layout_.opening_weight,
                                  grad + layout_.opening_bias);
}

void ConvResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                      double* deriv) const {
  backend().conv_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), dt, in, out, s, deriv);
}

void ConvResNet::adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                              double* lam, int s, double* grad, double gscale, const double* deriv) const {
  backend().conv_adjoint_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), dt, u, lam_next, lam, s,
                              deriv, grad ? grad + layout_.weights + n * layout_.per_layer_weights : nullptr,
                              grad ? grad + layout_.biases + n * layout_.per_layer_biases : nullptr, gscale);
}

void ConvResNet::layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                                double* grad, double gscale, const double* deriv) const {
  backend().conv_adjoint_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), 0.0, u, lam_next, nullptr,
                              s, deriv, grad + layout_.weights + n * layout_.per_layer_weights,
                              grad + layout_.biases + n * layout_.per_layer_biases, gscale);
}

// act'(.) from a step of size 0, whose result nobody needs.
void ConvResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  double* scratch = workspace(kScratch, state_size(s));
  backend().conv_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), 0.0, u, scratch, s, deriv);
}

double ConvResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                              double scale, std::int64_t* correct, double* lam, double* grad) const {
  return backend().classifier(state_width(), spec_.n_classes, theta + layout_.classifier_weight,
                              theta + layout_.classifier_bias, UN, labels, s, scale, correct, lam,
                              grad ? grad + layout_.classifier_weight : nullptr,
                              grad ? grad + layout_.classifier_bias : nullptr);
}

void ConvResNet::classifier_logits(const double* theta, const double* UN, int s, double* Z) const {
  backend().classifier_logits(state_width(), spec_.n_classes, theta + layout_.classifier_weight,
                              theta + layout_.classifier_bias, UN, s, Z);
}

}  // namespace layerparallel
