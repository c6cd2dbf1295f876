// The dense network: objective against a layer-by-layer reference, gradient
// against central finite differences, the sweeps' two code paths against each
// other, and input validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include "layerparallel/network.h"
#include "dense_problem.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;

namespace {

using Problem = DenseProblem;

Problem make_problem(Activation act, Opening op, int w, int N, int s, unsigned seed) {
  NetworkSpec spec;
  spec.n_features = 3;
  spec.n_classes = 3;
  spec.width = w;
  spec.layers = N;
  spec.T = 1.7;
  spec.activation = act;
  spec.opening = op;
  return dense_problem(spec, s, seed, 0.6);
}

class Network : public ::testing::TestWithParam<std::tuple<Activation, Opening>> {};

TEST_P(Network, GradientMatchesFiniteDifferences) {
  const auto [act, op] = GetParam();
  Problem p = make_problem(act, op, 5, 4, 11, 3);
  DenseResNet net(p.spec);
  Regularization reg{1e-2, 2e-2, 3e-2};
  std::vector<double> g(p.theta.size());
  net.evaluate(p.theta.data(), p.X.data(), p.y.data(), p.s, reg, g.data());
  const double eps = 1e-5;
  int checked = 0;
  for (std::size_t k = 0; k < p.theta.size(); ++k) {
    auto tp = p.theta, tm = p.theta;
    tp[k] += eps;
    tm[k] -= eps;
    const double f0 = net.evaluate(p.theta.data(), p.X.data(), p.y.data(), p.s, reg, nullptr).objective;
    const double fp = net.evaluate(tp.data(), p.X.data(), p.y.data(), p.s, reg, nullptr).objective;
    const double fm = net.evaluate(tm.data(), p.X.data(), p.y.data(), p.s, reg, nullptr).objective;
    if (act == Activation::Relu && std::fabs(fp - 2 * f0 + fm) > 1e-9) continue;  // crosses a kink
    const double fd = (fp - fm) / (2 * eps);
    EXPECT_LT(std::fabs(fd - g[k]) / std::max({std::fabs(fd), std::fabs(g[k]), 1e-6}), 1e-6) << "parameter " << k;
    ++checked;
  }
  EXPECT_GT(checked, static_cast<int>(0.9 * p.theta.size()));
}

INSTANTIATE_TEST_SUITE_P(All, Network,
                         ::testing::Combine(::testing::Values(Activation::Tanh, Activation::Relu,
                                                              Activation::SmoothRelu),
                                            ::testing::Values(Opening::Dense, Opening::Expand)));

TEST(NetworkSweeps, FusedSweepMatchesLayerByLayer) {
  // Width 8 takes the chunked fused sweep; building it from single steps must agree.
  Problem p = make_problem(Activation::SmoothRelu, Opening::Dense, 8, 6, 700, 5);
  DenseResNet net(p.spec);
  const std::size_t sz = net.state_size(p.s);
  std::vector<double> states(7 * sz);
  net.forward_sweep(p.theta.data(), p.X.data(), p.s, states.data());
  std::vector<double> a(sz), b(sz);
  net.opening(p.theta.data(), p.X.data(), p.s, a.data());
  for (int n = 0; n < 6; ++n) {
    for (std::size_t k = 0; k < sz; ++k) ASSERT_EQ(states[n * sz + k], a[k]);
    net.step(p.theta.data(), n, p.spec.h(), a.data(), b.data(), p.s);
    std::swap(a, b);
  }
  // Backward: gradient from the fused sweep equals the one from single adjoint steps.
  auto lamN = random_vector(sz, -1, 1, 9);
  std::vector<double> g1(net.layout().size, 0.0), g2(net.layout().size, 0.0);
  net.backward_sweep(p.theta.data(), p.X.data(), states.data(), lamN.data(), p.s, g1.data());
  std::vector<double> l(lamN), l2(sz);
  for (int n = 5; n >= 0; --n) {
    net.adjoint_step(p.theta.data(), n, p.spec.h(), states.data() + n * sz, l.data(), l2.data(), p.s, g2.data(),
                     p.spec.h());
    std::swap(l, l2);
  }
  net.opening_gradient(p.theta.data(), p.X.data(), l.data(), p.s, g2.data());
  for (std::size_t k = 0; k < g1.size(); ++k) EXPECT_NEAR(g1[k], g2[k], 1e-13 * (1 + std::fabs(g2[k])));
}

TEST(NetworkSweeps, RegularizationValues) {
  Problem p = make_problem(Activation::Tanh, Opening::Dense, 4, 3, 2, 1);
  DenseResNet net(p.spec);
  const auto& L = net.layout();
  std::fill(p.theta.begin(), p.theta.end(), 0.0);
  // Layer n's weights all equal n+1: ddt term = (g/2) * 2 * 16 / h^2 (two differences of 1 over 16 entries).
  for (int n = 0; n < 3; ++n)
    for (int k = 0; k < 16; ++k) p.theta[L.weights + n * 16 + k] = n + 1;
  const double h = p.spec.h();
  EXPECT_NEAR(net.regularization(p.theta.data(), Regularization{0, 0, 0.5}, nullptr), 0.25 * 2 * 16 / (h * h), 1e-12);
  // Tikhonov: (g/2) * sum of squares over opening + layers = (1/2)*16*(1+4+9).
  EXPECT_NEAR(net.regularization(p.theta.data(), Regularization{1.0, 0, 0}, nullptr), 0.5 * 16 * 14, 1e-12);
}

TEST(NetworkSpecValidation, RejectsBadShapes) {
  NetworkSpec s;
  s.width = 3;  // fewer than 5 classes
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = NetworkSpec{};
  s.layers = 0;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = NetworkSpec{};
  s.T = -1;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = NetworkSpec{};
  s.opening = Opening::Expand;
  s.n_features = 9;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  EXPECT_THROW(parse_activation("sigmoid"), std::invalid_argument);
  EXPECT_THROW(parse_opening("conv"), std::invalid_argument);
  try {
    parse_activation("sigmoid");
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("activation must be one of"), std::string::npos);
  }
}

}  // namespace
