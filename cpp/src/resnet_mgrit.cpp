// The dense ResNet's sweeps by MGRIT: propagators and the objective/gradient
// solver (ALGORITHM.md sections 3-4).
#include "layerparallel/resnet_mgrit.h"

#include <algorithm>
#include <numeric>

#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
int checked_batch(int batch) {
  LP_REQUIRE(batch >= 1, "the batch must hold at least one example, got " << batch);
  return batch;
}
}  // namespace

void ResNetForwardPropagator::step(int, int i0, int i1, const double* in, double* out) {
  net_.step(theta_, i0, (i1 - i0) * net_.h(), in, out, batch_);
}

void ResNetAdjointPropagator::step(int, int k0, int k1, const double* in, double* out) {
  const int N = net_.layers();
  const int n1 = N - k0, n0 = N - k1;
  net_.adjoint_step(theta_, n0, (n1 - n0) * net_.h(), (*states_)[n0], in, out, batch_, nullptr, 0.0,
                    derivs_ ? derivs_ + static_cast<std::size_t>(n0) * state_size() : nullptr);
}

void ResNetForwardPropagator::propagate(int level, const int* idx, int count, const double* in,
                                        double* const* outs, const double* const* rhs) {
  if (!net_.propagate(theta_, idx, count, in, outs, rhs, batch_))
    Propagator::propagate(level, idx, count, in, outs, rhs);
}

void ResNetAdjointPropagator::propagate(int level, const int* idx, int count, const double* in,
                                        double* const* outs, const double* const* rhs) {
  if (derivs_ == nullptr || !net_.adjoint_propagate(theta_, idx, count, in, outs, rhs, batch_, derivs_))
    Propagator::propagate(level, idx, count, in, outs, rhs);
}

ResNetMgrit::ResNetMgrit(const ResidualNetwork& net, int batch, const MgritOptions& forward,
                         const MgritOptions& adjoint)
    : net_(net),
      batch_(checked_batch(batch)),
      spec_layers_(net.layers()),
      fprop_(net, batch),
      aprop_(net, batch),
      forward_(fprop_, net.layers(), forward),
      adjoint_(aprop_, net.layers(), adjoint),
      u0_(net.state_size(batch)),
      lamN_(net.state_size(batch)),
      states_(net.layers() + 1, nullptr),
      derivs_(static_cast<std::size_t>(net.layers()) * net.state_size(batch)) {
  aprop_.set_states(&states_, derivs_.data());
}

void ResNetMgrit::reset() { started_ = false; }

void ResNetMgrit::set_relative_tolerance(double rel_tol) {
  LP_REQUIRE(std::isfinite(rel_tol) && rel_tol >= 0.0, "the relative MGRIT tolerance must be >= 0, got " << rel_tol);
  rel_tol_ = rel_tol;
}

namespace {
SolveReport run(Mgrit& solver, int budget) {
  const long long before = solver.total_steps();
  SolveReport r;
  if (budget < 0) {
    r.converged = solver.solve();
  } else {
    solver.iterate(budget);
  }
  r.residuals = solver.residual_history();
  r.cycles = solver.iterations();
  solver.finalize();
  r.steps = solver.total_steps() - before;
  return r;
}
}  // namespace

MgritEvaluation ResNetMgrit::evaluate(const double* theta, const double* X, const std::int64_t* labels,
                                      const Regularization& reg, double* grad, int forward_budget,
                                      int adjoint_budget) {
  const int N = spec_layers_;
  const int s = batch_;
  MgritEvaluation out;
  out.eval.examples = s;

  // Forward: u_0 from the opening, then MGRIT over the layers (warm: the iterate
  // of the previous evaluation is kept and only u_0 is replaced).
  net_.opening(theta, X, s, u0_.data());
  fprop_.set_theta(theta);
  if (!started_) {
    forward_.set_initial(u0_.data());
    forward_.reset();
  } else {
    forward_.set_initial(u0_.data());
  }
  if (rel_tol_ > 0.0) forward_.set_tolerances(rel_tol_ * fprop_.norm(u0_.data()), 0.0);
  out.forward = run(forward_, forward_budget);
  for (int n = 0; n <= N; ++n) states_[n] = forward_.state(n);

  const double scale = 1.0 / s;
  if (grad) std::fill(grad, grad + net_.param_size(), 0.0);
  const double total = net_.classifier(theta, states_[N], labels, s, scale, &out.eval.correct,
                                       grad ? lamN_.data() : nullptr, grad);
  out.eval.loss = total / s;
  out.eval.regularization = net_.regularization(theta, reg, grad);
  out.eval.objective = out.eval.loss + out.eval.regularization;
  if (!grad) {
    started_ = true;
    return out;
  }

  // Adjoint: the same engine backwards in layers, linearised about the states.
  // Every adjoint step through layer n (any level, any cycle) needs the same
  // act'(K_n u_n + b_n): compute it once per layer.
  const std::size_t sz = net_.state_size(s);
#pragma omp parallel for schedule(static) if (N > 1)
  for (int n = 0; n < N; ++n) net_.activation_deriv(theta, n, states_[n], derivs_.data() + n * sz, s);
  aprop_.set_theta(theta);
  adjoint_.set_initial(lamN_.data());
  if (!started_) adjoint_.reset();
  if (rel_tol_ > 0.0) adjoint_.set_tolerances(rel_tol_ * aprop_.norm(lamN_.data()), 0.0);
  out.adjoint = run(adjoint_, adjoint_budget);
  started_ = true;

  // Parameter gradients on the finest level only: layer n needs u_n and
  // lambda_{n+1}; layers are independent (each writes its own block).
  const double h = net_.h();
#pragma omp parallel for schedule(static) if (N > 1)
  for (int n = 0; n < N; ++n)
    net_.layer_gradient(theta, n, states_[n], adjoint_.state(N - n - 1), s, grad, h, derivs_.data() + n * sz);
  net_.opening_gradient(theta, X, adjoint_.state(N), s, grad);
  return out;
}

}  // namespace layerparallel
