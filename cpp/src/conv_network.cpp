// The convolutional residual network: layout, validation and the per-layer
// building blocks over the conv kernels; sweeps, objective and MGRIT come from
// ResidualNetwork.
#include "layerparallel/conv_network.h"

#include <cmath>
#include <vector>

#include "layerparallel/conv.h"
#include "layerparallel/dense.h"
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

ConvResNet::ConvResNet(const ConvSpec& spec) : spec_(spec), layout_((spec.validate(), spec)) {}

void ConvResNet::opening(const double* theta, const double* X, int s, double* U0) const {
  if (!spec_.conv_opening) {
    replicate_opening(spec_.shape(), X, U0, s);
    return;
  }
  const ConvShape sh = spec_.shape();
  const int P = sh.pixels();
  const double* Ko = theta + layout_.opening_weight;
  const double* bo = theta + layout_.opening_bias;
  with_activation(spec_.activation, [&](auto A) {
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

void ConvResNet::opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                  double* grad) const {
  if (!spec_.conv_opening) return;
  const ConvShape sh = spec_.shape();
  const int P = sh.pixels(), n = sh.size();
  const double* Ko = theta + layout_.opening_weight;
  const double* bo = theta + layout_.opening_bias;
  const int chunks = (s + kReduceChunk - 1) / kReduceChunk;
  const int wlen = sh.C * 9, len = wlen + sh.bias_size();
  std::vector<double> partial(static_cast<std::size_t>(chunks) * len, 0.0);
  with_activation(spec_.activation, [&](auto A) {
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
    for (int k = 0; k < wlen; ++k) grad[layout_.opening_weight + k] += p[k];
    for (int k = 0; k < sh.bias_size(); ++k) grad[layout_.opening_bias + k] += p[wlen + k];
  }
}

void ConvResNet::step(const double* theta, int n, double dt, const double* in, double* out, int s,
                      double* deriv) const {
  conv_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), dt, in, out, s, deriv);
}

void ConvResNet::adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                              double* lam, int s, double* grad, double gscale, const double* deriv) const {
  conv_adjoint_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), dt, u, lam_next, lam, s, deriv,
                    grad ? grad + layout_.weights + n * layout_.per_layer_weights : nullptr,
                    grad ? grad + layout_.biases + n * layout_.per_layer_biases : nullptr, gscale);
}

void ConvResNet::layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                                double* grad, double gscale, const double* deriv) const {
  conv_adjoint_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), 0.0, u, lam_next, nullptr, s, deriv,
                    grad + layout_.weights + n * layout_.per_layer_weights,
                    grad + layout_.biases + n * layout_.per_layer_biases, gscale);
}

void ConvResNet::activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const {
  thread_local std::vector<double> scratch;
  scratch.resize(state_size(s));
  conv_step(spec_.activation, spec_.shape(), K(theta, n), B(theta, n), 0.0, u, scratch.data(), s, deriv);
}

double ConvResNet::classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                              double scale, std::int64_t* correct, double* lam, double* grad) const {
  return classifier_loss(state_width(), spec_.n_classes, theta + layout_.classifier_weight,
                         theta + layout_.classifier_bias, UN, labels, s, scale, correct, lam,
                         grad ? grad + layout_.classifier_weight : nullptr,
                         grad ? grad + layout_.classifier_bias : nullptr);
}

void ConvResNet::classifier_logits(const double* theta, const double* UN, int s, double* Z) const {
  layerparallel::classifier_logits(state_width(), spec_.n_classes, theta + layout_.classifier_weight,
                                   theta + layout_.classifier_bias, UN, s, Z);
}

double ConvResNet::regularization(const double* theta, const Regularization& reg, double* grad) const {
  double value = 0.0;
  // Tikhonov on the opening (when it has parameters) and every hidden layer.
  if (reg.tikhonov > 0.0)
    value += tikhonov_term(theta, layout_.opening_weight, layout_.classifier_weight, reg.tikhonov, grad);
  if (reg.classifier > 0.0)
    value += tikhonov_term(theta, layout_.classifier_weight, layout_.size, reg.classifier, grad);
  if (reg.ddt > 0.0 && spec_.layers > 1) {
    const double g = reg.ddt / (spec_.h() * spec_.h());
    value += smoothness_term(theta, layout_.weights, layout_.per_layer_weights, spec_.layers, g, grad);
    value += smoothness_term(theta, layout_.biases, layout_.per_layer_biases, spec_.layers, g, grad);
  }
  return value;
}

}  // namespace layerparallel
