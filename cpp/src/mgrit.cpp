// The MGRIT engine: FAS cycles over a Hierarchy, driven through Propagator.
//
// Conventions (ALGORITHM.md section 3). Level l holds points 0..N_l; its
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
// the one all-reduce. A process with no point (or no C-point) on a level
// simply contributes nothing there.
#include "layerparallel/mgrit.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <utility>

#include "layerparallel/macros.h"

namespace layerparallel {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

int ceil_div(int a, int b) { return a <= 0 ? 0 : (a + b - 1) / b; }

// Message kinds (tag = base + 4 level + kind).
constexpr int kSweepTag = 0, kRestrictTag = 1, kChainTag = 2;

}  // namespace

// ------------------------------------------------------------------ options

int parse_relax(const std::string& s) {
  const std::string u = upper(s);
  bool ok = !u.empty() && u[0] == 'F' && (u.size() % 2 == 1);
  for (std::size_t i = 1; ok && i < u.size(); i += 2) ok = u[i] == 'C' && u[i + 1] == 'F';
  LP_REQUIRE(ok, "relaxation must be F, FCF, FCFCF, ... (F(CF)^k), got '" << s << "'");
  return static_cast<int>(u.size() / 2);
}

void MgritOptions::validate() const {
  LP_REQUIRE(max_levels >= 1, "MgritOptions.max_levels must be >= 1, got " << max_levels);
  LP_REQUIRE(cfactor >= 2, "MgritOptions.cfactor must be >= 2, got " << cfactor);
  LP_REQUIRE(cfactor_fine == -1 || cfactor_fine >= 2,
             "MgritOptions.cfactor_fine must be -1 (same as cfactor) or >= 2, got " << cfactor_fine);
  LP_REQUIRE(min_coarse >= 1, "MgritOptions.min_coarse must be >= 1, got " << min_coarse);
  for (std::size_t i = 0; i < relax.size(); ++i) {
    try {
      parse_relax(relax[i]);
    } catch (const std::invalid_argument&) {
      LP_REQUIRE(false, "MgritOptions.relax[" << i << "] must be F, FCF, FCFCF, ... (F(CF)^k), got '"
                                              << relax[i] << "'");
    }
  }
  const std::string c = upper(cycle);
  LP_REQUIRE(c == "V" || c == "F", "MgritOptions.cycle must be \"V\" or \"F\", got \"" << cycle << "\"");
  LP_REQUIRE(std::isfinite(tol) && tol >= 0.0, "MgritOptions.tol must be finite and >= 0, got " << tol);
  LP_REQUIRE(std::isfinite(rtol) && rtol >= 0.0, "MgritOptions.rtol must be finite and >= 0, got " << rtol);
  LP_REQUIRE(max_iter >= 0, "MgritOptions.max_iter must be >= 0, got " << max_iter);
  const std::string st = upper(store);
  LP_REQUIRE(st == "ALL" || st == "CPOINTS",
             "MgritOptions.store must be \"all\" or \"cpoints\", got \"" << store << "\"");
  LP_REQUIRE(threads >= 0, "MgritOptions.threads must be >= 0 (0 = OpenMP default), got " << threads);
}

int MgritOptions::relax_cf_pairs(int level) const {
  if (relax.empty()) return level == 0 ? 0 : 1;
  const std::size_t i = std::min<std::size_t>(static_cast<std::size_t>(level), relax.size() - 1);
  return parse_relax(relax[i]);
}

Partition Partition::contiguous(int n_steps, int parts, bool reversed, int tag) {
  LP_REQUIRE(n_steps >= 1, "Partition: n_steps must be >= 1, got " << n_steps);
  LP_REQUIRE(parts >= 1, "Partition: parts must be >= 1, got " << parts);
  Partition p;
  p.tag = tag;
  p.step_bounds.assign(static_cast<std::size_t>(parts) + 1, 0);
  p.ranks.assign(static_cast<std::size_t>(parts), 0);
  for (int q = 0; q < parts; ++q) {
    const int r = reversed ? parts - 1 - q : q;
    const Range b = split(n_steps, parts, r);
    p.ranks[q] = r;
    p.step_bounds[q + 1] = static_cast<int>(reversed ? n_steps - b.begin : b.end);
  }
  return p;
}

void Partition::validate(int n_steps, int comm_size) const {
  if (empty()) return;
  const std::size_t P = ranks.size();
  LP_REQUIRE(step_bounds.size() == P + 1,
             "Partition: step_bounds needs " << P + 1 << " entries for " << P << " ranks, got " << step_bounds.size());
  LP_REQUIRE(step_bounds.front() == 0 && step_bounds.back() == n_steps,
             "Partition: step_bounds must run from 0 to " << n_steps);
  for (std::size_t q = 0; q < P; ++q) {
    LP_REQUIRE(step_bounds[q] <= step_bounds[q + 1], "Partition: step_bounds must not decrease");
    LP_REQUIRE(ranks[q] >= 0 && ranks[q] < comm_size,
               "Partition: rank " << ranks[q] << " is outside the communicator of " << comm_size << " processes");
    for (std::size_t r = 0; r < q; ++r) LP_REQUIRE(ranks[r] != ranks[q], "Partition: rank " << ranks[q] << " appears twice");
  }
  LP_REQUIRE(tag >= 0, "Partition: tag must be >= 0, got " << tag);
}

void serial_propagate(Propagator& prop, int n_steps, const double* u0, double* out) {
  const std::size_t ss = prop.state_size();
  prop.space().copy(out, u0, ss);
  for (int i = 0; i < n_steps; ++i) prop.step(0, i, i + 1, out + i * ss, out + (i + 1) * ss);
}

// ------------------------------------------------------------------ setup

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
  if (level == 0 && cpoints_only_) {
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

int Mgrit::post_send(const double* src, int dest, int tag) {
  if (sp_.host()) return comm_->isend(src, ss_, dest, tag);
  if (comm_->accepts_device_memory()) {
    sp_.synchronize();  // the value must be written before the Comm reads it
    return comm_->isend(src, ss_, dest, tag);
  }
  Staged st{-1, std::vector<double>(ss_), nullptr};
  sp_.download(st.host.data(), src, ss_);
  st.req = comm_->isend(st.host.data(), ss_, dest, tag);
  staged_.push_back(std::move(st));  // moving the vector keeps its buffer where the Comm sends from
  return staged_.back().req;
}

int Mgrit::post_recv(double* dst, int source, int tag) {
  if (sp_.host()) return comm_->irecv(dst, ss_, source, tag);
  if (comm_->accepts_device_memory()) {
    sp_.synchronize();  // kernels still queued may read the buffer the Comm is about to overwrite
    return comm_->irecv(dst, ss_, source, tag);
  }
  Staged st{-1, std::vector<double>(ss_), dst};
  st.req = comm_->irecv(st.host.data(), ss_, source, tag);
  staged_.push_back(std::move(st));
  return staged_.back().req;
}

void Mgrit::complete(int req) {
  comm_->wait(req);
  for (auto it = staged_.begin(); it != staged_.end(); ++it)
    if (it->req == req) {
      // Out of the list before the upload: a failing upload must not leave a stale entry.
      Staged done = std::move(*it);
      staged_.erase(it);
      if (done.dst) sp_.upload(done.dst, done.host.data(), ss_);
      return;
    }
}

void Mgrit::require_initialized(const char* what) const {
  LP_REQUIRE(initialized_, "Mgrit::" << what << ": call set_initial(u0) first");
}

void Mgrit::mark_changed(int level) {
  Level& f = lv_[level];
  f.fconsistent = false;
  f.pred_valid = false;
  f.first_valid = false;
  if (level == 0) traj_valid_ = false;
}

// ------------------------------------------------------------------ iterate management

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

// ------------------------------------------------------------------ relaxation

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

// ------------------------------------------------------------------ FAS transfer

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

// ------------------------------------------------------------------ cycles

// V-cycle. Step counts per visit (N_l, m_l, k_l, NC_l, I_l as in mgrit.h):
//  - finest level: relaxation's first F is the previous F-interpolation (0),
//    each CF pair is a full sweep with predictions (N), the F-interpolation with
//    predictions (needed by the residual and the next cycle) is N:
//    (k_0 + 1) N.
//  - intermediate level: FAS rhs N_l (counted here, computed in restrict_fas of
//    the level above), first F-sweep with predictions minus the reused first
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
    v.fconsistent = v.pred_valid = v.first_valid = false;
  }
  // Coarse points are the finest C-points' memory (point 0 holds u0 already), so
  // the coarse solution needs no injection on the way up.
  coarsest_solve(L);
  for (int l = L - 1; l >= 0; --l) {
    Level& v = lv_[l];
    v.fconsistent = v.pred_valid = v.first_valid = false;
    if (l == 0) break;
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
    if (!(h < 0.0)) continue;  // NaN: not computed
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

void Mgrit::set_tolerances(double tol, double rtol) {
  LP_REQUIRE(std::isfinite(tol) && tol >= 0.0, "MgritOptions.tol must be >= 0, got " << tol);
  LP_REQUIRE(std::isfinite(rtol) && rtol >= 0.0, "MgritOptions.rtol must be >= 0, got " << rtol);
  opts_.tol = tol;
  opts_.rtol = rtol;
}

}  // namespace layerparallel
