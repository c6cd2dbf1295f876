// The MGRIT engine: FAS cycles over a Hierarchy, driven through Propagator.
//
// Conventions (ALGORITHM.md section 3). Level l holds points 0..N_l; its
// equations are u_0 = g_0 and u_j - Phi^l(u_{j-1}) = g_j. On the finest level g
// is zero except g_0 = u0 (kept by fixing point 0), so level 0 stores no g.
// With m = m_l, C-point c of level l is level point c m and level point c of
// level l+1.
//
// Ownership: every loop runs over a level's F-intervals or C-points, which the
// Hierarchy can map to contiguous blocks of fine points (points_in). A
// distributed version keeps these loops and restricts them to the owned block,
// exchanging the one state that crosses a block boundary (the last F-point's
// prediction or the previous C-point) and all-reducing the residual sum, which
// already goes through the Comm. An owner with no C-point contributes 0.
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

void copy_state(std::size_t n, const double* src, double* dst) { std::memcpy(dst, src, n * sizeof(double)); }

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

void serial_propagate(Propagator& prop, int n_steps, const double* u0, double* out) {
  const std::size_t ss = prop.state_size();
  copy_state(ss, u0, out);
  for (int i = 0; i < n_steps; ++i) prop.step(0, i, i + 1, out + i * ss, out + (i + 1) * ss);
}

// ------------------------------------------------------------------ setup

Mgrit::Mgrit(Propagator& prop, int n_steps, MgritOptions opts, Comm* comm)
    : prop_(prop),
      comm_(comm ? comm : &own_comm_),
      opts_((opts.validate(), std::move(opts))),
      hier_(n_steps, opts_.cfactor_fine, opts_.cfactor, opts_.min_coarse, opts_.max_levels),
      ss_(prop.state_size()) {
  LP_REQUIRE(ss_ >= 1, "the propagator's state_size() must be >= 1");
  const int L = hier_.num_levels();
  cpoints_only_ = upper(opts_.store) == "CPOINTS" && L > 1;
  fcycle_ = upper(opts_.cycle) == "F";
  cf_pairs_.resize(L);
  for (int l = 0; l < L; ++l) cf_pairs_[l] = opts_.relax_cf_pairs(l);
  steps_.assign(L, 0);
  lv_.resize(L);
  for (int l = 0; l < L; ++l) {
    Level& v = lv_[l];
    const bool coarsest = hier_.is_coarsest(l);
    const std::size_t npts = static_cast<std::size_t>(hier_.n_points(l));
    const std::size_t nc = static_cast<std::size_t>(hier_.n_cpoints(l));
    v.u.assign(((l == 0 && cpoints_only_) ? nc : npts) * ss_, 0.0);
    if (l > 0) {
      v.g.assign(npts * ss_, 0.0);
      v.first.assign((coarsest ? 1 : static_cast<std::size_t>(hier_.n_fintervals(l))) * ss_, 0.0);
    }
    if (!coarsest) v.pred.assign(nc * ss_, 0.0);
  }
  u0_.assign(ss_, 0.0);
}

double* Mgrit::point(int level, int j) {
  if (level == 0 && cpoints_only_) {
    const int m = hier_.cfactor(0);
    LP_CHECK(j % m == 0, "F-point " << j << " of the finest level is not stored (store = cpoints)");
    return lv_[0].u.data() + static_cast<std::size_t>(j / m) * ss_;
  }
  return lv_[level].u.data() + static_cast<std::size_t>(j) * ss_;
}

long long Mgrit::parallel(int n, const std::function<long long(int)>& body) {
  if (n <= 0) return 0;
  int nt = opts_.threads > 0 ? opts_.threads : omp_get_max_threads();
  nt = std::max(1, std::min(nt, n));
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
  copy_state(ss_, u0, u0_.data());
  initialized_ = true;
  if (!have_iterate_) {
    reset();
    return;
  }
  copy_state(ss_, u0, point(0, 0));
  mark_changed();
}

void Mgrit::reset() {
  require_initialized("reset");
  std::vector<double>& u = lv_[0].u;
  const std::size_t n = u.size() / ss_;
  for (std::size_t k = 0; k < n; ++k) copy_state(ss_, u0_.data(), u.data() + k * ss_);
  have_iterate_ = true;
  guess_default_ = true;
  mark_changed();
}

void Mgrit::warm_start(const double* all_points) {
  require_initialized("warm_start");
  const int N = hier_.n_intervals(0);
  const int step = cpoints_only_ ? hier_.cfactor(0) : 1;
  for (int i = step; i <= N; i += step) copy_state(ss_, all_points + static_cast<std::size_t>(i) * ss_, point(0, i));
  have_iterate_ = true;
  guess_default_ = false;
  mark_changed();
}

void Mgrit::serial_solve() {
  require_initialized("serial_solve");
  const int N = hier_.n_intervals(0);
  if (cpoints_only_) {
    traj_.resize(static_cast<std::size_t>(N + 1) * ss_);
    serial_propagate(prop_, N, u0_.data(), traj_.data());
    const int m = hier_.cfactor(0);
    for (int i = 0; i <= N; i += m) copy_state(ss_, traj_.data() + static_cast<std::size_t>(i) * ss_, point(0, i));
  } else {
    serial_propagate(prop_, N, u0_.data(), lv_[0].u.data());
  }
  add_steps(0, N);
  have_iterate_ = true;
  guess_default_ = false;
  mark_changed();
  lv_[0].fconsistent = true;
  traj_valid_ = cpoints_only_;
}

// ------------------------------------------------------------------ relaxation

// F-relaxation of every F-interval of `level`: u_i = Phi(u_{i-1}) + g_i through
// the interval's F-points. with_pred: also step onto the following C-point and
// cache P_c (one step per full interval; a full finest sweep then costs N).
// use_first: the interval's first step Phi(u_{cm}) is taken from the FAS rhs
// computation when still valid. to_traj (finest level, store = cpoints): write
// C- and F-points into the trajectory buffer instead of scratch.
void Mgrit::fsweep(int level, bool with_pred, bool use_first, bool to_traj) {
  Level& L = lv_[level];
  const bool reuse = use_first && L.first_valid && level > 0;
  const bool scratch = level == 0 && cpoints_only_ && !to_traj;
  const bool have_g = level > 0;
  const std::size_t ss = ss_;
  const long long n = parallel(hier_.n_fintervals(level), [&](int c) -> long long {
    const FInterval iv = hier_.finterval(level, c);
    if (!scratch) {
      // Hand the interval's chain of steps to the propagator so it can fuse them;
      // a first step reused from the FAS right-hand side is copied instead.
      std::vector<int> idx;
      std::vector<double*> outs;
      std::vector<const double*> rhs;
      if (to_traj) copy_state(ss, point(level, iv.cpoint), traj_.data() + static_cast<std::size_t>(iv.cpoint) * ss);
      auto dst_of = [&](int i) {
        return to_traj ? traj_.data() + static_cast<std::size_t>(i) * ss : point(level, i);
      };
      auto g_of = [&](int i) { return have_g ? L.g.data() + static_cast<std::size_t>(i) * ss : nullptr; };
      int start = iv.cpoint;
      int i = iv.f_begin;
      if (reuse && i < iv.f_end) {
        double* dst = dst_of(i);
        copy_state(ss, L.first.data() + static_cast<std::size_t>(c) * ss, dst);
        if (have_g) {
          const double* g = g_of(i);
          for (std::size_t k = 0; k < ss; ++k) dst[k] += g[k];
        }
        start = i++;
      }
      const double* from = start == iv.cpoint ? point(level, iv.cpoint) : dst_of(start);
      idx.push_back(hier_.fine_index(level, start));
      for (; i < iv.f_end; ++i) {
        idx.push_back(hier_.fine_index(level, i));
        outs.push_back(dst_of(i));
        rhs.push_back(g_of(i));
      }
      if (with_pred && iv.next_cpoint >= 0) {
        idx.push_back(hier_.fine_index(level, iv.next_cpoint));
        outs.push_back(L.pred.data() + static_cast<std::size_t>(c + 1) * ss);
        rhs.push_back(nullptr);  // predictions are Phi(u) without g
      }
      const int count = static_cast<int>(outs.size());
      if (count > 0) prop_.propagate(level, idx.data(), count, from, outs.data(), have_g ? rhs.data() : nullptr);
      return count;
    }
    long long cnt = 0;
    std::vector<double> buf;
    if (scratch) buf.resize(2 * ss);
    const double* prev = point(level, iv.cpoint);
    if (to_traj) {
      double* dst = traj_.data() + static_cast<std::size_t>(iv.cpoint) * ss;
      copy_state(ss, prev, dst);
    }
    for (int i = iv.f_begin; i < iv.f_end; ++i) {
      double* dst = scratch   ? buf.data() + ((i - iv.f_begin) & 1) * ss
                    : to_traj ? traj_.data() + static_cast<std::size_t>(i) * ss
                              : point(level, i);
      if (i == iv.f_begin && reuse) {
        copy_state(ss, L.first.data() + static_cast<std::size_t>(c) * ss, dst);
      } else {
        prop_.step(level, hier_.fine_index(level, i - 1), hier_.fine_index(level, i), prev, dst);
        ++cnt;
      }
      if (have_g) {
        const double* g = L.g.data() + static_cast<std::size_t>(i) * ss;
        for (std::size_t k = 0; k < ss; ++k) dst[k] += g[k];
      }
      prev = dst;
    }
    if (with_pred && iv.next_cpoint >= 0) {
      const int j = iv.next_cpoint;
      prop_.step(level, hier_.fine_index(level, j - 1), hier_.fine_index(level, j), prev,
                 L.pred.data() + static_cast<std::size_t>(c + 1) * ss);
      ++cnt;
    }
    return cnt;
  });
  add_steps(level, n);
  L.fconsistent = true;
  L.pred_valid = with_pred;
  if (to_traj) traj_valid_ = true;
}

// C-relaxation u_cm = P_c + g_cm from the cached predictions: no steps.
void Mgrit::crelax(int level) {
  Level& L = lv_[level];
  LP_CHECK(L.pred_valid, "C-relaxation on level " << level << " without valid predictions");
  const int m = hier_.cfactor(level);
  const std::size_t ss = ss_;
  parallel(hier_.n_cpoints(level) - 1, [&](int c1) -> long long {
    const int c = c1 + 1;
    double* u = point(level, c * m);
    const double* p = L.pred.data() + static_cast<std::size_t>(c) * ss;
    if (level > 0) {
      const double* g = L.g.data() + static_cast<std::size_t>(c * m) * ss;
      for (std::size_t k = 0; k < ss; ++k) u[k] = p[k] + g[k];
    } else {
      copy_state(ss, p, u);
    }
    return 0;
  });
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
// level l+1 (it is the first step of that level's next F-sweep).
void Mgrit::restrict_fas(int level) {
  Level& f = lv_[level];
  LP_CHECK(f.pred_valid, "restriction from level " << level << " without valid predictions");
  const int cl = level + 1;
  Level& c = lv_[cl];
  const int m = hier_.cfactor(level);
  const int mc = hier_.cfactor(cl);
  const bool coarsest = hier_.is_coarsest(cl);
  const std::size_t ss = ss_;
  copy_state(ss, point(level, 0), c.u.data());
  copy_state(ss, point(level, 0), c.g.data());
  const long long n = parallel(hier_.n_intervals(cl), [&](int j1) -> long long {
    const int j = j1 + 1;
    const double* uf = point(level, j * m);
    const double* ufprev = point(level, (j - 1) * m);
    double* v = c.u.data() + static_cast<std::size_t>(j) * ss;
    double* g = c.g.data() + static_cast<std::size_t>(j) * ss;
    prop_.step(cl, hier_.fine_index(cl, j - 1), hier_.fine_index(cl, j), ufprev, g);  // g = P
    if (coarsest ? j == 1 : (j - 1) % mc == 0)
      copy_state(ss, g, c.first.data() + static_cast<std::size_t>((j - 1) / mc) * ss);
    const double* p = f.pred.data() + static_cast<std::size_t>(j) * ss;
    const double* gf = level > 0 ? f.g.data() + static_cast<std::size_t>(j * m) * ss : nullptr;
    for (std::size_t k = 0; k < ss; ++k) {
      const double r = (gf ? gf[k] : 0.0) + p[k] - uf[k];
      g[k] = uf[k] - g[k] + r;
      v[k] = uf[k];
    }
    return 1;
  });
  add_steps(cl, n);
  c.fconsistent = false;
  c.pred_valid = false;
  c.first_valid = true;
}

// Skipped first down-cycle: inject the iterate and the (re-discretised) rhs.
void Mgrit::restrict_skip(int level) {
  Level& f = lv_[level];
  const int cl = level + 1;
  Level& c = lv_[cl];
  const int m = hier_.cfactor(level);
  const std::size_t ss = ss_;
  const int n = hier_.n_intervals(cl);
  for (int j = 0; j <= n; ++j) {
    copy_state(ss, point(level, j * m), c.u.data() + static_cast<std::size_t>(j) * ss);
    double* g = c.g.data() + static_cast<std::size_t>(j) * ss;
    if (level > 0)
      copy_state(ss, f.g.data() + static_cast<std::size_t>(j * m) * ss, g);
    else if (j == 0)
      copy_state(ss, u0_.data(), g);
    else
      std::fill(g, g + ss, 0.0);
  }
  c.fconsistent = false;
  c.pred_valid = false;
  c.first_valid = false;
}

// u_jm <- v_j (FAS correction with injection), C-points only.
void Mgrit::correct(int level) {
  const Level& c = lv_[level + 1];
  const int m = hier_.cfactor(level);
  const std::size_t ss = ss_;
  parallel(hier_.n_intervals(level + 1), [&](int j1) -> long long {
    const int j = j1 + 1;
    copy_state(ss, c.u.data() + static_cast<std::size_t>(j) * ss, point(level, j * m));
    return 0;
  });
  mark_changed(level);
}

// Exact forward substitution on the coarsest level: N_L steps, minus the first
// one when the FAS rhs computation already produced Phi(v_0).
void Mgrit::coarsest_solve(int level) {
  Level& L = lv_[level];
  const int n = hier_.n_intervals(level);
  const std::size_t ss = ss_;
  // One chain of steps through the whole level (the first one possibly reused
  // from the FAS right-hand side), handed to the propagator to fuse.
  int j = 1;
  if (level > 0 && L.first_valid && n >= 1) {
    double* dst = point(level, 1);
    copy_state(ss, L.first.data(), dst);
    const double* g = L.g.data() + ss;
    for (std::size_t k = 0; k < ss; ++k) dst[k] += g[k];
    j = 2;
  }
  std::vector<int> idx{hier_.fine_index(level, j - 1)};
  std::vector<double*> outs;
  std::vector<const double*> rhs;
  for (int i = j; i <= n; ++i) {
    idx.push_back(hier_.fine_index(level, i));
    outs.push_back(point(level, i));
    rhs.push_back(level > 0 ? L.g.data() + static_cast<std::size_t>(i) * ss : nullptr);
  }
  const long long cnt = static_cast<long long>(outs.size());
  if (cnt > 0) prop_.propagate(level, idx.data(), static_cast<int>(cnt), point(level, j - 1), outs.data(), rhs.data());
  add_steps(level, cnt);
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
  fsweep(level, need_pred, false);
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
  fsweep(level, true, false);
}

double Mgrit::residual_norm_from_pred() {
  Level& f = lv_[0];
  LP_CHECK(f.pred_valid, "finest residual without valid predictions");
  const int m = hier_.cfactor(0);
  const int nc = hier_.n_cpoints(0);
  const std::size_t ss = ss_;
  std::vector<double> sq(static_cast<std::size_t>(nc), 0.0);
  parallel(nc - 1, [&](int c1) -> long long {
    const int c = c1 + 1;
    const double nr = prop_.norm_diff(f.pred.data() + static_cast<std::size_t>(c) * ss, point(0, c * m));
    sq[c] = nr * nr;
    return 0;
  });
  // Summed in C-point order: the result does not depend on the thread count.
  double s = 0.0;
  for (double x : sq) s += x;
  comm_->allreduce_sum(&s, 1);
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
    history_.push_back(residual_norm_from_pred());
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
  const std::size_t ss = ss_;
  for (int l = 1; l <= L; ++l) {
    Level& v = lv_[l];
    std::fill(v.g.begin(), v.g.end(), 0.0);
    copy_state(ss, u0_.data(), v.g.data());
    copy_state(ss, u0_.data(), v.u.data());
    v.fconsistent = v.pred_valid = v.first_valid = false;
  }
  coarsest_solve(L);
  for (int l = L - 1; l >= 0; --l) {
    const int m = hier_.cfactor(l);
    const int n = hier_.n_intervals(l + 1);
    for (int j = 1; j <= n; ++j) copy_state(ss, lv_[l + 1].u.data() + static_cast<std::size_t>(j) * ss, point(l, j * m));
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
  history_.push_back(residual_norm_from_pred());
}

void Mgrit::iterate(int k) {
  LP_REQUIRE(k >= 0, "Mgrit::iterate: number of cycles must be >= 0, got " << k);
  begin_call();
  for (int i = 0; i < k; ++i) run_cycle();
}

bool Mgrit::solve() {
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
    traj_.resize(static_cast<std::size_t>(hier_.n_points(0)) * ss_);
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
  const int N = hier_.n_intervals(0);
  LP_REQUIRE(i >= 0 && i <= N, "Mgrit::state: point index must be in [0, " << N << "], got " << i);
  if (cpoints_only_) return traj_.data() + static_cast<std::size_t>(i) * ss_;
  return point(0, i);
}

void Mgrit::trajectory(double* out) {
  finalize();
  const std::size_t n = static_cast<std::size_t>(hier_.n_points(0)) * ss_;
  std::memcpy(out, cpoints_only_ ? traj_.data() : lv_[0].u.data(), n * sizeof(double));
}

void Mgrit::set_tolerances(double tol, double rtol) {
  LP_REQUIRE(std::isfinite(tol) && tol >= 0.0, "MgritOptions.tol must be >= 0, got " << tol);
  LP_REQUIRE(std::isfinite(rtol) && rtol >= 0.0, "MgritOptions.rtol must be >= 0, got " << rtol);
  opts_.tol = tol;
  opts_.rtol = rtol;
}

}  // namespace layerparallel
