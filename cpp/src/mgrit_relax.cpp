// The MGRIT engine's relaxation: F-relaxation (the F-sweep of every
// F-interval of a level, with the predictions of the C-points it steps onto,
// planned as one chain of steps per interval so that a propagator can fuse
// them), C-relaxation from the cached predictions, F(CF)^k, the exact forward
// substitution (coarsest level, serial solve), and the threads over the
// intervals of a level.
#include "layerparallel/mgrit.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <functional>
#include <utility>
#include <vector>

#include "layerparallel/macros.h"
#include "mgrit_internal.h"

namespace layerparallel {

using mgrit_detail::ceil_div;
using mgrit_detail::kChainTag;
using mgrit_detail::kSweepTag;

// ------------------------------------------------------------------ threads

// body(0), ..., body(n - 1) on opts_.threads threads (one for device states);
// returns the sum of what they return (the steps they took).
long long Mgrit::parallel(int n, const std::function<long long(int)>& body) {
  if (n <= 0) return 0;
  int nt = opts_.threads > 0 ? opts_.threads : omp_get_max_threads();
  nt = std::max(1, std::min(nt, n));
  // Device states: one host thread drives the device (its launches are the parallelism).
  if (!sp_.host()) nt = 1;
  long long total = 0;
  std::exception_ptr err = nullptr;
  // An exception must not leave an OpenMP region: keep the first, rethrow after.
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total) if (nt > 1)
  for (int i = 0; i < n; ++i) {
    try {
      total += body(i);
    } catch (...) {
#pragma omp critical(lp_mgrit_error)
      {
        if (!err) err = std::current_exception();
      }
    }
  }
  if (err) std::rethrow_exception(err);
  return total;
}

// ------------------------------------------------------------------ forward substitution

// Exact forward substitution through the owned points of `level`, from the
// ghost (received from the left owner, which finished its part first) or from
// point 0; the last owned point goes on to the right owner: a pipeline. The
// first step is taken from the FAS right-hand side when still valid.
void Mgrit::chain_solve(int level, bool to_traj) {
  Level& L = lv_[level];
  if (L.own.empty()) return;
  const std::size_t ss = ss_;
  const int jb = static_cast<int>(L.own.begin), je = static_cast<int>(L.own.end);
  if (L.left >= 0) complete(post_recv(L.ghost.data(), L.left, tag(level, kChainTag)));
  auto dst = [&](int i) { return to_traj ? traj_at(i) : point(level, i); };
  if (to_traj && jb == 0) copy(point(level, 0), traj_at(0));
  int j = std::max(jb, 1);
  if (level > 0 && L.first_valid && j == 1 && j < je) {
    sp_.sum(point(level, 1), first_at(level, 0), rhs_at(level, 1), ss);
    j = 2;
  }
  std::vector<int> idx{hier_.fine_index(level, j - 1)};
  std::vector<double*> outs;
  std::vector<const double*> rhs;
  for (int i = j; i < je; ++i) {
    idx.push_back(hier_.fine_index(level, i));
    outs.push_back(dst(i));
    rhs.push_back(level > 0 ? rhs_at(level, i) : nullptr);
  }
  const long long cnt = static_cast<long long>(outs.size());
  const double* from = j - 1 == jb - 1 ? L.ghost.data() : dst(j - 1);
  if (cnt > 0) prop_.propagate(level, idx.data(), static_cast<int>(cnt), from, outs.data(), rhs.data());
  add_steps(level, cnt);
  if (L.right >= 0) complete(post_send(dst(je - 1), L.right, tag(level, kChainTag)));
}

// The owned part of F-interval c: its owned F-points (u_i = Phi(u_{i-1}) + g_i)
// and, with_pred, the prediction of the following C-point when owned. The
// chain starts at the interval's C-point or, when the interval began on the
// left neighbour, at the ghost point.
long long Mgrit::sweep_interval(int level, int c, bool with_pred, bool reuse, bool scratch, bool to_traj,
                                std::vector<ChainPlan>* plans) {
  Level& L = lv_[level];
  const FInterval iv = hier_.finterval(level, c);
  const std::size_t ss = ss_;
  const bool have_g = level > 0;
  const int jb = static_cast<int>(L.own.begin), je = static_cast<int>(L.own.end);
  const int tb = std::max(iv.f_begin, jb);
  const int te = std::min(iv.f_end, je);
  const bool pred = with_pred && iv.next_cpoint >= jb && iv.next_cpoint < je;
  if (tb >= te && !pred) return 0;
  // Two alternating buffers: per call on the host (intervals run on threads), one
  // persistent pair for device states (one thread; no allocation per interval).
  StateBuffer local;
  double* pair = nullptr;
  if (scratch) {
    if (!sp_.host()) {
      if (scratch_pair_.empty()) scratch_pair_ = StateBuffer(sp_, 2 * ss);
      pair = scratch_pair_.data();
    } else {
      local = StateBuffer(sp_, 2 * ss);
      pair = local.data();
    }
  }
  auto dst_of = [&](int i) -> double* {
    if (to_traj) return traj_at(i);
    if (scratch) return i == je - 1 ? L.tail.data() : pair + ((i - iv.f_begin) & 1) * ss;
    return point(level, i);
  };
  auto g_of = [&](int i) -> const double* { return have_g ? rhs_at(level, i) : nullptr; };
  int start = tb < te ? tb - 1 : iv.next_cpoint - 1;
  int i = tb;
  ChainPlan pl;
  if (reuse && tb == iv.f_begin && tb < te) {
    double* dst = dst_of(tb);
    if (plans && !scratch) {  // done with the level's other intervals, before their chains
      pl.pre_dst = dst;
      pl.pre_first = first_at(level, c);
      pl.pre_g = have_g ? g_of(tb) : nullptr;
    } else if (have_g) {
      sp_.sum(dst, first_at(level, c), g_of(tb), ss);
    } else {
      copy(first_at(level, c), dst);
    }
    start = i++;
  }
  const double* from = (start >= jb && start != iv.cpoint) ? dst_of(start) : point(level, start);
  if (!scratch) {
    // Hand the chain of steps to the propagator so it can fuse them.
    pl.in = from;
    pl.have_g = have_g;
    pl.idx.push_back(hier_.fine_index(level, start));
    for (; i < te; ++i) {
      pl.idx.push_back(hier_.fine_index(level, i));
      pl.outs.push_back(dst_of(i));
      pl.rhs.push_back(g_of(i));
    }
    if (pred) {
      pl.idx.push_back(hier_.fine_index(level, iv.next_cpoint));
      pl.outs.push_back(pred_at(level, c + 1));
      pl.rhs.push_back(nullptr);  // predictions are Phi(u) without g
    }
    const int count = static_cast<int>(pl.outs.size());
    if (count == 0 && !pl.pre_dst) return 0;
    if (plans) {
      plans->push_back(std::move(pl));  // run with the level's other intervals
    } else {
      prop_.propagate(level, pl.idx.data(), count, from, pl.outs.data(), have_g ? pl.rhs.data() : nullptr);
    }
    return count;
  }
  // F-points not stored (finest level, store = cpoints): step through two buffers.
  long long cnt = 0;
  const double* prev = from;
  for (; i < te; ++i) {
    double* dst = dst_of(i);
    prop_.step(level, hier_.fine_index(level, i - 1), hier_.fine_index(level, i), prev, dst);
    ++cnt;
    prev = dst;
  }
  if (pred) {
    const int j = iv.next_cpoint;
    prop_.step(level, hier_.fine_index(level, j - 1), hier_.fine_index(level, j), prev, pred_at(level, c + 1));
    ++cnt;
  }
  return cnt;
}

// F-relaxation of every F-interval of `level`: u_i = Phi(u_{i-1}) + g_i through
// the interval's F-points. with_pred: also step onto the following C-point and
// cache P_c (one step per full interval; a full finest sweep then costs N).
// use_first: the interval's first step Phi(u_{cm}) is taken from the FAS rhs
// computation when still valid. to_traj (finest level, store = cpoints): write
// C- and F-points into the trajectory buffer instead of scratch.
//
// Distributed order: post the receive of the ghost; send the last owned point
// at once when it is a C-point (unchanged by the sweep), else relax the
// trailing interval first and send its end; relax the intervals that need
// nothing from the left; then wait for the ghost and relax the leading one.
void Mgrit::fsweep(int level, bool with_pred, bool use_first, bool to_traj) {
  Level& L = lv_[level];
  const bool reuse = use_first && L.first_valid && level > 0;
  const bool scratch = level == 0 && cpoints_only_ && !to_traj;
  if (!L.own.empty()) {
    const int jb = static_cast<int>(L.own.begin), je = static_cast<int>(L.own.end);
    const int m = hier_.cfactor(level);
    const int t0 = std::max(jb, 1);  // first owned point something steps into
    const int c0 = (t0 - 1) / m;
    const int c1 = je - 1 >= 1 ? (je - 2) / m : -1;
    const bool lead_needs_ghost = L.left >= 0;  // the chain into point jb starts at jb - 1
    // (c1 >= c0 whenever there is a left owner: then jb >= 1 and je - 2 >= jb - 1.)
    int rreq = -1, sreq = -1;
    if (L.left >= 0) rreq = post_recv(L.ghost.data(), L.left, tag(level, kSweepTag));
    // The value the right owner needs: a C-point (unchanged by the sweep) or the
    // trailing interval's last F-point, wherever this sweep writes F-points.
    const bool last_is_c = hier_.is_cpoint(level, je - 1);
    const double* last = last_is_c || !(to_traj || scratch) ? point(level, je - 1)
                         : to_traj                          ? traj_at(je - 1)
                                                            : L.tail.data();
    long long n = 0;
    bool trailing_done = c1 < c0;
    if (L.right >= 0 && last_is_c) sreq = post_send(last, L.right, tag(level, kSweepTag));
    if (L.right >= 0 && !last_is_c && c1 >= c0 && !(c1 == c0 && lead_needs_ghost)) {
      n += sweep_interval(level, c1, with_pred, reuse, scratch, to_traj);
      trailing_done = true;
      sreq = post_send(last, L.right, tag(level, kSweepTag));
    }
    // Middle intervals (and the leading one when it needs no ghost).
    const int mb = lead_needs_ghost ? c0 + 1 : c0;
    const int me = trailing_done ? c1 : c1 + 1;
    if (me > mb && prop_.fuses_chains() && !scratch) {
      // Every middle interval in one call (a device relaxes them in one launch).
      std::vector<ChainPlan> plans;
      for (int c = mb; c < me; ++c) n += sweep_interval(level, c, with_pred, reuse, scratch, to_traj, &plans);
      // The reused first steps (u = first + g) of all intervals at once, then their chains.
      std::vector<double*> pre_dst;
      std::vector<const double*> pre_first, pre_g;
      std::vector<Propagator::Chain> chains;
      for (const ChainPlan& pl : plans) {
        if (pl.pre_dst) {
          pre_dst.push_back(pl.pre_dst);
          pre_first.push_back(pl.pre_first);
          pre_g.push_back(pl.pre_g);
        }
        if (!pl.outs.empty())
          chains.push_back({pl.idx.data(), static_cast<int>(pl.outs.size()), pl.in, pl.outs.data(),
                            pl.have_g ? pl.rhs.data() : nullptr});
      }
      if (!pre_dst.empty())
        sp_.sum_batch(pre_dst.data(), pre_first.data(), pre_g.data(), static_cast<int>(pre_dst.size()), ss_);
      if (!chains.empty()) prop_.propagate_chains(level, chains.data(), static_cast<int>(chains.size()));
    } else if (me > mb) {
      n += parallel(me - mb, [&](int k) { return sweep_interval(level, mb + k, with_pred, reuse, scratch, to_traj); });
    }
    if (rreq >= 0) complete(rreq);
    if (lead_needs_ghost) {
      n += sweep_interval(level, c0, with_pred, reuse, scratch, to_traj);
      if (!trailing_done && L.right >= 0 && !last_is_c)
        sreq = post_send(last, L.right, tag(level, kSweepTag));
    }
    if (to_traj)
      for (int c = L.cbeg; c * m < je; ++c) copy(point(level, c * m), traj_at(c * m));
    if (sreq >= 0) complete(sreq);
    add_steps(level, n);
  }
  L.fconsistent = true;
  L.pred_valid = with_pred;
  if (to_traj) traj_valid_ = true;
}

// C-relaxation u_cm = P_c + g_cm from the cached predictions: no steps.
void Mgrit::crelax(int level) {
  Level& L = lv_[level];
  LP_CHECK(L.pred_valid, "C-relaxation on level " << level << " without valid predictions");
  const int m = hier_.cfactor(level);
  const int cb = std::max(L.cbeg, 1);
  const int ce = ceil_div(static_cast<int>(L.own.end), m);
  if (!sp_.host()) {  // one batched operation (one launch on a device)
    std::vector<double*> u;
    std::vector<const double*> p, g;
    for (int c = cb; c < ce; ++c) {
      u.push_back(point(level, c * m));
      p.push_back(pred_at(level, c));
      g.push_back(level > 0 ? rhs_at(level, c * m) : nullptr);
    }
    if (!u.empty()) sp_.sum_batch(u.data(), p.data(), g.data(), static_cast<int>(u.size()), ss_);
  } else {
    parallel(ce - cb, [&](int k) -> long long {
      const int c = cb + k;
      double* u = point(level, c * m);
      const double* p = pred_at(level, c);
      if (level > 0)
        sp_.sum(u, p, rhs_at(level, c * m), ss_);
      else
        copy(p, u);
      return 0;
    });
  }
  mark_changed(level);
}

// F(CF)^k. The first F is skipped when the level is already F-relaxed with
// valid predictions (the F-interpolation of the previous visit did it).
void Mgrit::relax(int level) {
  Level& L = lv_[level];
  if (!(L.fconsistent && L.pred_valid)) fsweep(level, true, true);
  for (int k = 0; k < cf_pairs_[level]; ++k) {
    crelax(level);
    fsweep(level, true, false);
  }
}

}  // namespace layerparallel
