// The distributed MGRIT engine (a Partition over P "processes", here threads
// talking through ThreadComm) against the one-process engine: bit for bit the
// same residual histories and the same points, for uneven splits, processes that
// own no C-point (or no point) on some level, every cycle / relaxation /
// storage option, and the reversed (adjoint) ordering.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "layerparallel/mgrit.h"
#include "test_odes.h"
#include "thread_comm.h"

using namespace layerparallel;

namespace {

// u_{i+1} = u_i + dt tanh(A u_i + b_{i0}), dt = (i1 - i0) h, with b depending on
// the left fine index (as the ResNet's weights do).
class VecProp final : public Propagator {
 public:
  explicit VecProp(double h) : h_(h) {}
  std::size_t state_size() const override { return 3; }
  void step(int, int i0, int i1, const double* in, double* out) override { lptest::vec_ode_step(h_, i0, i1, in, out); }

 private:
  double h_;
};

// A StateSpace the engine cannot read directly: every value is stored with its
// bits XOR'd by a mask (exactly reversible), and host() is false, so messages
// are staged through host copies. Engine code that touched state memory
// instead of going through the space would compute garbage.
class EncodedSpace final : public StateSpace {
 public:
  static double flip(double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, 8);
    b ^= 0x5a5a5a5a5a5a5a5aULL;
    std::memcpy(&v, &b, 8);
    return v;
  }
  bool host() const override { return false; }
  double* allocate(std::size_t n) override {
    double* p = StateSpace::allocate(n);
    zero(p, n);
    return p;
  }
  void zero(double* dst, std::size_t n) override {
    for (std::size_t k = 0; k < n; ++k) dst[k] = flip(0.0);
  }
  void add(double* dst, const double* a, std::size_t n) override {
    for (std::size_t k = 0; k < n; ++k) dst[k] = flip(flip(dst[k]) + flip(a[k]));
  }
  void sum(double* dst, const double* a, const double* b, std::size_t n) override {
    for (std::size_t k = 0; k < n; ++k) dst[k] = flip(flip(a[k]) + flip(b[k]));
  }
  void fas(double* g, const double* gf, const double* p, std::size_t n) override {
    for (std::size_t k = 0; k < n; ++k) g[k] = flip((gf ? flip(gf[k]) + flip(p[k]) : flip(p[k])) - flip(g[k]));
  }
  double sum_sq_diff(const double* a, const double* b, std::size_t n) const override {
    std::vector<double> x(n), y(n);
    download(x.data(), a, n);
    if (b) download(y.data(), b, n);
    return host_space().sum_sq_diff(x.data(), b ? y.data() : nullptr, n);
  }
  void upload(double* dst, const double* src, std::size_t n) override {
    for (std::size_t k = 0; k < n; ++k) dst[k] = flip(src[k]);
  }
  void download(double* dst, const double* src, std::size_t n) const override {
    for (std::size_t k = 0; k < n; ++k) dst[k] = flip(src[k]);
  }
};

// VecProp on encoded states, relaxing the intervals of a level through propagate_chains.
class EncodedProp final : public Propagator {
 public:
  explicit EncodedProp(double h) : h_(h) {}
  std::size_t state_size() const override { return 3; }
  StateSpace& space() const override { return space_; }
  bool fuses_chains() const override { return true; }
  void propagate_chains(int level, const Chain* chains, int n) override {
    ++chain_calls;
    Propagator::propagate_chains(level, chains, n);
  }
  void step(int, int i0, int i1, const double* in, double* out) override {
    double a[3], b[3];
    space_.download(a, in, 3);
    lptest::vec_ode_step(h_, i0, i1, a, b);
    space_.upload(out, b, 3);
  }
  int chain_calls = 0;

 private:
  double h_;
  mutable EncodedSpace space_;
};

struct Case {
  int N, P, m;
  std::string relax, cycle, store;
  bool fmg = false, skip = false, reversed = false;
  int max_levels = 10, min_coarse = 2;
  bool encoded = false;  // the processes use EncodedProp (non-host states, fused chains)
};

std::string name(const Case& s) {
  return "N" + std::to_string(s.N) + " P" + std::to_string(s.P) + " m" + std::to_string(s.m) + " " + s.relax + " " +
         s.cycle + " " + s.store + (s.fmg ? " fmg" : "") + (s.skip ? " skip" : "") + (s.reversed ? " rev" : "") +
         " L" + std::to_string(s.max_levels) + (s.encoded ? " encoded" : "");
}

MgritOptions options(const Case& s) {
  MgritOptions o;
  o.cfactor = s.m;
  o.relax = {s.relax};
  o.cycle = s.cycle;
  o.store = s.store;
  o.fmg = s.fmg;
  o.skip_first_down = s.skip;
  o.max_levels = s.max_levels;
  o.min_coarse = s.min_coarse;
  o.threads = 1;
  return o;
}

struct Run {
  std::vector<std::vector<double>> history;  // per iterate() call
  std::vector<double> traj;                  // (N + 1) * 3, owned points filled
  std::vector<char> owned;
};

// The schedule every rank runs: a few iterate() calls with a changed initial
// value in between (warm starts), then solve(). Values cross into and out of
// the propagator's StateSpace.
Run schedule(Mgrit& g, int N, StateSpace& sp) {
  Run r;
  const double h0[3] = {0.5, -0.3, 0.8};
  const double h1[3] = {0.4, -0.2, 0.9};
  double u0[3], u1[3];
  sp.upload(u0, h0, 3);
  sp.upload(u1, h1, 3);
  g.set_initial(u0);
  g.iterate(2);
  r.history.push_back(g.residual_history());
  g.set_initial(u1);
  g.iterate(1);
  r.history.push_back(g.residual_history());
  g.solve();
  r.history.push_back(g.residual_history());
  r.traj.assign(static_cast<std::size_t>(N + 1) * 3, 0.0);
  std::vector<double> raw(r.traj.size());
  sp.upload(raw.data(), r.traj.data(), raw.size());
  g.trajectory(raw.data());
  sp.download(r.traj.data(), raw.data(), raw.size());
  r.owned.assign(static_cast<std::size_t>(N + 1), 0);
  const Range own = g.owned_points();
  for (long i = own.begin; i < own.end; ++i) r.owned[i] = 1;
  // The ghost point is readable and equal to the left owner's value.
  if (own.begin >= 1) {
    double gh[3];
    sp.download(gh, g.state(static_cast<int>(own.begin - 1)), 3);
    r.traj.insert(r.traj.end(), gh, gh + 3);
  }
  return r;
}

void check(const Case& s) {
  SCOPED_TRACE(name(s));
  VecProp ref_prop(0.1);
  MgritOptions o = options(s);
  o.tol = 1e-11;
  o.max_iter = 60;
  Mgrit ref(ref_prop, s.N, o);
  const Run want = schedule(ref, s.N, host_space());

  lptest::ThreadWorld world(s.P);
  std::vector<Run> got(static_cast<std::size_t>(s.P));
  std::atomic<int> chain_calls{0};
  lptest::run_ranks(s.P, [&](int rank) {
    VecProp prop(0.1);
    EncodedProp eprop(0.1);
    Propagator& p = s.encoded ? static_cast<Propagator&>(eprop) : prop;
    lptest::ThreadComm comm(world, rank);
    Mgrit g(p, s.N, o, &comm, Partition::contiguous(s.N, s.P, s.reversed, 100));
    got[rank] = schedule(g, s.N, p.space());
    chain_calls += eprop.chain_calls;
  });
  std::vector<int> covered(static_cast<std::size_t>(s.N + 1), 0);
  for (int r = 0; r < s.P; ++r) {
    const Run& x = got[r];
    ASSERT_EQ(x.history.size(), want.history.size());
    for (std::size_t c = 0; c < want.history.size(); ++c) {
      ASSERT_EQ(x.history[c].size(), want.history[c].size()) << "call " << c << " rank " << r;
      for (std::size_t k = 0; k < want.history[c].size(); ++k) {
        const double a = want.history[c][k], b = x.history[c][k];
        if (std::isnan(a)) {
          EXPECT_TRUE(std::isnan(b));
        } else {
          EXPECT_EQ(b, a) << "call " << c << " entry " << k << " rank " << r;  // the same rounding
        }
      }
    }
    for (int i = 0; i <= s.N; ++i) {
      if (!x.owned[i]) continue;
      ++covered[i];
      for (int k = 0; k < 3; ++k) EXPECT_EQ(x.traj[i * 3 + k], want.traj[i * 3 + k]) << "point " << i;
    }
    std::size_t first = 0;
    while (first <= static_cast<std::size_t>(s.N) && !x.owned[first]) ++first;
    if (first >= 1 && first <= static_cast<std::size_t>(s.N) && x.traj.size() > static_cast<std::size_t>(s.N + 1) * 3)
      for (int k = 0; k < 3; ++k)
        EXPECT_NEAR(x.traj[(s.N + 1) * 3 + k], want.traj[(first - 1) * 3 + k], 1e-13) << "ghost of rank " << r;
  }
  for (int i = 0; i <= s.N; ++i) EXPECT_EQ(covered[i], 1) << "point " << i << " must have exactly one owner";
  // (Every process needs an interval with no neighbour dependence for the fused path.)
  if (s.encoded && s.max_levels > 1 && s.N >= 4 * s.P) EXPECT_GT(chain_calls.load(), 0) << "the fused-chain path was not taken";
}

}  // namespace

TEST(MgritDistributed, PartitionContiguous) {
  const Partition f = Partition::contiguous(30, 4);
  EXPECT_EQ(f.step_bounds, (std::vector<int>{0, 8, 16, 23, 30}));
  EXPECT_EQ(f.ranks, (std::vector<int>{0, 1, 2, 3}));
  const Partition b = Partition::contiguous(30, 4, true);
  // Rank r owns layers split(30, 4, r); backwards rank 3 goes first.
  EXPECT_EQ(b.step_bounds, (std::vector<int>{0, 7, 14, 22, 30}));
  EXPECT_EQ(b.ranks, (std::vector<int>{3, 2, 1, 0}));
  Partition bad = f;
  bad.step_bounds.back() = 29;
  EXPECT_THROW(bad.validate(30, 4), std::invalid_argument);
  EXPECT_THROW(f.validate(30, 3), std::invalid_argument);
}

TEST(MgritDistributed, MatchesSerialAcrossSplitsAndOptions) {
  const std::vector<std::tuple<int, int, int>> shapes = {
      {16, 2, 2}, {30, 4, 2}, {30, 4, 4}, {33, 3, 4}, {64, 4, 2}, {17, 5, 3}, {5, 7, 2}, {40, 6, 4}};
  for (const auto& [N, P, m] : shapes) {
    for (const char* relax : {"F", "FCF"})
      for (const char* cycle : {"V", "F"})
        for (const char* store : {"all", "cpoints"}) check(Case{N, P, m, relax, cycle, store});
  }
}

TEST(MgritDistributed, FmgSkipReversedAndTwoLevels) {
  for (const auto& [N, P, m] : std::vector<std::tuple<int, int, int>>{{30, 4, 2}, {33, 3, 4}, {24, 5, 2}}) {
    check(Case{N, P, m, "FCF", "V", "all", true, false});
    check(Case{N, P, m, "FCF", "V", "cpoints", false, true});
    check(Case{N, P, m, "F", "V", "all", false, false, true});
    check(Case{N, P, m, "FCF", "F", "cpoints", false, false, true});
    Case two{N, P, m, "FCF", "V", "all"};
    two.max_levels = 2;
    check(two);
    Case one{N, P, m, "F", "V", "all"};
    one.max_levels = 1;  // serial propagation as a pipeline
    check(one);
  }
}

TEST(MgritDistributed, NonHostStatesAndFusedChainsMatchSerial) {
  // Staged messages, every state operation through the space, and the
  // intervals of a level through propagate_chains: still bit for bit.
  for (const auto& [N, P, m] : std::vector<std::tuple<int, int, int>>{{30, 1, 2}, {30, 4, 2}, {33, 3, 4}, {5, 7, 2}})
    for (const char* store : {"all", "cpoints"})
      for (const char* cycle : {"V", "F"}) {
        Case c{N, P, m, "FCF", cycle, store};
        c.encoded = true;
        check(c);
      }
  Case f{30, 4, 2, "FCF", "V", "all", true};
  f.encoded = true;
  check(f);
  Case sk{30, 3, 2, "F", "V", "cpoints", false, true, true};
  sk.encoded = true;
  check(sk);
}

TEST(MgritDistributed, NoResidualReductionsWhenSkipped) {
  const int N = 32, P = 4;
  lptest::ThreadWorld world(P);
  MgritOptions o = options(Case{N, P, 2, "FCF", "V", "all"});
  o.compute_residuals = false;
  std::vector<std::vector<double>> hist(P);
  lptest::run_ranks(P, [&](int rank) {
    VecProp prop(0.1);
    lptest::ThreadComm comm(world, rank);
    Mgrit g(prop, N, o, &comm, Partition::contiguous(N, P));
    const double u0[3] = {0.5, -0.3, 0.8};
    g.set_initial(u0);
    g.iterate(3);
    hist[rank] = g.residual_history();
  });
  for (const auto& h : hist) {
    ASSERT_EQ(h.size(), 4u);
    for (double x : h) EXPECT_TRUE(std::isnan(x));
  }
}

TEST(MgritDistributed, DeferredResidualReductionMatchesImmediate) {
  const int N = 30, P = 3;
  lptest::ThreadWorld world(P);
  const MgritOptions o = options(Case{N, P, 2, "FCF", "V", "all"});
  std::vector<std::vector<double>> now(P), later(P);
  lptest::run_ranks(P, [&](int rank) {
    VecProp pa(0.1), pb(0.1);
    lptest::ThreadComm comm(world, rank);
    Mgrit a(pa, N, o, &comm, Partition::contiguous(N, P));
    Mgrit b(pb, N, o, &comm, Partition::contiguous(N, P, false, 50));
    const double u0[3] = {0.5, -0.3, 0.8};
    a.set_initial(u0);
    b.set_initial(u0);
    a.iterate(3);
    b.iterate(3, true);
    std::vector<double> sums = b.pending_norm_slots();  // this process's squared C-point residuals
    EXPECT_EQ(sums.size(), 4u * 15u);                  // 4 residuals x 15 C-points c >= 1
    EXPECT_THROW(b.iterate(1), std::invalid_argument);  // the reduction is still pending
    comm.allreduce_sum(sums.data(), sums.size());
    b.finish_norms(sums.data());
    now[rank] = a.residual_history();
    later[rank] = b.residual_history();
  });
  for (int r = 0; r < P; ++r) {
    ASSERT_EQ(now[r].size(), later[r].size());
    for (std::size_t k = 0; k < now[r].size(); ++k) EXPECT_EQ(later[r][k], now[r][k]);  // same rounding
  }
}
