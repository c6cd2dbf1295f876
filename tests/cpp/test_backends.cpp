// One network class on every backend: DenseResNet and ConvResNet built over the
// "cpu" and the "emulator" backend (the CUDA kernels' bodies on the CPU) honour
// the whole ResidualNetwork contract (serial sweeps, objective and gradient,
// single steps with and without act'(.), logits, regularisers), and agree.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "layerparallel/backend.h"
#include "layerparallel/conv_network.h"
#include "layerparallel/network.h"
#include "dense_problem.h"
#include "near_vec.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;

namespace {

// Host data in a network's backend memory and back.
struct OnBackend {
  const ResidualNetwork& net;
  std::vector<StateBuffer> bufs;
  void* labels = nullptr;
  explicit OnBackend(const ResidualNetwork& n) : net(n) {}
  ~OnBackend() {
    if (labels) net.backend().release_bytes(labels);
  }
  double* up(const std::vector<double>& v) {
    bufs.emplace_back(net.space(), v.size());
    net.space().upload(bufs.back().data(), v.data(), v.size());
    return bufs.back().data();
  }
  double* zeros(std::size_t n) {
    bufs.emplace_back(net.space(), n);
    return bufs.back().data();
  }
  const std::int64_t* up_labels(const std::vector<std::int64_t>& y) {
    labels = net.backend().allocate_bytes(y.size() * sizeof(std::int64_t));
    net.backend().upload_bytes(labels, y.data(), y.size() * sizeof(std::int64_t));
    return static_cast<const std::int64_t*>(labels);
  }
  std::vector<double> down(const double* p, std::size_t n) const {
    std::vector<double> h(n);
    net.space().download(h.data(), p, n);
    return h;
  }
};

struct Result {
  Evaluation ev;
  std::vector<double> grad, logits, states, step_out, step_deriv, adj_lam, adj_grad, reg_grad;
  double reg = 0.0;
};

// Everything the contract offers, on one network, with host inputs.
Result exercise(const ResidualNetwork& net, const std::vector<double>& theta, const std::vector<double>& X,
                const std::vector<std::int64_t>& y, int s, const Regularization& reg) {
  OnBackend b(net);
  Result r;
  const std::size_t np = net.param_size(), sz = net.state_size(s);
  double* th = b.up(theta);
  const std::int64_t* lab = b.up_labels(y);
  double* g = b.zeros(np);
  r.ev = net.evaluate(th, X.data(), lab, s, reg, g);
  r.grad = b.down(g, np);
  r.logits.resize(static_cast<std::size_t>(s) * net.classes());
  net.logits(th, X.data(), s, r.logits.data());
  double* states = b.zeros((net.layers() + 1) * sz);
  net.forward_sweep(th, X.data(), s, states);
  r.states = b.down(states, (net.layers() + 1) * sz);
  // One step of layer 1 with act'(.), and its adjoint with the layer's gradient.
  const int n = 1;
  double* out = b.zeros(sz);
  double* d = b.zeros(sz);
  net.step(th, n, 2 * net.h(), states + n * sz, out, s, d);
  r.step_out = b.down(out, sz);
  r.step_deriv = b.down(d, sz);
  double* lam = b.zeros(sz);
  double* g2 = b.zeros(np);
  net.adjoint_step(th, n, net.h(), states + n * sz, states + (n + 1) * sz, lam, s, g2, net.h());
  r.adj_lam = b.down(lam, sz);
  r.adj_grad = b.down(g2, np);
  double* g3 = b.zeros(np);
  r.reg = net.regularization(th, reg, g3);
  r.reg_grad = b.down(g3, np);
  return r;
}

void expect_same(const Result& a, const Result& c) {
  EXPECT_NEAR(a.ev.objective, c.ev.objective, 1e-12 * std::fabs(c.ev.objective));
  EXPECT_NEAR(a.ev.loss, c.ev.loss, 1e-12 * std::fabs(c.ev.loss));
  EXPECT_EQ(a.ev.correct, c.ev.correct);
  EXPECT_TRUE(near_vec(a.grad, c.grad, 1e-11));
  EXPECT_TRUE(near_vec(a.logits, c.logits, 1e-12));
  EXPECT_TRUE(near_vec(a.states, c.states, 1e-12));
  EXPECT_TRUE(near_vec(a.step_out, c.step_out, 1e-12));
  EXPECT_TRUE(near_vec(a.step_deriv, c.step_deriv, 1e-12));
  EXPECT_TRUE(near_vec(a.adj_lam, c.adj_lam, 1e-12));
  EXPECT_TRUE(near_vec(a.adj_grad, c.adj_grad, 1e-11));
  EXPECT_EQ(a.reg, c.reg);  // the regulariser is one host function on every backend
  EXPECT_TRUE(near_vec(a.reg_grad, c.reg_grad, 0.0));
}

class DenseOnBackends : public ::testing::TestWithParam<std::tuple<int, Opening>> {};

TEST_P(DenseOnBackends, EmulatorHonoursTheContractLikeTheCpu) {
  const auto [w, opening] = GetParam();
  NetworkSpec spec;
  spec.width = w;
  spec.layers = 6;
  spec.T = 1.5;
  spec.activation = Activation::Tanh;
  spec.opening = opening;
  const DenseProblem p = dense_problem(spec, 37, 5, 0.5);
  const Regularization reg{1e-3, 2e-3, 3e-3};
  const DenseResNet cpu(spec);
  const DenseResNet emu(spec, make_backend("emulator"));
  EXPECT_EQ(cpu.backend().name(), "cpu");
  EXPECT_EQ(emu.backend().name(), "emulator");
  EXPECT_FALSE(emu.space().host());
  expect_same(exercise(emu, p.theta, p.X, p.y, p.s, reg), exercise(cpu, p.theta, p.X, p.y, p.s, reg));
}

// Narrow (one thread per example) and wide (GEMMs and epilogues) layers, both openings.
INSTANTIATE_TEST_SUITE_P(Widths, DenseOnBackends,
                         ::testing::Values(std::make_tuple(8, Opening::Dense), std::make_tuple(5, Opening::Expand),
                                           std::make_tuple(40, Opening::Dense)));

TEST(ConvOnBackends, EmulatorHonoursTheContractLikeTheCpu) {
  ConvSpec spec;
  spec.channels = 2;
  spec.height = 5;
  spec.width = 4;
  spec.n_classes = 3;
  spec.layers = 4;
  spec.T = 1.0;
  spec.activation = Activation::Tanh;
  const ConvResNet cpu(spec);
  const ConvResNet emu(spec, make_backend("emulator"));
  const int s = 6;
  const std::vector<double> theta = random_vector(cpu.param_size(), -0.4, 0.4, 3);
  const std::vector<double> X = random_vector(static_cast<std::size_t>(s) * cpu.input_size(), 0, 255, 4);
  std::vector<std::int64_t> y(s);
  for (int i = 0; i < s; ++i) y[i] = i % spec.n_classes;
  const Regularization reg{1e-3, 2e-3, 3e-3};
  expect_same(exercise(emu, theta, X, y, s, reg), exercise(cpu, theta, X, y, s, reg));
}

TEST(Backends, NamesAndLimitsAreChecked) {
  EXPECT_EQ(make_backend("cpu")->name(), "cpu");
  EXPECT_EQ(make_backend("emulator")->name(), "emulator");
  EXPECT_THROW(make_backend("gpu"), std::invalid_argument);
  ConvSpec learned;
  learned.conv_opening = true;
  EXPECT_NO_THROW(ConvResNet(learned, make_backend("cpu")));
  EXPECT_THROW(ConvResNet(learned, make_backend("emulator")), std::invalid_argument);
  NetworkSpec many;
  many.width = 100;
  many.n_classes = 100;
  EXPECT_NO_THROW(DenseResNet(many, make_backend("cpu")));
  EXPECT_THROW(DenseResNet(many, make_backend("emulator")), std::invalid_argument);
}

// The layout is described once: the blocks tile the vector in order, the
// per-layer blocks start with the layer count, and the regulariser's values
// summed over any split of the layers give the whole-vector value bit for bit.
TEST(ParameterLayout, BlocksTileTheVectorAndTheRegulariserSplitsExactly) {
  NetworkSpec spec;
  spec.width = 4;
  spec.n_classes = 3;
  spec.layers = 7;
  const DenseResNet net(spec);
  const ParameterLayout P = net.parameters();
  EXPECT_NO_THROW(P.check());
  EXPECT_EQ(P.size(), net.param_size());
  EXPECT_EQ(P.slots(), 4u + 2u * 7u);
  const std::vector<double> theta = random_vector(net.param_size(), -1, 1, 9);
  const Regularization reg{1e-2, 3e-2, 5e-2};
  std::vector<double> whole_grad(net.param_size(), 0.0);
  const double whole = net.regularization(theta.data(), reg, whole_grad.data());
  for (int P_ : {2, 3, 7}) {
    std::vector<double> total, grad(net.param_size(), 0.0);
    for (int r = 0; r < P_; ++r) {
      const int a = r * spec.layers / P_, b = (r + 1) * spec.layers / P_;
      std::vector<double> values, g(net.param_size(), 0.0);
      regularization_values(P, net.h(), reg, theta.data(), a, b, r == 0, r == P_ - 1, values, g.data());
      if (total.empty()) total.assign(values.size(), 0.0);
      for (std::size_t k = 0; k < values.size(); ++k) total[k] += values[k];
      for (std::size_t k = 0; k < g.size(); ++k) grad[k] += g[k];
    }
    EXPECT_EQ(ordered_sum(total.data(), total.size()), whole) << P_ << " processes";
    EXPECT_EQ(grad, whole_grad) << P_ << " processes";
  }
  // And the gradient is the gradient: central differences of the value.
  for (std::size_t k : {std::size_t{0}, P.blocks[2].offset + 5, P.blocks[3].offset + 3, net.param_size() - 1}) {
    std::vector<double> tp = theta, tm = theta;
    const double e = 1e-6;
    tp[k] += e;
    tm[k] -= e;
    const double fd = (net.regularization(tp.data(), reg, nullptr) - net.regularization(tm.data(), reg, nullptr)) / (2 * e);
    EXPECT_NEAR(whole_grad[k], fd, 1e-8 * (1 + std::fabs(fd))) << "entry " << k;
  }
}

}  // namespace
