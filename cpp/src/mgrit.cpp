// The MGRIT engine's driver: iterate / solve (the initial F-sweep, the cycles,
// the residual history and the stopping test), the V- and F-cycles, nested
// iteration, the coarsest-level and serial solves, and the counters. The
// pieces a cycle is made of live next to it (layout in mgrit_internal.h):
// relaxation in mgrit_relax.cpp, restriction and residual in mgrit_fas.cpp,
// messages in mgrit_comm.cpp, storage in mgrit_storage.cpp.
//
// Conventions (docs/algorithm.md section 3). Level l holds points 0..N_l; its
// equations are u_0 = g_0 and u_j - Phi^l(u_{j-1}) = g_j. On the finest level g
// is zero except g_0 = u0 (kept by fixing point 0), so level 0 stores no g.
// With m = m_l, C-point c of level l is level point c m and level point c of
// level l+1.
//
// Ownership (Partition): a process owns a contiguous block of fine points and,
// on every level, the level points whose fine index lies in it (points_in), so
// a coarse point lives where its fine C-point lives and restriction and
// correction never communicate values they own. The rule is "the owner of a
// point computes the step into it": u_j (F-relaxation), the prediction of
// C-point j, the FAS right-hand side at coarse point j. The only value that
// crosses a block boundary is the point just before the block (the "ghost"),
// sent by the nearest owner on the left of that level: at every F-sweep, every
// restriction (the previous coarse point) and along the coarsest-level
// substitution (a pipeline). Sends and receives are non-blocking and posted
// before the local work; the interval whose chain crosses the boundary is
// relaxed first by the sender and last by the receiver. The residual norm is
// the one all-reduce (iterate(k, true) leaves it to the caller). A process with
// no point (or no C-point) on a level simply contributes nothing there.
#include "layerparallel/mgrit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "layerparallel/macros.h"
#include "mgrit_internal.h"

namespace layerparallel {

using mgrit_detail::ceil_div;
using mgrit_detail::kNaN;

void Mgrit::require_initialized(const char* what) const {
  LP_REQUIRE(initialized_, "Mgrit::" << what << ": call set_initial(u0) first");
}

// ------------------------------------------------------------------ cycles

// Exact forward substitution on the coarsest level: N_L steps, minus the first
// one when the FAS rhs computation already produced Phi(v_0). A pipeline over
// the processes that own coarsest points.
void Mgrit::coarsest_solve(int level) {
  Level& L = lv_[level];
  chain_solve(level, false);
  L.fconsistent = true;
  L.pred_valid = false;
  L.first_valid = false;
  if (level == 0) traj_valid_ = false;
  skipping_ = false;  // the skipped down-cycle ends here
}

// V-cycle. Step counts per visit (N_l, m_l, k_l, NC_l, I_l as in mgrit.h):
//  - finest level: relaxation's first F is the previous F-interpolation (0),
//    each CF pair is a full sweep with predictions (N), the F-interpolation with
//    predictions (needed by the residual and the next cycle) is N:
//    (k_0 + 1) N.
//  - intermediate level: FAS rhs N_l (counted on this level, computed by
//    restrict_fas from the level above), first F-sweep with predictions minus the reused first
//    step of every non-empty interval N_l - I_l, CF pairs k_l N_l, final
//    F-interpolation without predictions (nobody needs them) N_l - NC_l.
//  - coarsest level: FAS rhs N_L, forward substitution N_L - 1.
void Mgrit::vcycle(int level, bool need_pred) {
  if (hier_.is_coarsest(level)) {
    coarsest_solve(level);
    return;
  }
  if (skipping_) {
    restrict_skip(level);
  } else {
    relax(level);
    restrict_fas(level);
  }
  vcycle(level + 1, false);
  correct(level);
  final_fsweep(level, need_pred);
}

// F-cycle: relax, restrict, F-cycle below, V-cycle below, correct. The
// F-interpolation keeps predictions: the V-cycle that follows on this level
// (or the residual, on the finest) starts from them.
void Mgrit::fcycle(int level) {
  if (hier_.is_coarsest(level)) {
    coarsest_solve(level);
    return;
  }
  if (skipping_) {
    restrict_skip(level);
  } else {
    relax(level);
    restrict_fas(level);
  }
  fcycle(level + 1);
  if (!hier_.is_coarsest(level + 1)) vcycle(level + 1, false);
  correct(level);
  final_fsweep(level, true);
}

// The F-interpolation that ends a cycle on `level`; on the finest level of the
// last cycle of a fixed budget it is the final sweep (Propagator::final_sweep),
// when it steps onto every C-point too (with_pred) and nothing follows it.
void Mgrit::final_fsweep(int level, bool with_pred) {
  const bool last = level == 0 && last_cycle_ && with_pred;
  if (last) prop_.final_sweep(true);
  try {
    fsweep(level, with_pred, false);
  } catch (...) {
    if (last) prop_.final_sweep(false);
    throw;
  }
  if (last) prop_.final_sweep(false);
}

// ------------------------------------------------------------------ iterate / solve

void Mgrit::run_cycle() {
  if (hier_.num_levels() == 1) {
    coarsest_solve(0);
    history_.push_back(0.0);
  } else {
    if (fcycle_)
      fcycle(0);
    else
      vcycle(0, true);
    history_.push_back(norms_ ? residual_norm_from_pred() : kNaN);
  }
  guess_default_ = false;
}

// Nested iteration: re-discretised problem (g = (u0, 0, ..., 0)) solved on the
// coarsest level, then interpolated upwards (inject, F-relax) with one V-cycle
// per intermediate level; the finest level only receives the C-points (the
// call's initial F-sweep interpolates them).
void Mgrit::fmg_guess() {
  const int L = hier_.num_levels() - 1;
  if (L == 0) return;
  for (int l = 1; l <= L; ++l) {
    Level& v = lv_[l];
    sp_.zero(v.g.data(), v.g.size());
    if (v.own.begin == 0 && !v.own.empty()) copy(u0_.data(), rhs_at(l, 0));
    mark_changed(l);
  }
  // Coarse points are the finest C-points' memory (point 0 holds u0 already), so
  // the coarse solution needs no injection on the way up.
  coarsest_solve(L);
  for (int l = L - 1; l >= 1; --l) {
    mark_changed(l);
    fsweep(l, true, false);
    vcycle(l, false);
  }
  mark_changed();
  guess_default_ = false;
}

void Mgrit::begin_call() {
  require_initialized("iterate/solve");
  history_.clear();
  skipping_ = false;
  if (hier_.num_levels() == 1) {
    history_.push_back(kNaN);
    return;
  }
  if (guess_default_ && opts_.fmg) fmg_guess();
  // The propagator may have changed since the last call (new weights): nothing
  // cached on the finest level is trusted.
  mark_changed();
  if (guess_default_ && opts_.skip_first_down) {
    skipping_ = true;
    history_.push_back(kNaN);
    return;
  }
  fsweep(0, true, false);
  history_.push_back(norms_ ? residual_norm_from_pred() : kNaN);
}

void Mgrit::iterate(int k, bool defer_norms) {
  LP_REQUIRE(k >= 0, "Mgrit::iterate: number of cycles must be >= 0, got " << k);
  LP_REQUIRE(!norms_pending_, "Mgrit::iterate: finish_norms() of the previous deferred call is missing");
  norms_ = opts_.compute_residuals;
  deferring_ = defer_norms && norms_;
  pending_.clear();
  begin_call();
  for (int i = 0; i < k; ++i) {
    last_cycle_ = i == k - 1;
    try {
      run_cycle();
    } catch (...) {
      last_cycle_ = false;
      throw;
    }
  }
  last_cycle_ = false;
  norms_pending_ = deferring_;
  deferring_ = false;
}

void Mgrit::finish_norms(const double* reduced) {
  LP_REQUIRE(norms_pending_, "Mgrit::finish_norms: no deferred residual norms are pending");
  const std::size_t per = static_cast<std::size_t>(hier_.n_cpoints(0) - 1);
  std::size_t k = 0;
  for (double& h : history_) {
    if (!(h < 0.0)) continue;  // not a deferred placeholder (-1): NaN, not computed
    double s = 0.0;
    for (std::size_t i = 0; i < per; ++i) s += reduced[k + i];
    k += per;
    h = std::sqrt(s);
  }
  pending_.clear();
  norms_pending_ = false;
}

bool Mgrit::solve() {
  LP_REQUIRE(!norms_pending_, "Mgrit::solve: finish_norms() of the previous deferred call is missing");
  norms_ = true;
  begin_call();
  const double first = history_[0];
  for (;;) {
    const double r = history_.back();
    const bool placeholder = history_.size() == 1 && std::isnan(r);
    if (!placeholder) {
      if (!std::isfinite(r)) return false;
      if (r == 0.0) return true;
      if (opts_.tol > 0.0 && r <= opts_.tol) return true;
      const double ref = std::isfinite(first) ? first : history_.size() > 1 ? history_[1] : kNaN;
      if (opts_.rtol > 0.0 && std::isfinite(ref) && r <= opts_.rtol * ref) return true;
    }
    if (iterations() >= opts_.max_iter) return false;
    run_cycle();
  }
}

// ------------------------------------------------------------------ serial solves

void serial_propagate(Propagator& prop, int n_steps, const double* u0, double* out) {
  const std::size_t ss = prop.state_size();
  prop.space().copy(out, u0, ss);
  for (int i = 0; i < n_steps; ++i) prop.step(0, i, i + 1, out + i * ss, out + (i + 1) * ss);
}

void Mgrit::serial_solve() {
  require_initialized("serial_solve");
  if (cpoints_only_) {
    if (traj_.empty()) traj_ = StateBuffer(sp_, static_cast<std::size_t>(lv_[0].own.size()) * ss_);
    if (lv_[0].own.begin == 0 && !lv_[0].own.empty()) copy(u0_.data(), point(0, 0));
    chain_solve(0, true);
    const int m = hier_.cfactor(0);
    for (int i = ceil_div(static_cast<int>(lv_[0].own.begin), m) * m; i < lv_[0].own.end; i += m)
      copy(traj_at(i), point(0, i));
  } else {
    if (lv_[0].own.begin == 0 && !lv_[0].own.empty()) copy(u0_.data(), point(0, 0));
    chain_solve(0, false);
  }
  have_iterate_ = true;
  guess_default_ = false;
  mark_changed();
  lv_[0].fconsistent = true;
  traj_valid_ = cpoints_only_;
}

// ------------------------------------------------------------------ results

std::vector<double> Mgrit::convergence_factors() const {
  std::vector<double> out;
  for (std::size_t k = 1; k < history_.size(); ++k) {
    const double a = history_[k - 1];
    out.push_back(std::isfinite(a) && a > 0.0 ? history_[k] / a : kNaN);
  }
  return out;
}

long long Mgrit::total_steps() const {
  long long s = 0;
  for (long long x : steps_) s += x;
  return s;
}

void Mgrit::reset_counters() { std::fill(steps_.begin(), steps_.end(), 0); }

void Mgrit::set_max_iter(int max_iter) {
  LP_REQUIRE(max_iter >= 0, "the most MGRIT cycles of a solve must be >= 0, got " << max_iter);
  opts_.max_iter = max_iter;
}

void Mgrit::set_tolerances(double tol, double rtol) {
  LP_REQUIRE(std::isfinite(tol) && tol >= 0.0, "MgritOptions.tol must be >= 0, got " << tol);
  LP_REQUIRE(std::isfinite(rtol) && rtol >= 0.0, "MgritOptions.rtol must be >= 0, got " << rtol);
  opts_.tol = tol;
  opts_.rtol = rtol;
}

}  // namespace layerparallel
