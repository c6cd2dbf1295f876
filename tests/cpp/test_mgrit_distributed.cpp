// The distributed MGRIT engine (a Partition over P "processes", here threads
// talking through ThreadComm) against the one-process engine: bit for bit the
// same residual histories and the same points, for uneven splits, processes that
// own no C-point (or no point) on some level, every cycle / relaxation /
// storage option, and the reversed (adjoint) ordering.
#include <gtest/gtest.h>

#include <cmath>
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

struct Case {
  int N, P, m;
  std::string relax, cycle, store;
  bool fmg = false, skip = false, reversed = false;
  int max_levels = 10, min_coarse = 2;
};

std::string name(const Case& s) {
  return "N" + std::to_string(s.N) + " P" + std::to_string(s.P) + " m" + std::to_string(s.m) + " " + s.relax + " " +
         s.cycle + " " + s.store + (s.fmg ? " fmg" : "") + (s.skip ? " skip" : "") + (s.reversed ? " rev" : "") +
         " L" + std::to_string(s.max_levels);
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
// value in between (warm starts), then solve().
Run schedule(Mgrit& g, int N) {
  Run r;
  const double u0[3] = {0.5, -0.3, 0.8};
  const double u1[3] = {0.4, -0.2, 0.9};
  g.set_initial(u0);
  g.iterate(2);
  r.history.push_back(g.residual_history());
  g.set_initial(u1);
  g.iterate(1);
  r.history.push_back(g.residual_history());
  g.solve();
  r.history.push_back(g.residual_history());
  r.traj.assign(static_cast<std::size_t>(N + 1) * 3, 0.0);
  g.trajectory(r.traj.data());
  r.owned.assign(static_cast<std::size_t>(N + 1), 0);
  const Range own = g.owned_points();
  for (long i = own.begin; i < own.end; ++i) r.owned[i] = 1;
  // The ghost point is readable and equal to the left owner's value.
  if (own.begin >= 1) {
    const double* gh = g.state(static_cast<int>(own.begin - 1));
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
  const Run want = schedule(ref, s.N);

  lptest::ThreadWorld world(s.P);
  std::vector<Run> got(static_cast<std::size_t>(s.P));
  lptest::run_ranks(s.P, [&](int rank) {
    VecProp prop(0.1);
    lptest::ThreadComm comm(world, rank);
    Mgrit g(prop, s.N, o, &comm, Partition::contiguous(s.N, s.P, s.reversed, 100));
    got[rank] = schedule(g, s.N);
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
