// The MGRIT engine's grid transfer (FAS): restriction to the next coarser level
// (injection, which moves no data, and the coarse right-hand side from the
// fine residual), its skipped form for the first down-cycle, the correction,
// and the finest C-point residual norm after a cycle.
#include "layerparallel/mgrit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "layerparallel/macros.h"
#include "mgrit_internal.h"

namespace layerparallel {

using mgrit_detail::ceil_div;
using mgrit_detail::kRestrictTag;

// ------------------------------------------------------------------ restriction and correction

// r_j = g_jm + P_j - u_jm, v_j = u_jm, g^c_j = v_j - Phi^c(v_{j-1}) + r_j.
// N_{l+1} steps on level l+1; Phi^c(v_{j-1}) is kept where j-1 is a C-point of
// level l+1 (it is the first step of that level's next F-sweep). The previous
// coarse point of the first owned one comes from the left owner on level l+1
// (into that level's ghost); that point is computed last.
void Mgrit::restrict_fas(int level) {
  Level& f = lv_[level];
  LP_CHECK(f.pred_valid, "restriction from level " << level << " without valid predictions");
  const int cl = level + 1;
  Level& c = lv_[cl];
  const int m = hier_.cfactor(level);
  const int mc = hier_.cfactor(cl);
  const bool coarsest = hier_.is_coarsest(cl);
  const std::size_t ss = ss_;
  if (!c.own.empty()) {
    const int jb = static_cast<int>(c.own.begin), je = static_cast<int>(c.own.end);
    int rreq = -1, sreq = -1;
    if (c.left >= 0) rreq = post_recv(c.ghost.data(), c.left, tag(cl, kRestrictTag));
    if (c.right >= 0) sreq = post_send(point(level, (je - 1) * m), c.right, tag(cl, kRestrictTag));
    if (jb == 0) copy(point(level, 0), rhs_at(cl, 0));
    // The coarse step into point j: g = Phi^c(v_{j-1}) (the first half of the rhs).
    auto coarse_step = [&](int j) {
      // v_j = u_jm is the same memory as the fine C-point: nothing to inject.
      const double* ufprev = j - 1 == jb - 1 ? c.ghost.data() : point(level, (j - 1) * m);
      prop_.step(cl, hier_.fine_index(cl, j - 1), hier_.fine_index(cl, j), ufprev, rhs_at(cl, j));
    };
    auto finish = [&](int j) {
      double* g = rhs_at(cl, j);
      if (coarsest ? j == 1 : (j - 1) % mc == 0) copy(g, first_at(cl, (j - 1) / mc));
      const double* p = pred_at(level, j);
      const double* gf = level > 0 ? rhs_at(level, j * m) : nullptr;
      // g = v - P^c + r with r = g_f + P - v: v cancels.
      sp_.fas(g, gf, p, ss);
    };
    auto one = [&](int j) -> long long {
      coarse_step(j);
      finish(j);
      return 1;
    };
    // Points that need nothing from the left first, then the first owned one.
    const int lb = std::max(jb, 1) + (jb >= 1 ? 1 : 0);
    long long n = 0;
    if (je > lb && prop_.fuses_chains()) {
      // All their coarse steps in one call (one launch on a device), then the rhs.
      std::vector<int> idx;
      std::vector<double*> outs;
      for (int j = lb; j < je; ++j) {
        idx.push_back(hier_.fine_index(cl, j - 1));
        idx.push_back(hier_.fine_index(cl, j));
        outs.push_back(rhs_at(cl, j));
      }
      std::vector<Propagator::Chain> chains;
      for (int j = lb; j < je; ++j)
        chains.push_back({idx.data() + 2 * (j - lb), 1, point(level, (j - 1) * m), outs.data() + (j - lb), nullptr});
      prop_.propagate_chains(cl, chains.data(), static_cast<int>(chains.size()));
      // finish(j) for all of them as two batched operations: the kept first steps,
      // then the right-hand sides.
      std::vector<double*> first, g;
      std::vector<const double*> from, gf, p, none;
      for (int j = lb; j < je; ++j) {
        if (coarsest ? j == 1 : (j - 1) % mc == 0) {
          first.push_back(first_at(cl, (j - 1) / mc));
          from.push_back(rhs_at(cl, j));
          none.push_back(nullptr);
        }
        g.push_back(rhs_at(cl, j));
        gf.push_back(level > 0 ? rhs_at(level, j * m) : nullptr);
        p.push_back(pred_at(level, j));
      }
      if (!first.empty()) sp_.sum_batch(first.data(), from.data(), none.data(), static_cast<int>(first.size()), ss);
      sp_.fas_batch(g.data(), gf.data(), p.data(), static_cast<int>(g.size()), ss);
      n = je - lb;
    } else {
      n = parallel(je - lb, [&](int k) { return one(lb + k); });
    }
    if (rreq >= 0) complete(rreq);
    if (jb >= 1) n += one(jb);
    if (sreq >= 0) complete(sreq);
    add_steps(cl, n);
  }
  c.fconsistent = false;
  c.pred_valid = false;
  c.first_valid = true;
}

// Skipped first down-cycle: inject the iterate and the (re-discretised) rhs.
void Mgrit::restrict_skip(int level) {
  const int cl = level + 1;
  Level& c = lv_[cl];
  const int m = hier_.cfactor(level);
  const std::size_t ss = ss_;
  // The iterate needs no injection: coarse points are the finest C-points' memory.
  for (int j = static_cast<int>(c.own.begin); j < c.own.end; ++j) {
    double* g = rhs_at(cl, j);
    if (level > 0)
      copy(rhs_at(level, j * m), g);
    else if (j == 0)
      copy(u0_.data(), g);
    else
      sp_.zero(g, ss);
  }
  c.fconsistent = false;
  c.pred_valid = false;
  c.first_valid = false;
}

// u_jm <- v_j (FAS correction with injection): the coarse points are the
// finest C-points' memory, so the correction has happened already; the level's
// F-points and predictions are now stale.
void Mgrit::correct(int level) { mark_changed(level); }

// ------------------------------------------------------------------ residual

// The finest C-point residual norm of mgrit.h (residual_history) from the
// predictions of the F-sweep that ended the cycle: r_c = P_c - u_cm, no steps.
// Deferred (iterate(k, true)): the slots go to pending_ and the result is -1.
double Mgrit::residual_norm_from_pred() {
  Level& f = lv_[0];
  LP_CHECK(f.pred_valid, "finest residual without valid predictions");
  const int m = hier_.cfactor(0);
  const int cb = std::max(f.cbeg, 1);
  const int ce = ceil_div(static_cast<int>(f.own.end), m);
  const int nc = hier_.n_cpoints(0);
  // One slot per C-point c >= 1 (the owned ones filled here): summed in C-point
  // order after an exact all-reduce of disjoint slots, the norm has the same
  // rounding on any number of processes and threads.
  std::vector<double> sq(static_cast<std::size_t>(nc - 1), 0.0);
  if (!sp_.host() && ce > cb) {  // one batched reduction (one launch and download on a device)
    std::vector<const double*> a, b;
    for (int c = cb; c < ce; ++c) {
      a.push_back(pred_at(0, c));
      b.push_back(point(0, c * m));
    }
    std::vector<double> nr(a.size());
    prop_.norm_diff_batch(a.data(), b.data(), static_cast<int>(a.size()), nr.data());
    for (int c = cb; c < ce; ++c) sq[static_cast<std::size_t>(c - 1)] = nr[c - cb] * nr[c - cb];
  } else {
    parallel(ce - cb, [&](int k) -> long long {
      const int c = cb + k;
      const double nr = prop_.norm_diff(pred_at(0, c), point(0, c * m));
      sq[static_cast<std::size_t>(c - 1)] = nr * nr;
      return 0;
    });
  }
  if (deferring_) {  // finish_norms() reduces and sums them
    pending_.insert(pending_.end(), sq.begin(), sq.end());
    return -1.0;
  }
  if (!part_.empty()) comm_->allreduce_sum(sq.data(), sq.size());
  double s = 0.0;
  for (double x : sq) s += x;
  if (part_.empty()) comm_->allreduce_sum(&s, 1);  // copies over other data (data-parallel sums)
  return std::sqrt(s);
}

}  // namespace layerparallel
