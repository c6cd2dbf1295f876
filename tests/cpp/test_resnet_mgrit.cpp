// The ResNet sweeps solved by MGRIT against the serial sweeps: states, adjoints
// and gradients at convergence, for several depths and coarsening factors
// (including depths not divisible by the factor); warm-started fixed budgets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "layerparallel/resnet_mgrit.h"
#include "reference.h"
#include "thread_comm.h"

using namespace layerparallel;
using namespace lptest;

namespace {

struct Case {
  NetworkSpec spec;
  std::vector<double> theta, X;
  std::vector<std::int64_t> y;
  int s = 5;
};

Case make_case(int N, int w, Activation act, unsigned seed) {
  Case c;
  c.spec.n_features = 2;
  c.spec.n_classes = 3;
  c.spec.width = w;
  c.spec.layers = N;
  c.spec.T = 2.0;
  c.spec.activation = act;
  c.spec.opening = Opening::Dense;
  DenseResNet net(c.spec);
  c.theta = random_vector(net.layout().size, -0.8, 0.8, seed);
  c.X = random_vector(static_cast<std::size_t>(c.s) * 2, -2, 2, seed + 1);
  c.y.resize(c.s);
  for (int i = 0; i < c.s; ++i) c.y[i] = i % 3;
  return c;
}

double max_rel_diff(const double* a, const double* b, std::size_t n) {
  double num = 0, den = 0;
  for (std::size_t k = 0; k < n; ++k) {
    num = std::max(num, std::fabs(a[k] - b[k]));
    den = std::max(den, std::fabs(b[k]));
  }
  return num / std::max(den, 1e-300);
}

class ResNetMgritExact : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ResNetMgritExact, ConvergedSolveMatchesSerialSweeps) {
  const auto [N, m] = GetParam();
  Case c = make_case(N, 4, Activation::Tanh, 11 + N + m);
  DenseResNet net(c.spec);
  const std::size_t sz = net.state_size(c.s);
  const Regularization reg{1e-3, 1e-3, 1e-3};

  // Serial reference: states, adjoints, gradient.
  std::vector<double> states((N + 1) * sz);
  net.forward_sweep(c.theta.data(), c.X.data(), c.s, states.data());
  std::vector<double> gref(net.layout().size);
  const Evaluation ev = net.evaluate(c.theta.data(), c.X.data(), c.y.data(), c.s, reg, gref.data());
  std::vector<double> lam((N + 1) * sz), gtmp(net.layout().size, 0.0);
  net.classifier(c.theta.data(), states.data() + N * sz, c.y.data(), c.s, 1.0 / c.s, nullptr,
                 lam.data() + N * sz, gtmp.data());
  for (int n = N - 1; n >= 0; --n)
    net.adjoint_step(c.theta.data(), n, c.spec.h(), states.data() + n * sz, lam.data() + (n + 1) * sz,
                     lam.data() + n * sz, c.s);

  MgritOptions opt;
  opt.cfactor = m;
  opt.max_levels = 10;
  opt.min_coarse = 2;
  opt.tol = 1e-13;
  opt.max_iter = 200;
  ResNetMgrit solver(net, c.s, opt, opt);
  std::vector<double> g(net.layout().size);
  const MgritEvaluation me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), -1, -1);
  EXPECT_TRUE(me.forward.converged);
  EXPECT_TRUE(me.adjoint.converged);
  EXPECT_GT(solver.forward_solver().hierarchy().num_levels(), 1);
  for (int n = 0; n <= N; ++n) {
    ASSERT_LT(max_rel_diff(solver.state(n), states.data() + n * sz, sz), 1e-10) << "state " << n;
    ASSERT_LT(max_rel_diff(solver.adjoint(n), lam.data() + n * sz, sz), 1e-10) << "adjoint " << n;
  }
  EXPECT_LT(max_rel_diff(g.data(), gref.data(), g.size()), 1e-10);
  EXPECT_NEAR(me.eval.objective, ev.objective, 1e-12 * std::fabs(ev.objective));
  EXPECT_EQ(me.eval.correct, ev.correct);
}

INSTANTIATE_TEST_SUITE_P(DepthsAndFactors, ResNetMgritExact,
                         ::testing::Combine(::testing::Values(16, 30, 64, 1000), ::testing::Values(2, 3, 4, 8)));

TEST(ResNetMgrit, WideLayersMatchSerialGradient) {
  // Width 40 takes the BLAS path for steps, derivatives and adjoint steps.
  Case c = make_case(20, 40, Activation::Tanh, 21);
  for (auto& t : c.theta) t *= 0.3;
  DenseResNet net(c.spec);
  MgritOptions opt;
  opt.cfactor = 3;
  opt.tol = 1e-13;
  ResNetMgrit solver(net, c.s, opt, opt);
  std::vector<double> g(net.layout().size), gref(net.layout().size);
  const Regularization reg{1e-4, 1e-4, 1e-4};
  auto me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), -1, -1);
  auto ev = net.evaluate(c.theta.data(), c.X.data(), c.y.data(), c.s, reg, gref.data());
  EXPECT_TRUE(me.forward.converged && me.adjoint.converged);
  EXPECT_NEAR(me.eval.objective, ev.objective, 1e-12 * std::fabs(ev.objective));
  EXPECT_LT(max_rel_diff(g.data(), gref.data(), g.size()), 1e-10);
}

TEST(ResNetMgrit, OneLevelIsSerialPropagation) {
  Case c = make_case(12, 8, Activation::SmoothRelu, 3);
  DenseResNet net(c.spec);
  MgritOptions opt;
  opt.max_levels = 1;
  ResNetMgrit solver(net, c.s, opt, opt);
  std::vector<double> g(net.layout().size), gref(net.layout().size);
  const Regularization reg{1e-4, 1e-4, 1e-4};
  auto me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), 1, 1);
  auto ev = net.evaluate(c.theta.data(), c.X.data(), c.y.data(), c.s, reg, gref.data());
  EXPECT_EQ(me.eval.objective, ev.objective);
  for (std::size_t k = 0; k < g.size(); ++k) EXPECT_NEAR(g[k], gref[k], 1e-15 * (1 + std::fabs(gref[k])));
}

TEST(ResNetMgrit, WarmStartedBudgetConvergesAcrossCalls) {
  // The one-shot pattern: one cycle per call, same weights; repeated calls
  // approach the exact solution because each warm-starts from the last.
  Case c = make_case(64, 4, Activation::Tanh, 5);
  DenseResNet net(c.spec);
  MgritOptions opt;
  opt.cfactor = 2;
  ResNetMgrit solver(net, c.s, opt, opt);
  std::vector<double> g(net.layout().size), gref(net.layout().size);
  const Regularization reg{};
  net.evaluate(c.theta.data(), c.X.data(), c.y.data(), c.s, reg, gref.data());
  double prev = 1e300;
  for (int call = 0; call < 12; ++call) {
    auto me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), 1, 1);
    EXPECT_EQ(me.forward.cycles, 1);
    EXPECT_EQ(me.adjoint.cycles, 1);
    const double err = max_rel_diff(g.data(), gref.data(), g.size());
    if (call > 2) {
      EXPECT_LT(err, prev * 1.0001);
    }
    prev = err;
  }
  EXPECT_LT(prev, 1e-8);
  // reset() forgets the warm start: one cycle from scratch is far from exact again.
  solver.reset();
  solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), 1, 1);
  EXPECT_GT(max_rel_diff(g.data(), gref.data(), g.size()), 1e3 * prev);
}

// A checkpoint of the warm start: a second solver that loads what the first saved
// continues bit for bit as the first does (gradients and residual histories), for
// both storage modes; without it the second solver starts cold and differs.
TEST(ResNetMgrit, SavedWarmStartContinuesBitForBit) {
  for (const char* store : {"all", "cpoints"}) {
    Case c = make_case(24, 4, Activation::Tanh, 9);
    DenseResNet net(c.spec);
    MgritOptions opt;
    opt.cfactor = 4;
    opt.store = store;
    ResNetMgrit a(net, c.s, opt, opt), b(net, c.s, opt, opt), cold(net, c.s, opt, opt);
    const Regularization reg{};
    std::vector<double> ga(net.layout().size), gb(ga.size()), theta = c.theta;
    EXPECT_FALSE(a.started());
    for (int call = 0; call < 3; ++call) {
      theta[call] += 0.01;
      a.evaluate(theta.data(), c.X.data(), c.y.data(), reg, ga.data(), 1, 1);
    }
    ASSERT_TRUE(a.started());
    std::vector<double> f(a.trajectory_size()), adj(a.trajectory_size());
    a.save_warm_start(f.data(), adj.data());
    b.load_warm_start(f.data(), adj.data());
    for (int call = 0; call < 3; ++call) {
      theta[5 + call] -= 0.02;
      auto ma = a.evaluate(theta.data(), c.X.data(), c.y.data(), reg, ga.data(), 2, 1);
      auto mb = b.evaluate(theta.data(), c.X.data(), c.y.data(), reg, gb.data(), 2, 1);
      EXPECT_EQ(ga, gb) << store << " call " << call;
      EXPECT_EQ(ma.forward.residuals, mb.forward.residuals);
      EXPECT_EQ(ma.adjoint.residuals, mb.adjoint.residuals);
    }
    std::vector<double> gc(ga.size());
    a.evaluate(theta.data(), c.X.data(), c.y.data(), reg, ga.data(), 1, 1);
    cold.evaluate(theta.data(), c.X.data(), c.y.data(), reg, gc.data(), 1, 1);
    EXPECT_NE(ga, gc);
  }
}

// The adaptive simultaneous mode's controls: separate relative tolerances for the
// forward and adjoint solves, and a cycle limit for solves to a tolerance.
TEST(ResNetMgrit, ToleranceSolvesHonourTheCycleLimitAndBothTolerances) {
  Case c = make_case(32, 4, Activation::Tanh, 3);
  DenseResNet net(c.spec);
  MgritOptions opt;
  opt.cfactor = 2;
  ResNetMgrit solver(net, c.s, opt, opt);
  const Regularization reg{};
  std::vector<double> g(net.layout().size);
  solver.set_cycle_limit(1);
  solver.set_relative_tolerances(1e-14, 1e-14);
  auto me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), -1, -1);
  EXPECT_EQ(me.forward.cycles, 1);
  EXPECT_EQ(me.adjoint.cycles, 1);
  EXPECT_FALSE(me.forward.converged);
  // A loose forward and a tight adjoint tolerance: the forward stops first.
  solver.reset();
  solver.set_cycle_limit(50);
  solver.set_relative_tolerances(1e-2, 1e-12);
  me = solver.evaluate(c.theta.data(), c.X.data(), c.y.data(), reg, g.data(), -1, -1);
  EXPECT_TRUE(me.forward.converged);
  EXPECT_TRUE(me.adjoint.converged);
  EXPECT_LT(me.forward.cycles, me.adjoint.cycles);
  EXPECT_THROW(solver.set_cycle_limit(-1), std::invalid_argument);
  EXPECT_THROW(solver.set_relative_tolerances(-1.0, 0.0), std::invalid_argument);
}

// Layers distributed over P ranks (threads through ThreadComm): every rank returns
// the one-process objective and accuracy, and the ranks' gradient shares sum to
// the one-process gradient, for exact solves and for warm-started fixed budgets
// (the simultaneous method) over several calls with changing weights.
TEST(ResNetMgrit, DistributedLayersMatchOneProcess) {
  for (const auto& [N, P, m, store] : std::vector<std::tuple<int, int, int, const char*>>{
           {30, 4, 4, "all"}, {30, 4, 2, "cpoints"}, {17, 3, 2, "all"}, {12, 5, 4, "all"}, {8, 8, 2, "all"}}) {
    SCOPED_TRACE("N " + std::to_string(N) + " P " + std::to_string(P) + " m " + std::to_string(m) + " " + store);
    Case c = make_case(N, 4, Activation::Tanh, 3 + N);
    DenseResNet net(c.spec);
    const Regularization reg{};  // distributed: the caller adds regularisers per shard
    MgritOptions opt;
    opt.cfactor = m;
    opt.min_coarse = 2;
    opt.relax = {"F", "FCF"};
    opt.store = store;
    opt.threads = 1;
    opt.max_iter = 50;
    const std::size_t np = net.layout().size;
    // Three calls with slightly different weights: exact, then budgets 2/1 twice.
    auto thetas = [&](int call) {
      std::vector<double> t = c.theta;
      for (std::size_t k = 0; k < t.size(); ++k) t[k] *= 1.0 + 0.01 * call * std::sin(double(k));
      return t;
    };
    const int budgets[3][2] = {{-1, -1}, {2, 1}, {2, 1}};
    std::vector<std::vector<double>> want_g(3, std::vector<double>(np));
    std::vector<MgritEvaluation> want(3);
    {
      ResNetMgrit one(net, c.s, opt, opt);
      one.set_relative_tolerance(1e-12);
      for (int call = 0; call < 3; ++call) {
        const auto t = thetas(call);
        want[call] = one.evaluate(t.data(), c.X.data(), c.y.data(), reg, want_g[call].data(), budgets[call][0],
                                  budgets[call][1]);
      }
    }
    ThreadWorld world(P);
    std::vector<std::vector<std::vector<double>>> got_g(P, std::vector<std::vector<double>>(3, std::vector<double>(np)));
    std::vector<std::vector<MgritEvaluation>> got(P, std::vector<MgritEvaluation>(3));
    run_ranks(P, [&](int rank) {
      ThreadComm comm(world, rank);
      ResNetMgrit dist(net, c.s, opt, opt, &comm);
      dist.set_relative_tolerance(1e-12);
      // Only the parameters this rank owns or declares foreign are readable: the
      // rest are NaN, so any other read shows up in the results.
      const ParamLayout& L = net.layout();
      const std::size_t w = static_cast<std::size_t>(c.spec.width);
      std::vector<char> keep(static_cast<std::size_t>(N), 0);
      for (long n = dist.owned_layers().begin; n < dist.owned_layers().end; ++n) keep[n] = 1;
      for (int n : dist.foreign_layers()) {
        EXPECT_LT(n, dist.owned_layers().begin);
        keep[n] = 1;
      }
      auto visible = [&](std::vector<double> t) {
        const double nan = std::nan("");
        for (int n = 0; n < N; ++n) {
          if (keep[n]) continue;
          std::fill_n(t.begin() + L.weights + n * w * w, w * w, nan);
          std::fill_n(t.begin() + L.biases + n, 1, nan);
        }
        if (rank != 0) std::fill(t.begin() + L.opening_weight, t.begin() + L.weights, nan);
        if (rank != P - 1) std::fill(t.begin() + L.classifier_weight, t.end(), nan);
        return t;
      };
      for (int call = 0; call < 3; ++call) {
        const auto t = visible(thetas(call));
        got[rank][call] = dist.evaluate(t.data(), c.X.data(), c.y.data(), reg, got_g[rank][call].data(),
                                        budgets[call][0], budgets[call][1]);
      }
    });
    for (int call = 0; call < 3; ++call) {
      std::vector<double> sum(np, 0.0);
      for (int r = 0; r < P; ++r) {
        EXPECT_NEAR(got[r][call].eval.objective, want[call].eval.objective, 1e-12 * std::fabs(want[call].eval.objective));
        EXPECT_EQ(got[r][call].eval.correct, want[call].eval.correct);
        EXPECT_EQ(got[r][call].forward.cycles, want[call].forward.cycles);
        EXPECT_EQ(got[r][call].adjoint.cycles, want[call].adjoint.cycles);
        for (std::size_t k = 0; k < np; ++k) sum[k] += got_g[r][call][k];
      }
      EXPECT_LT(max_rel_diff(sum.data(), want_g[call].data(), np), 1e-12) << "call " << call;
    }
  }
  // More processes than layers is a clear error; so are regularisers.
  {
    Case c = make_case(8, 4, Activation::Tanh, 1);
    DenseResNet net(c.spec);
    ThreadWorld world(2);
    std::vector<double> g(net.layout().size);
    run_ranks(2, [&](int rank) {
      ThreadComm comm(world, rank);
      ResNetMgrit d(net, c.s, MgritOptions{}, MgritOptions{}, &comm);
      EXPECT_THROW(d.evaluate(c.theta.data(), c.X.data(), c.y.data(), Regularization{1e-3, 0, 0}, nullptr, 1, 1),
                   std::invalid_argument);
    });
  }
  Case c = make_case(3, 4, Activation::Tanh, 1);
  DenseResNet net(c.spec);
  ThreadWorld world(4);
  ThreadComm comm(world, 0);
  EXPECT_THROW(ResNetMgrit(net, c.s, MgritOptions{}, MgritOptions{}, &comm), std::invalid_argument);
}

}  // namespace
