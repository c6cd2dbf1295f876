// A residual network's forward and adjoint sweeps solved by MGRIT (docs/algorithm.md
// sections 3-4): the two propagators (forward steps with injected weights and
// coarse step size, the adjoint running backwards in layers and linearised
// about the fine primal states) and the solver that turns them into an
// objective and a gradient, exactly (to a tolerance) or with a fixed budget of
// warm-started cycles (the simultaneous / one-shot method).
#pragma once

#include <atomic>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "layerparallel/comm.h"
#include "layerparallel/mgrit.h"
#include "layerparallel/network.h"
#include "layerparallel/propagator.h"

namespace layerparallel {

/// out[q] = |a[q] - b[q]| for q < count through one StateSpace::sum_sq_diff_batch.
inline void batched_norms(const StateSpace& sp, std::size_t n, const double* const* a, const double* const* b,
                          int count, double* out) {
  sp.sum_sq_diff_batch(a, b, count, n, out);
  for (int q = 0; q < count; ++q) out[q] = std::sqrt(out[q]);
}

/// u_{i1} = u_{i0} + (i1 - i0) h sigma(K_{i0} u_{i0} + b_{i0}) on a batch: the weights
/// of the fine layer at the coarse interval's left point, the coarse step size.
class ResNetForwardPropagator final : public Propagator {
 public:
  ResNetForwardPropagator(const ResidualNetwork& net, int batch) : net_(net), batch_(batch) {}
  void set_theta(const double* theta) { theta_ = theta; }
  std::size_t state_size() const override { return net_.state_size(batch_); }
  StateSpace& space() const override { return net_.space(); }
  void norm_diff_batch(const double* const* a, const double* const* b, int count, double* out) const override {
    batched_norms(space(), state_size(), a, b, count, out);
  }
  void step(int level, int i0, int i1, const double* in, double* out) override;
  /// The network's fused chain when it has one (ResidualNetwork::propagate).
  void propagate(int level, const int* idx, int count, const double* in, double* const* outs,
                 const double* const* rhs = nullptr) override;
  bool fuses_chains() const override { return net_.fuses_chains(); }
  void propagate_chains(int, const Chain* chains, int n) override { net_.propagate_chains(theta_, chains, n, batch_); }

  /// In the final sweep, write act' of every layer stepped through to derivs (layer n
  /// at n - first); nullptr: never. captured() counts the steps that did.
  void capture_derivs(double* derivs, int first) {
    capture_ = derivs;
    capture_first_ = first;
    captured_ = 0;
  }
  void final_sweep(bool on) override { capturing_ = on && capture_ != nullptr; }
  long long captured() const { return captured_.load(); }

 private:
  const ResidualNetwork& net_;
  int batch_;
  const double* theta_ = nullptr;
  double* capture_ = nullptr;
  int capture_first_ = 0;
  bool capturing_ = false;
  std::atomic<long long> captured_{0};
};

/// The adjoint recursion in reversed index k = N - n: a step from k0 to k1 maps
/// lambda_{n1} to lambda_{n0} (n1 = N - k0 > n0 = N - k1) with
/// lambda_{n0} = lambda_{n1} + (n1 - n0) h K_{n0}^T (sigma'(K_{n0} u_{n0} + b_{n0}) * lambda_{n1}),
/// linearised about the fine primal state u_{n0}.
class ResNetAdjointPropagator final : public Propagator {
 public:
  ResNetAdjointPropagator(const ResidualNetwork& net, int batch) : net_(net), batch_(batch) {}
  void set_theta(const double* theta) { theta_ = theta; }
  /// states[n] points at the primal state u_n, n = 0..N; derivs (optional) holds
  /// act'(K_n u_n + b_n) for n = first_layer.., one state_size() block each.
  void set_states(const std::vector<const double*>* states, const double* derivs = nullptr, int first_layer = 0) {
    states_ = states;
    derivs_ = derivs;
    first_layer_ = first_layer;
  }
  std::size_t state_size() const override { return net_.state_size(batch_); }
  StateSpace& space() const override { return net_.space(); }
  void norm_diff_batch(const double* const* a, const double* const* b, int count, double* out) const override {
    batched_norms(space(), state_size(), a, b, count, out);
  }
  void step(int level, int k0, int k1, const double* in, double* out) override;
  void propagate(int level, const int* idx, int count, const double* in, double* const* outs,
                 const double* const* rhs = nullptr) override;
  bool fuses_chains() const override { return net_.fuses_chains() && derivs_ != nullptr; }
  void propagate_chains(int, const Chain* chains, int n) override {
    net_.adjoint_propagate_chains(theta_, chains, n, batch_, derivs_, first_layer_);
  }

  /// In the final sweep, write each layer's parameter-gradient partial sums to
  /// slots (ResidualNetwork::adjoint_propagate_gradient); nullptr: never.
  void capture_gradient(double* slots) {
    slots_ = slots;
    captured_ = 0;
  }
  void final_sweep(bool on) override { capturing_ = on && slots_ != nullptr && derivs_ != nullptr; }
  long long captured() const { return captured_.load(); }

 private:
  const ResidualNetwork& net_;
  int batch_;
  const double* theta_ = nullptr;
  const std::vector<const double*>* states_ = nullptr;
  const double* derivs_ = nullptr;
  int first_layer_ = 0;
  double* slots_ = nullptr;
  bool capturing_ = false;
  std::atomic<long long> captured_{0};
};

/// What one MGRIT solve (forward or adjoint) did in one evaluation.
struct SolveReport {
  std::vector<double> residuals;  ///< residual history of the call (entry 0: start)
  int cycles = 0;                 ///< MGRIT cycles run
  long long steps = 0;            ///< step evaluations (all levels) in the call
  bool converged = false;         ///< reached the tolerance (exact solves)
};

struct MgritEvaluation {
  Evaluation eval;
  SolveReport forward, adjoint;
};

/// Objective and gradient of a residual network on a fixed batch, with both sweeps
/// solved by MGRIT. Keeps the space-time state and adjoint between calls, so
/// consecutive evaluations warm-start (the one-shot method).
class ResNetMgrit {
 public:
  /// With a communicator of P > 1 processes the layers are distributed: rank r
  /// owns the layers split(N, P, r) (N >= P: every process needs a layer), the
  /// forward solve runs over them in rank order and the adjoint in reverse. Every
  /// rank must make the same calls with the same theta (parameters are
  /// replicated; the gradient is distributed, see evaluate()).
  ResNetMgrit(const ResidualNetwork& net, int batch, const MgritOptions& forward, const MgritOptions& adjoint,
              Comm* comm = nullptr);

  /// Objective (and gradient when grad != nullptr, overwritten) on (X, labels),
  /// which must hold `batch` examples. A budget < 0 solves to the options'
  /// tolerance (max_iter cycles at most); a budget >= 0 runs exactly that many
  /// cycles from the current (warm) iterate.
  ///
  /// Distributed: the objective, loss and accuracy are the same on every rank;
  /// grad holds this rank's share (its layers, plus the opening on the first
  /// rank, the classifier on the last), so the gradient is the sum of the
  /// ranks' grad vectors. theta needs only the owned and foreign_layers()
  /// entries (the opening on the first rank, the classifier on the last); the
  /// regularisers must be zero (the caller adds them per process). Only the
  /// first rank needs X and only the last the labels; the others may pass any
  /// batch-sized arrays.
  MgritEvaluation evaluate(const double* theta, const double* X, const std::int64_t* labels,
                           const Regularization& reg, double* grad, int forward_budget, int adjoint_budget);

  /// Forgets the warm-start state: the next evaluation starts from u_0 (lambda_N)
  /// copied to every point.
  void reset();

  /// Whether an evaluation has run since construction or reset() (a warm start exists).
  bool started() const { return started_; }
  /// Doubles in one trajectory of save_warm_start(): (N + 1) states of the batch.
  std::size_t trajectory_size() const;
  /// Copies the warm-start iterates (the finalized forward and adjoint trajectories,
  /// trajectory_size() doubles each, point i at i * state size; distributed: the owned
  /// points only) for a checkpoint. Host memory only; requires started().
  void save_warm_start(double* forward, double* adjoint);
  /// Restores what save_warm_start() gave (on a solver built with the same arguments):
  /// the next evaluation continues from it exactly as the saved solver would have.
  void load_warm_start(const double* forward, const double* adjoint);

  /// Tolerance of exact solves relative to the size of the initial value: a solve
  /// stops when the C-point residual norm <= rel_tol * |u_0| (forward) or
  /// rel_tol * |lambda_N| (adjoint). 0 keeps the options' absolute tol / rtol.
  void set_relative_tolerance(double rel_tol);
  /// Different relative tolerances for the forward and the adjoint solves.
  void set_relative_tolerances(double forward, double adjoint);
  /// The most cycles of the forward and adjoint solves of later evaluations with a
  /// budget < 0 (solves to the tolerance); the options' max_iter until called.
  void set_cycle_limit(int max_cycles);

  /// Finalised trajectories of the last evaluation: u_n / lambda_n, n = 0..N.
  const double* state(int n) { return forward_.state(n); }
  const double* adjoint(int n) { return adjoint_.state(spec_layers_ - n); }

  /// Layers [begin, end) of this process (all of them without distribution).
  Range owned_layers() const { return layers_; }
  bool distributed() const { return nprocs_ > 1; }
  /// Layers outside owned_layers() whose parameters this process reads: a coarse
  /// forward step into an owned point uses the layer at the step's left end,
  /// which lies on a process to the left for the first owned point of a coarse
  /// level (at most one layer per level; the adjoint needs none). A caller that
  /// keeps only its own parameters must fill these in before evaluate().
  std::vector<int> foreign_layers() const;

  /// With fixed budgets on one process (host memory, narrow dense layers), act' and
  /// the parameter gradient are formed inside the last finest sweep of the forward
  /// and adjoint solves, while the states are in cache, instead of in separate
  /// passes over all layers afterwards: the same values, bit for bit (on by default;
  /// off for comparisons).
  void set_fused_final_sweep(bool on) { fused_ = on; }

  const Mgrit& forward_solver() const { return forward_; }
  const Mgrit& adjoint_solver() const { return adjoint_; }
  int batch() const { return batch_; }

 private:
  void bcast_state(StateBuffer& v, int root);

  const ResidualNetwork& net_;
  int batch_;
  int spec_layers_;
  SerialComm own_comm_;
  Comm* comm_;
  int nprocs_, rank_;
  Range layers_;
  ResNetForwardPropagator fprop_;
  ResNetAdjointPropagator aprop_;
  Mgrit forward_, adjoint_;
  bool started_ = false;
  double rel_tol_ = 0.0, rel_tol_adjoint_ = 0.0;
  StateBuffer u0_, lamN_;       // in the network's memory (net.space())
  std::vector<const double*> states_;
  StateBuffer derivs_;          // act'(K_n u_n + b_n) of the current trajectory, per owned layer
  bool fused_ = true;
  std::vector<double> grad_slots_;  // per chunk and layer: the fused gradient's partial sums
};

}  // namespace layerparallel
