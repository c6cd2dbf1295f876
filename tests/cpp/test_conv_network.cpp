// The convolutional network: gradient against central finite differences for
// both bias kinds, and MGRIT solved to convergence against the serial sweeps.
#include <gtest/gtest.h>

#include <cmath>

#include "layerparallel/conv_network.h"
#include "layerparallel/resnet_mgrit.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;

namespace {

ConvSpec small_spec(bool per_channel, Activation act, bool conv_opening = false) {
  ConvSpec s;
  s.channels = 2;
  s.height = 4;
  s.width = 3;
  s.n_classes = 3;
  s.layers = 4;
  s.T = 1.2;
  s.activation = act;
  s.bias_per_channel = per_channel;
  s.conv_opening = conv_opening;
  return s;
}

class ConvNetwork : public ::testing::TestWithParam<std::tuple<bool, Activation, bool>> {};

TEST_P(ConvNetwork, GradientMatchesFiniteDifferences) {
  const auto [per_channel, act, conv_opening] = GetParam();
  ConvResNet net(small_spec(per_channel, act, conv_opening));
  const int s = 5;
  auto theta = random_vector(net.param_size(), -0.5, 0.5, 3);
  auto X = random_vector(static_cast<std::size_t>(s) * net.input_size(), 0, 255, 4);
  std::vector<std::int64_t> y{0, 1, 2, 1, 0};
  const Regularization reg{1e-2, 2e-2, 3e-2};
  std::vector<double> g(theta.size());
  net.evaluate(theta.data(), X.data(), y.data(), s, reg, g.data());
  const double eps = 1e-5;
  for (std::size_t k = 0; k < theta.size(); ++k) {
    auto tp = theta, tm = theta;
    tp[k] += eps;
    tm[k] -= eps;
    const double fd = (net.evaluate(tp.data(), X.data(), y.data(), s, reg, nullptr).objective -
                       net.evaluate(tm.data(), X.data(), y.data(), s, reg, nullptr).objective) /
                      (2 * eps);
    EXPECT_LT(std::fabs(fd - g[k]) / std::max({std::fabs(fd), std::fabs(g[k]), 1e-6}), 1e-6) << "parameter " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(BiasesAndOpenings, ConvNetwork,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(Activation::Tanh, Activation::SmoothRelu),
                                            ::testing::Bool()));

TEST(ConvNetworkMgrit, ExactSolveMatchesSerial) {
  ConvSpec sp = small_spec(false, Activation::Tanh);
  sp.layers = 30;
  ConvResNet net(sp);
  const int s = 4;
  auto theta = random_vector(net.param_size(), -0.5, 0.5, 5);
  auto X = random_vector(static_cast<std::size_t>(s) * net.input_size(), 0, 255, 6);
  std::vector<std::int64_t> y{0, 1, 2, 1};
  const Regularization reg{1e-3, 1e-3, 1e-3};
  std::vector<double> gref(theta.size()), g(theta.size());
  const Evaluation ev = net.evaluate(theta.data(), X.data(), y.data(), s, reg, gref.data());
  for (int m : {2, 4}) {
    MgritOptions opt;
    opt.cfactor = m;
    opt.tol = 1e-13;
    ResNetMgrit solver(net, s, opt, opt);
    const MgritEvaluation me = solver.evaluate(theta.data(), X.data(), y.data(), reg, g.data(), -1, -1);
    EXPECT_TRUE(me.forward.converged && me.adjoint.converged);
    EXPECT_GT(solver.forward_solver().hierarchy().num_levels(), 1);
    EXPECT_NEAR(me.eval.objective, ev.objective, 1e-12 * std::fabs(ev.objective));
    double num = 0, den = 0;
    for (std::size_t k = 0; k < g.size(); ++k) {
      num = std::max(num, std::fabs(g[k] - gref[k]));
      den = std::max(den, std::fabs(gref[k]));
    }
    EXPECT_LT(num / den, 1e-10) << "cfactor " << m;
  }
}

TEST(ConvNetworkSpec, RejectsBadShapes) {
  ConvSpec s;
  s.channels = 0;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = ConvSpec{};
  s.layers = 0;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  s = ConvSpec{};
  s.T = 0;
  EXPECT_THROW(s.validate(), std::invalid_argument);
}

}  // namespace
