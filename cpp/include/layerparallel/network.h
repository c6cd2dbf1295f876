// What every residual network offers the sweeps, the MGRIT propagators and the
// bindings (ResidualNetwork), and the dense residual network of
// docs/algorithm.md sections 1-2 written once over a Backend (backend.h), so
// the same class runs on the cpu, the emulator and cuda.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <memory>

#include "layerparallel/activation_impl.h"
#include "layerparallel/backend.h"
#include "layerparallel/parameters.h"
#include "layerparallel/propagator.h"
#include "layerparallel/state_space.h"

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

/// What every residual network offers the sweeps, the MGRIT propagators and the
/// bindings: u_{n+1} = u_n + dt sigma(layer_n(u_n)) on a batch of s examples, an
/// opening before and a softmax classifier after. States are (s, state_width)
/// row-major in the memory of the network's backend, as are theta, gradients and
/// labels; features X and logits Z are host memory. Every method works on every
/// backend. Implementations: DenseResNet, ConvResNet.
class ResidualNetwork {
 public:
  virtual ~ResidualNetwork() = default;

  virtual int layers() const = 0;
  virtual double h() const = 0;
  /// Doubles per example in the input X.
  virtual int input_size() const = 0;
  virtual int classes() const = 0;
  /// Doubles per example in a state.
  virtual int state_width() const = 0;
  /// The named blocks of the flat parameter vector (the layout, described once).
  virtual ParameterLayout parameters() const = 0;
  std::size_t param_size() const { return param_size_; }
  std::size_t state_size(int s) const { return static_cast<std::size_t>(s) * state_width(); }

  /// Where states, parameters and gradients live and the layer operations run.
  Backend& backend() const { return *backend_; }
  /// The memory of states, parameters and gradients (the backend).
  StateSpace& space() const { return *backend_; }

  // ---- per-layer building blocks on a batch of s examples
  virtual void opening(const double* theta, const double* X, int s, double* U0) const = 0;
  /// out = in + dt * act(layer_n(in)); deriv (optional) receives act'(.).
  virtual void step(const double* theta, int n, double dt, const double* in, double* out, int s,
                    double* deriv = nullptr) const = 0;
  /// lam = lam_next + dt layer_n^T (act'(layer_n(u)) * lam_next); if grad != nullptr the
  /// gradient of layer n (scaled by gscale, normally h) is accumulated into grad.
  /// deriv (optional) is act'(layer_n(u)).
  virtual void adjoint_step(const double* theta, int n, double dt, const double* u, const double* lam_next,
                            double* lam, int s, double* grad = nullptr, double gscale = 0.0,
                            const double* deriv = nullptr) const = 0;
  /// Accumulates the gradient of layer n (scaled by gscale) from u_n and lam_{n+1}.
  virtual void layer_gradient(const double* theta, int n, const double* u, const double* lam_next, int s,
                              double* grad, double gscale, const double* deriv = nullptr) const = 0;
  /// deriv = act'(layer_n(u)): layer n linearised about u.
  virtual void activation_deriv(const double* theta, int n, const double* u, double* deriv, int s) const = 0;
  /// Summed loss over the batch; lam (optional) receives dJ/du_N for the mean loss
  /// (weight `scale` per example); grad (optional) accumulates the classifier gradient.
  virtual double classifier(const double* theta, const double* UN, const std::int64_t* labels, int s,
                            double scale, std::int64_t* correct, double* lam, double* grad) const = 0;
  virtual void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                                double* grad) const = 0;
  /// Logits (s, classes), host memory, from final states.
  virtual void classifier_logits(const double* theta, const double* UN, int s, double* Z) const = 0;
  /// Value of the regularisers (parameters.h); adds their gradient into grad when non-null.
  double regularization(const double* theta, const Regularization& reg, double* grad) const;

  /// Optional fused chains of steps for the MGRIT propagators (the contract of
  /// Propagator::propagate, with fine layer indices idx and step size h per index);
  /// return false to get the plain loop of steps.
  virtual bool propagate(const double*, const int*, int, const double*, double* const*, const double* const*,
                         int) const {
    return false;
  }
  /// The adjoint chain in reversed index k = N - n, with act'(.) of layers first.. in
  /// derivs (one state each, layer n at derivs + (n - first) state_size(s)).
  virtual bool adjoint_propagate(const double*, const int*, int, const double*, double* const*,
                                 const double* const*, int, const double*, int) const {
    return false;
  }
  /// A finest-level forward chain (unit steps, no right-hand sides) that also writes
  /// act'(K_n u_n + b_n) of every layer n it steps through to derivs + (n - first)
  /// state_size(s), the same values as activation_deriv() (MGRIT's final sweep).
  virtual bool propagate_derivs(const double*, const int*, int, const double*, double* const*, int, double*,
                                int) const {
    return false;
  }
  /// A finest-level adjoint chain (unit steps, no right-hand sides) that also writes
  /// the parameter-gradient contribution of every layer n0 it steps through, one
  /// slot per chunk of kReduceChunk examples: slots + (c layers() + n0) grad_slot_size()
  /// (the K block then the bias), the partial sums layer_gradient() forms, for
  /// reduce_gradient_slots(). states[n] is u_n.
  virtual bool adjoint_propagate_gradient(const double*, const int*, int, const double*, double* const*, int,
                                          const double*, int, const double* const*, double*) const {
    return false;
  }
  /// Doubles per gradient slot (0: no fused gradient).
  virtual std::size_t grad_slot_size() const { return 0; }
  /// grad's layer blocks of layers [a, b) += the slots summed in chunk order (as
  /// layer_gradient() sums its chunks), for a batch of s examples.
  virtual void reduce_gradient_slots(const double*, int, int, int, double*) const {}

  /// True when the backend relaxes several chains of one level at once
  /// (Propagator::propagate_chains); then the two functions below are used.
  bool fuses_chains() const { return backend_->fuses_chains(); }
  /// Every chain's steps (+ right-hand sides).
  virtual void propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const;
  /// The adjoint chains; derivs holds act'(.) of layers first.. (one state each).
  virtual void adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                        const double* derivs, int first) const;

  // ---- serial sweeps (generic: one step per layer; implementations may fuse)
  /// states: (N+1) * state_size(s); state n at states + n * state_size(s).
  virtual void forward_sweep(const double* theta, const double* X, int s, double* states,
                             double* derivs = nullptr) const;
  /// Adjoint sweep from lam_N down to lam_0, accumulating layer gradients and the opening's.
  virtual void backward_sweep(const double* theta, const double* X, const double* states, const double* lamN,
                              int s, double* grad, const double* derivs = nullptr) const;
  /// Whether evaluate() should keep act'(.) from the forward sweep for the adjoint.
  virtual bool keep_derivs() const { return true; }

  /// Objective, loss and accuracy on (X, labels); the gradient when grad != nullptr
  /// (grad is overwritten). Serial forward and backward sweeps.
  Evaluation evaluate(const double* theta, const double* X, const std::int64_t* labels, int s,
                      const Regularization& reg, double* grad) const;
  /// Logits (s, classes), host memory.
  void logits(const double* theta, const double* X, int s, double* Z) const;

 protected:
  /// backend: null means the cpu. param_size: the size of parameters().
  ResidualNetwork(std::shared_ptr<Backend> backend, std::size_t param_size);
  /// Scratch states reused across calls (per thread on the host, per network on a device).
  enum Work { kStates = 0, kDerivs, kLam, kLam2, kLamN, kSlots, kScratch, kWorkSlots };
  double* workspace(Work slot, std::size_t n) const;
  /// The steps of chain c one by one (+ rhs), and the adjoint's.
  void step_chain(const double* theta, const Propagator::Chain& c, int s) const;
  void adjoint_step_chain(const double* theta, const Propagator::Chain& c, int s, const double* derivs,
                          int first) const;

 private:
  std::shared_ptr<Backend> backend_;
  std::size_t param_size_;
  // Device scratch; a copy of the network starts with none of its own.
  struct Scratch {
    StateBuffer buf[kWorkSlots];
    Scratch() = default;
    Scratch(const Scratch&) {}
    Scratch& operator=(const Scratch&) { return *this; }
  };
  mutable Scratch work_;
};

/// The dense residual network, on any backend.
class DenseResNet : public ResidualNetwork {
 public:
  /// backend: the cpu when null. Throws std::invalid_argument naming the first bad field.
  explicit DenseResNet(const NetworkSpec& spec, std::shared_ptr<Backend> backend = nullptr);

  const NetworkSpec& spec() const { return spec_; }
  const ParamLayout& layout() const { return layout_; }

  int layers() const override { return spec_.layers; }
  double h() const override { return spec_.h(); }
  int input_size() const override { return spec_.n_features; }
  int classes() const override { return spec_.n_classes; }
  int state_width() const override { return spec_.width; }
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
  void opening_gradient(const double* theta, const double* X, const double* lam0, int s,
                        double* grad) const override;
  void classifier_logits(const double* theta, const double* UN, int s, double* Z) const override;

  bool propagate(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                 const double* const* rhs, int s) const override;
  bool adjoint_propagate(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                         const double* const* rhs, int s, const double* derivs, int first) const override;
  bool propagate_derivs(const double* theta, const int* idx, int count, const double* in, double* const* outs,
                        int s, double* derivs, int first) const override;
  bool adjoint_propagate_gradient(const double* theta, const int* idx, int count, const double* in,
                                  double* const* outs, int s, const double* derivs, int first,
                                  const double* const* states, double* slots) const override;
  std::size_t grad_slot_size() const override;
  void reduce_gradient_slots(const double* slots, int a, int b, int s, double* grad) const override;
  void propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s) const override;
  void adjoint_propagate_chains(const double* theta, const Propagator::Chain* chains, int n, int s,
                                const double* derivs, int first) const override;

  /// The whole sweep as one chain (narrow layers on the cpu: one parallel region,
  /// each chunk of examples through every layer in cache).
  void forward_sweep(const double* theta, const double* X, int s, double* states,
                     double* derivs = nullptr) const override;
  void backward_sweep(const double* theta, const double* X, const double* states, const double* lamN,
                      int s, double* grad, const double* derivs = nullptr) const override;
  bool keep_derivs() const override { return backend().dense_keeps_derivs(spec_.width); }

 private:
  DenseLayers hidden(const double* theta) const;

  NetworkSpec spec_;
  ParamLayout layout_;
};

}  // namespace layerparallel
