// A residual network's sweeps by MGRIT: propagators and the objective/gradient
// solver (docs/algorithm.md sections 3-4).
#include "layerparallel/resnet_mgrit.h"

#include <algorithm>
#include <numeric>

#include "layerparallel/dense.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
int checked_batch(int batch) {
  LP_REQUIRE(batch >= 1, "the batch must hold at least one example, got " << batch);
  return batch;
}

Partition layer_partition(const ResidualNetwork& net, Comm* comm, bool reversed) {
  if (comm == nullptr || comm->size() == 1) return {};
  LP_REQUIRE(net.layers() >= comm->size(), "the " << net.layers() << " layers cannot be distributed over "
                                                  << comm->size() << " processes: each needs at least one layer");
  return Partition::contiguous(net.layers(), comm->size(), reversed, reversed ? 64 : 0);
}
}  // namespace

void ResNetForwardPropagator::step(int, int i0, int i1, const double* in, double* out) {
  net_.step(theta_, i0, (i1 - i0) * net_.h(), in, out, batch_);
}

void ResNetAdjointPropagator::step(int, int k0, int k1, const double* in, double* out) {
  const int N = net_.layers();
  const int n1 = N - k0, n0 = N - k1;
  net_.adjoint_step(theta_, n0, (n1 - n0) * net_.h(), (*states_)[n0], in, out, batch_, nullptr, 0.0,
                    derivs_ ? derivs_ + static_cast<std::size_t>(n0 - first_layer_) * state_size() : nullptr);
}

void ResNetForwardPropagator::propagate(int level, const int* idx, int count, const double* in,
                                        double* const* outs, const double* const* rhs) {
  if (capturing_ && level == 0 && rhs == nullptr &&
      net_.propagate_derivs(theta_, idx, count, in, outs, batch_, capture_, capture_first_)) {
    captured_ += count;
    return;
  }
  if (!net_.propagate(theta_, idx, count, in, outs, rhs, batch_))
    Propagator::propagate(level, idx, count, in, outs, rhs);
}

void ResNetAdjointPropagator::propagate(int level, const int* idx, int count, const double* in,
                                        double* const* outs, const double* const* rhs) {
  if (capturing_ && level == 0 && rhs == nullptr &&
      net_.adjoint_propagate_gradient(theta_, idx, count, in, outs, batch_, derivs_, first_layer_,
                                      states_->data(), slots_)) {
    captured_ += count;
    return;
  }
  if (derivs_ == nullptr || !net_.adjoint_propagate(theta_, idx, count, in, outs, rhs, batch_, derivs_, first_layer_))
    Propagator::propagate(level, idx, count, in, outs, rhs);
}

ResNetMgrit::ResNetMgrit(const ResidualNetwork& net, int batch, const MgritOptions& forward,
                         const MgritOptions& adjoint, Comm* comm)
    : net_(net),
      batch_(checked_batch(batch)),
      spec_layers_(net.layers()),
      comm_(comm ? comm : &own_comm_),
      nprocs_(comm_->size()),
      rank_(comm_->rank()),
      layers_(split(net.layers(), nprocs_, rank_)),
      fprop_(net, batch),
      aprop_(net, batch),
      forward_(fprop_, net.layers(), forward, comm_, layer_partition(net, comm_, false)),
      adjoint_(aprop_, net.layers(), adjoint, comm_, layer_partition(net, comm_, true)),
      u0_(net.space(), net.state_size(batch)),
      lamN_(net.space(), net.state_size(batch)),
      states_(net.layers() + 1, nullptr),
      derivs_(net.space(), static_cast<std::size_t>(layers_.size()) * net.state_size(batch)) {
  aprop_.set_states(&states_, derivs_.data(), static_cast<int>(layers_.begin));
}

void ResNetMgrit::reset() { started_ = false; }

std::size_t ResNetMgrit::trajectory_size() const {
  return static_cast<std::size_t>(spec_layers_ + 1) * net_.state_size(batch_);
}

void ResNetMgrit::save_warm_start(double* forward, double* adjoint) {
  LP_REQUIRE(started_, "no warm start to save: the solver has not evaluated since it was built or reset");
  LP_REQUIRE(net_.space().host(), "warm starts of a device-resident solver cannot be saved");
  forward_.trajectory(forward);
  adjoint_.trajectory(adjoint);
}

void ResNetMgrit::load_warm_start(const double* forward, const double* adjoint) {
  LP_REQUIRE(net_.space().host(), "warm starts of a device-resident solver cannot be loaded");
  // Point 0 of each trajectory is its initial value (replaced by the next evaluation);
  // the rest becomes the iterate, as after the saved solver's last evaluation.
  forward_.set_initial(forward);
  forward_.reset();
  forward_.warm_start(forward);
  adjoint_.set_initial(adjoint);
  adjoint_.reset();
  adjoint_.warm_start(adjoint);
  started_ = true;
}

void ResNetMgrit::bcast_state(StateBuffer& v, int root) {
  StateSpace& sp = net_.space();
  if (sp.host() || comm_->accepts_device_memory()) {
    sp.synchronize();
    comm_->bcast(v.data(), v.size(), root);
    return;
  }
  std::vector<double> h(v.size());
  sp.download(h.data(), v.data(), v.size());
  comm_->bcast(h.data(), h.size(), root);
  sp.upload(v.data(), h.data(), h.size());
}

std::vector<int> ResNetMgrit::foreign_layers() const {
  std::vector<int> out;
  const Hierarchy& h = forward_.hierarchy();
  for (int l = 1; l < h.num_levels(); ++l) {
    const Range r = forward_.owned_points(l);
    if (r.empty() || r.begin < 1) continue;
    const int i0 = h.fine_index(l, static_cast<int>(r.begin) - 1);
    if (i0 < layers_.begin && std::find(out.begin(), out.end(), i0) == out.end()) out.push_back(i0);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void ResNetMgrit::set_relative_tolerance(double rel_tol) {
  LP_REQUIRE(std::isfinite(rel_tol) && rel_tol >= 0.0, "the relative MGRIT tolerance must be >= 0, got " << rel_tol);
  rel_tol_ = rel_tol_adjoint_ = rel_tol;
}

void ResNetMgrit::set_relative_tolerances(double forward, double adjoint) {
  LP_REQUIRE(std::isfinite(forward) && forward >= 0.0, "the relative MGRIT tolerance must be >= 0, got " << forward);
  set_relative_tolerance(adjoint);
  rel_tol_ = forward;
}

void ResNetMgrit::set_cycle_limit(int max_cycles) {
  forward_.set_max_iter(max_cycles);
  adjoint_.set_max_iter(max_cycles);
}

namespace {
SolveReport run(Mgrit& solver, int budget, bool defer) {
  const long long before = solver.total_steps();
  SolveReport r;
  if (budget < 0) {
    r.converged = solver.solve();
  } else {
    solver.iterate(budget, defer);
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
  const bool first = rank_ == 0, last = rank_ == nprocs_ - 1;
  LP_REQUIRE(nprocs_ == 1 || (reg.tikhonov == 0.0 && reg.classifier == 0.0 && reg.ddt == 0.0),
             "with the layers distributed the regularisers are added per process by the caller: pass zero weights");
  const int a = static_cast<int>(layers_.begin), b = static_cast<int>(layers_.end);
  MgritEvaluation out;
  out.eval.examples = s;

  // Forward: u_0 from the opening, then MGRIT over the layers (warm: the iterate
  // of the previous evaluation is kept and only u_0 is replaced). Distributed, the
  // first rank computes u_0; the others need it only for the default guess (and
  // its norm for a relative tolerance, which must be the same everywhere).
  if (first) net_.opening(theta, X, s, u0_.data());
  if (!started_ && nprocs_ > 1) bcast_state(u0_, 0);
  fprop_.set_theta(theta);
  forward_.set_initial(u0_.data());
  if (!started_) forward_.reset();
  // Fixed budgets need no tolerance, and their residual reductions are deferred
  // to one reduction at the end of the evaluation: no synchronisation between
  // the processes inside an evaluation other than the neighbour messages.
  const bool defer = nprocs_ > 1;
  if (rel_tol_ > 0.0 && forward_budget < 0) {
    double nrm = first ? fprop_.norm(u0_.data()) : 0.0;
    if (nprocs_ > 1) comm_->bcast(&nrm, 1, 0);
    forward_.set_tolerances(rel_tol_ * nrm, 0.0);
  }
  // Fused final sweeps (set_fused_final_sweep): one process, host memory, a gradient.
  const bool fuse = fused_ && grad != nullptr && nprocs_ == 1 && net_.space().host();
  fprop_.capture_derivs(fuse ? derivs_.data() : nullptr, a);
  out.forward = run(forward_, forward_budget, defer);
  const bool derivs_done = fuse && fprop_.captured() == b - a;
  fprop_.capture_derivs(nullptr, a);
  for (int n = a; n <= b; ++n) states_[n] = forward_.state(n);

  const double scale = 1.0 / s;
  if (grad) net_.space().zero(grad, net_.param_size());
  double sums[2] = {0.0, 0.0};  // loss, correct (this process's part)
  if (last) {
    std::int64_t correct = 0;
    sums[0] = net_.classifier(theta, states_[N], labels, s, scale, &correct, grad ? lamN_.data() : nullptr, grad);
    sums[1] = static_cast<double>(correct);
  }
  // One reduction at the end: the residual sums of the deferred solves, then loss and hits.
  auto finish = [&]() {
    std::vector<double> buf;
    const bool fdef = forward_budget >= 0 && defer && forward_.options().compute_residuals;
    const bool adef = grad && adjoint_budget >= 0 && defer && adjoint_.options().compute_residuals;
    if (fdef) buf.insert(buf.end(), forward_.pending_norm_slots().begin(), forward_.pending_norm_slots().end());
    const std::size_t nf = buf.size();
    if (adef) buf.insert(buf.end(), adjoint_.pending_norm_slots().begin(), adjoint_.pending_norm_slots().end());
    const std::size_t k = buf.size();
    buf.push_back(sums[0]);
    buf.push_back(sums[1]);
    if (nprocs_ > 1) comm_->allreduce_sum(buf.data(), buf.size());
    if (fdef) {
      forward_.finish_norms(buf.data());
      out.forward.residuals = forward_.residual_history();
    }
    if (adef) {
      adjoint_.finish_norms(buf.data() + nf);
      out.adjoint.residuals = adjoint_.residual_history();
    }
    out.eval.loss = buf[k] / s;
    out.eval.correct = static_cast<std::int64_t>(std::llround(buf[k + 1]));
    // Distributed, each process holds only its parameters: the caller adds the
    // regularisers per shard (layerparallel.layer_parallel.LayerShard).
    out.eval.regularization = nprocs_ > 1 ? 0.0 : net_.regularization(theta, reg, grad);
    out.eval.objective = out.eval.loss + out.eval.regularization;
  };
  if (!grad) {
    finish();
    started_ = true;
    return out;
  }

  // Adjoint: the same engine backwards in layers, linearised about the states.
  // Every adjoint step through layer n (any level, any cycle) needs the same
  // act'(K_n u_n + b_n): compute it once per owned layer.
  const std::size_t sz = net_.state_size(s);
  // (Device-resident networks launch from one thread.)
  const bool threads = b - a > 1 && net_.space().host();
  if (!derivs_done) {
#pragma omp parallel for schedule(static) if (threads)
    for (int n = a; n < b; ++n)
      net_.activation_deriv(theta, n, states_[n], derivs_.data() + static_cast<std::size_t>(n - a) * sz, s);
  }
  aprop_.set_theta(theta);
  const std::size_t slot = fuse ? net_.grad_slot_size() : 0;
  if (slot > 0) grad_slots_.resize(static_cast<std::size_t>((s + kReduceChunk - 1) / kReduceChunk) * N * slot);
  aprop_.capture_gradient(slot > 0 ? grad_slots_.data() : nullptr);
  if (!started_ && nprocs_ > 1) bcast_state(lamN_, nprocs_ - 1);
  adjoint_.set_initial(lamN_.data());
  if (!started_) adjoint_.reset();
  if (rel_tol_adjoint_ > 0.0 && adjoint_budget < 0) {
    double nrm = last ? aprop_.norm(lamN_.data()) : 0.0;
    if (nprocs_ > 1) comm_->bcast(&nrm, 1, nprocs_ - 1);
    adjoint_.set_tolerances(rel_tol_adjoint_ * nrm, 0.0);
  }
  out.adjoint = run(adjoint_, adjoint_budget, defer);
  started_ = true;
  const bool grad_done = slot > 0 && aprop_.captured() == b - a;
  aprop_.capture_gradient(nullptr);
  if (grad_done) {
    net_.reduce_gradient_slots(grad_slots_.data(), a, b, s, grad);
  } else {
    // Parameter gradients on the finest level only: layer n needs u_n and
    // lambda_{n+1}; layers are independent (each writes its own block).
    const double h = net_.h();
    std::vector<const double*> lam(static_cast<std::size_t>(b - a));
    for (int n = a; n < b; ++n) lam[n - a] = adjoint_.state(N - n - 1);
#pragma omp parallel for schedule(static) if (threads)
    for (int n = a; n < b; ++n)
      net_.layer_gradient(theta, n, states_[n], lam[n - a], s, grad, h,
                          derivs_.data() + static_cast<std::size_t>(n - a) * sz);
  }
  if (first) net_.opening_gradient(theta, X, adjoint_.state(N), s, grad);
  finish();
  return out;
}

}  // namespace layerparallel
