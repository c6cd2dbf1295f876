// Where the MGRIT engine's values live. The constructor works out, from the
// Partition, which points of every level this process owns and who its
// neighbours are, and allocates the buffers (level 0's points, or only its
// C-points with store = "cpoints"; ghost, right-hand sides, predictions, kept
// first steps); the accessors map a level point to its memory (a coarse point
// is its finest C-point's memory); set_initial / reset / warm_start fill the
// iterate; finalize / state / trajectory hand out the F-relaxed trajectory.
#include "layerparallel/mgrit.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "layerparallel/macros.h"
#include "mgrit_internal.h"

namespace layerparallel {

using mgrit_detail::ceil_div;
using mgrit_detail::upper;

// ------------------------------------------------------------------ layout

Mgrit::Mgrit(Propagator& prop, int n_steps, MgritOptions opts, Comm* comm, Partition part)
    : prop_(prop),
      sp_(prop.space()),
      comm_(comm ? comm : &own_comm_),
      opts_((opts.validate(), std::move(opts))),
      hier_(n_steps, opts_.cfactor_fine, opts_.cfactor, opts_.min_coarse, opts_.max_levels),
      part_(std::move(part)),
      ss_(prop.state_size()) {
  LP_REQUIRE(ss_ >= 1, "the propagator's state_size() must be >= 1");
  part_.validate(n_steps, comm_->size());
  const int L = hier_.num_levels();
  cpoints_only_ = upper(opts_.store) == "CPOINTS" && L > 1;
  fcycle_ = upper(opts_.cycle) == "F";
  cf_pairs_.resize(L);
  for (int l = 0; l < L; ++l) cf_pairs_[l] = opts_.relax_cf_pairs(l);
  steps_.assign(L, 0);
  lv_.resize(L);
  // Fine-point block of every position: [0, b_1 + 1), [b_1 + 1, b_2 + 1), ...
  const int P = part_.empty() ? 1 : static_cast<int>(part_.ranks.size());
  int me = 0;
  if (!part_.empty()) {
    me = -1;
    for (int q = 0; q < P; ++q)
      if (part_.ranks[q] == comm_->rank()) me = q;
    LP_REQUIRE(me >= 0, "Partition: this process (rank " << comm_->rank() << ") owns no part of the time axis");
  }
  auto fine_block = [&](int q) -> std::pair<long, long> {
    if (part_.empty()) return {0, static_cast<long>(n_steps) + 1};
    return {q == 0 ? 0 : part_.step_bounds[q] + 1, part_.step_bounds[q + 1] + 1};
  };
  for (int l = 0; l < L; ++l) {
    Level& v = lv_[l];
    const bool coarsest = hier_.is_coarsest(l);
    const int m = coarsest ? 1 : hier_.cfactor(l);
    std::vector<Range> owners(static_cast<std::size_t>(P));
    for (int q = 0; q < P; ++q) {
      const auto fb = fine_block(q);
      owners[q] = hier_.points_in(l, fb.first, fb.second);
    }
    v.own = owners[me];
    for (int q = me - 1; q >= 0 && v.left < 0; --q)
      if (!owners[q].empty()) v.left = part_.ranks[q];
    for (int q = me + 1; q < P && v.right < 0; ++q)
      if (!owners[q].empty()) v.right = part_.ranks[q];
    const int jb = static_cast<int>(v.own.begin), je = static_cast<int>(v.own.end);
    v.cbeg = ceil_div(jb, m);
    const int cend = std::max(v.cbeg, ceil_div(je, m));
    v.fbeg = ceil_div(jb - 1, m);
    const int fend = std::max(v.fbeg, ceil_div(je - 1, m));
    const std::size_t n_own = static_cast<std::size_t>(je - jb);
    const std::size_t n_c = static_cast<std::size_t>(cend - v.cbeg);
    // Coarse points are finest-level C-points: they live in level 0's storage.
    if (l == 0) v.u = StateBuffer(sp_, (cpoints_only_ ? n_c : n_own) * ss_);
    v.ghost = StateBuffer(sp_, ss_);
    if (l == 0 && cpoints_only_) v.tail = StateBuffer(sp_, ss_);
    if (l > 0) {
      v.g = StateBuffer(sp_, n_own * ss_);
      v.first = StateBuffer(sp_, (coarsest ? 1 : static_cast<std::size_t>(fend - v.fbeg)) * ss_);
    }
    if (!coarsest) v.pred = StateBuffer(sp_, n_c * ss_);
  }
  u0_ = StateBuffer(sp_, ss_);
}

double* Mgrit::point(int level, int j) {
  Level& v = lv_[level];
  if (j == v.own.begin - 1) return v.ghost.data();
  LP_CHECK(j >= v.own.begin && j < v.own.end, "point " << j << " of level " << level << " is not owned here");
  // Point j of a coarse level is finest point j * stride: the same memory, so
  // restriction's injection and the FAS correction move no data.
  if (level > 0) return point(0, j * hier_.stride(level));
  if (cpoints_only_) {
    const int m = hier_.cfactor(0);
    LP_CHECK(j % m == 0, "F-point " << j << " of the finest level is not stored (store = cpoints)");
    return v.u.data() + static_cast<std::size_t>(j / m - v.cbeg) * ss_;
  }
  return v.u.data() + static_cast<std::size_t>(j - v.own.begin) * ss_;
}

double* Mgrit::rhs_at(int level, int j) {
  Level& v = lv_[level];
  LP_CHECK(j >= v.own.begin && j < v.own.end, "rhs " << j << " of level " << level << " is not owned here");
  return v.g.data() + static_cast<std::size_t>(j - v.own.begin) * ss_;
}

double* Mgrit::pred_at(int level, int c) {
  Level& v = lv_[level];
  LP_CHECK(c >= v.cbeg && static_cast<std::size_t>(c - v.cbeg + 1) * ss_ <= v.pred.size(),
           "prediction " << c << " of level " << level << " is not owned here");
  return v.pred.data() + static_cast<std::size_t>(c - v.cbeg) * ss_;
}

double* Mgrit::first_at(int level, int c) {
  Level& v = lv_[level];
  const int k = hier_.is_coarsest(level) ? c : c - v.fbeg;
  LP_CHECK(k >= 0 && static_cast<std::size_t>(k + 1) * ss_ <= v.first.size(),
           "first step " << c << " of level " << level << " is not owned here");
  return v.first.data() + static_cast<std::size_t>(k) * ss_;
}

double* Mgrit::traj_at(int i) {
  const Level& v = lv_[0];
  if (i == v.own.begin - 1) return lv_[0].ghost.data();
  return traj_.data() + static_cast<std::size_t>(i - v.own.begin) * ss_;
}

void Mgrit::mark_changed(int level) {
  Level& f = lv_[level];
  f.fconsistent = false;
  f.pred_valid = false;
  f.first_valid = false;
  if (level == 0) traj_valid_ = false;
}

// ------------------------------------------------------------------ the iterate

void Mgrit::set_initial(const double* u0) {
  copy(u0, u0_.data());
  initialized_ = true;
  if (!have_iterate_) {
    reset();
    return;
  }
  if (lv_[0].own.begin == 0 && !lv_[0].own.empty()) copy(u0, point(0, 0));
  mark_changed();
}

void Mgrit::reset() {
  require_initialized("reset");
  StateBuffer& u = lv_[0].u;
  const std::size_t n = u.size() / ss_;
  for (std::size_t k = 0; k < n; ++k) copy(u0_.data(), u.data() + k * ss_);
  have_iterate_ = true;
  guess_default_ = true;
  mark_changed();
}

void Mgrit::warm_start(const double* all_points) {
  require_initialized("warm_start");
  const Range own = lv_[0].own;
  const int step = cpoints_only_ ? hier_.cfactor(0) : 1;
  for (int i = ceil_div(std::max(1, static_cast<int>(own.begin)), step) * step; i < own.end; i += step)
    copy(all_points + static_cast<std::size_t>(i) * ss_, point(0, i));
  have_iterate_ = true;
  guess_default_ = false;
  mark_changed();
}

// ------------------------------------------------------------------ the finalized trajectory

void Mgrit::finalize() {
  require_initialized("finalize");
  if (hier_.num_levels() == 1) return;
  if (cpoints_only_) {
    if (traj_valid_) return;
    if (traj_.empty()) traj_ = StateBuffer(sp_, static_cast<std::size_t>(lv_[0].own.size()) * ss_);
    const bool had_pred = lv_[0].pred_valid && lv_[0].fconsistent;
    fsweep(0, false, false, true);
    // Predictions were computed from the same C-points: still valid.
    lv_[0].pred_valid = had_pred;
    return;
  }
  if (!lv_[0].fconsistent) fsweep(0, false, false);
}

const double* Mgrit::state(int i) {
  finalize();
  const Range own = lv_[0].own;
  LP_REQUIRE(i >= own.begin - 1 && i < own.end && i >= 0,
             "Mgrit::state: point index must be in [" << std::max<long>(0, own.begin - 1) << ", " << own.end - 1
                                                      << "] (owned here), got " << i);
  if (cpoints_only_) return traj_at(i);
  return point(0, i);
}

void Mgrit::trajectory(double* out) {
  finalize();
  const Range own = lv_[0].own;
  for (int i = static_cast<int>(own.begin); i < own.end; ++i)
    copy(cpoints_only_ ? traj_at(i) : point(0, i), out + static_cast<std::size_t>(i) * ss_);
}

}  // namespace layerparallel
