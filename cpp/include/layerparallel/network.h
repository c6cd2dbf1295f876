// The dense residual network of ALGORITHM.md sections 1-2: parameter layout,
// serial forward and adjoint sweeps, objective and gradient. The MGRIT
// propagators reuse its per-layer building blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "layerparallel/activation_impl.h"

namespace layerparallel {

enum class Opening : int { Dense = 0, Expand = 1 };

Activation parse_activation(const std::string& name);
Opening parse_opening(const std::string& name);
std::string activation_name(Activation a);
std::string opening_name(Opening o);

/// Shape of a dense residual network.
struct NetworkSpec {
  int n_features = 2;
  int n_classes = 5;
  int width = 8;
  int layers = 32;
  double T = 5.0;
  Activation activation = Activation::SmoothRelu;
  Opening opening = Opening::Dense;

  double h() const { return T / layers; }
  /// Throws std::invalid_argument naming the first bad field.
  void validate() const;
};

/// Weights of the three regularisers of the objective.
struct Regularization {
  double tikhonov = 0.0;
  double classifier = 0.0;
  double ddt = 0.0;
  void validate() const;
};

/// Offsets of the named parameter blocks in the flat parameter vector, in the
/// order opening_weight, opening_bias (dense opening only), weights, biases,
/// classifier_weight, classifier_bias.
struct ParamLayout {
  explicit ParamLayout(const NetworkSpec& spec);
  std::size_t opening_weight = 0, opening_bias = 0, weights = 0, biases = 0;
  std::size_t classifier_weight = 0, classifier_bias = 0, size = 0;
  bool has_opening = false;
};

/// Result of one objective evaluation.
struct Evaluation {
  double objective = 0.0;       ///< loss + regularisation
  double loss = 0.0;            ///< mean cross-entropy
  double regularization = 0.0;  ///< the three regularisers
  std::int64_t correct = 0;     ///< examples classified correctly
  std::int64_t examples = 0;
};

class DenseResNet {
 public:
  explicit DenseResNet(const NetworkSpec& spec);

  const NetworkSpec& spec() const { return spec_; }
  const ParamLayout& layout() const { return layout_; }
  std::size_t state_size(int s) const { return static_cast<std::size_t>(s) * spec_.width; }

  // ---- per-layer building blocks on a batch of s examples; states are (s, w) row-major
  void opening(const double* theta, const double* X, int s, double* U0) const;
  /// out = in + dt * act(K_n in + b_n).
  void step(const double* theta, int n, double dt, const double* in, double* out, int s,
            double* deriv = nullptr) const;
  /// lam = lam_next + dt K_n^T (act'(K_n u + b_n) * lam_next); if grad != nullptr, the
  /// gradient of layer n (scaled by gscale, normally h) is accumulated into grad.
  void adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                    double* lam, int s, double* grad = nullptr, double gscale = 0.0,
                    const double* deriv = nullptr) const;
  /// Accumulates the gradient of layer n (scaled by gscale) from u_n and lam_{n+1}
  /// (deriv = act'(K_n u_n + b_n) when known).
  void layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                      double* grad, double gscale, const double* deriv = nullptr) const;
  /// deriv = act'(K_n u + b_n): layer n linearised about u.
  void activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const;
  /// Summed loss over the batch; lam (optional) receives dJ/du_N for the mean loss
  /// (weight `scale` per example); grad (optional) accumulates the classifier gradient.
  double classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                    double scale, std::int64_t* correct, double* lam, double* grad) const;
  void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                        double* grad) const;
  /// Value of the regularisers; adds their gradient into grad when non-null.
  double regularization(const double* theta, const Regularization& reg, double* grad) const;

  // ---- serial sweeps
  /// states: (N+1) * s * w; state n at states + n*s*w.
  void forward_sweep(const double* theta, const double* X, int s, double* states,
                     double* derivs = nullptr) const;
  /// Adjoint sweep from lam_N down to lam_0, accumulating layer gradients and the opening's.
  void backward_sweep(const double* theta, const double* X, const double* states, const double* lamN,
                      int s, double* grad, const double* derivs = nullptr) const;

  /// Objective, loss and accuracy on (X, labels); the gradient when grad != nullptr
  /// (grad is overwritten). Serial forward and backward sweeps.
  Evaluation evaluate(const double* theta, const double* X, const std::int64_t* labels, int s,
                      const Regularization& reg, double* grad) const;
  /// Logits (s, n_classes).
  void logits(const double* theta, const double* X, int s, double* Z) const;

 private:
  NetworkSpec spec_;
  ParamLayout layout_;
};

}  // namespace layerparallel
