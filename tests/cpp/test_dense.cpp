// The dense-layer kernels (narrow fused loops and the wide BLAS path, serial
// blocks and threaded batches) against plain reference loops.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "layerparallel/dense.h"
#include "layerparallel/threading.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;

namespace {

class DenseKernel : public ::testing::TestWithParam<std::tuple<Activation, int, int>> {};

TEST_P(DenseKernel, ForwardStepMatchesReference) {
  const auto [act, w, s] = GetParam();
  auto K = random_vector(w * w, -0.5, 0.5, 1);
  auto u = random_vector(s * w, -1, 1, 2);
  const double b = 0.07, dt = 0.3;
  std::vector<double> out(u.size()), deriv(u.size());
  dense_step(act, w, K.data(), b, dt, u.data(), out.data(), s);
  auto z = ref_preact(w, K, b, u, s);
  for (std::size_t k = 0; k < u.size(); ++k) EXPECT_NEAR(out[k], u[k] + dt * ref_act(act, z[k]), 1e-13) << k;
  // The variant that also returns act'(.) (used by wide layers) agrees too.
  std::vector<double> out2(u.size());
  dense_step(act, w, K.data(), b, dt, u.data(), out2.data(), s, deriv.data());
  for (std::size_t k = 0; k < u.size(); ++k) {
    EXPECT_NEAR(out2[k], out[k], 1e-13);
    EXPECT_NEAR(deriv[k], ref_dact(act, z[k]), 1e-13);
  }
}

TEST_P(DenseKernel, AdjointStepAndGradientMatchReference) {
  const auto [act, w, s] = GetParam();
  auto K = random_vector(w * w, -0.5, 0.5, 3);
  auto u = random_vector(s * w, -1, 1, 4);
  auto lamn = random_vector(s * w, -1, 1, 5);
  const double b = -0.05, dt = 0.2, gs = 0.7;
  std::vector<double> lam(u.size()), gK(w * w, 1.0);
  double gb = 2.0;
  dense_adjoint_step(act, w, K.data(), b, dt, u.data(), lamn.data(), lam.data(), s, nullptr, gK.data(), &gb, gs);
  auto z = ref_preact(w, K, b, u, s);
  std::vector<double> rlam(lamn), rgK(w * w, 1.0);
  double rgb = 2.0;
  for (int i = 0; i < s; ++i)
    for (int r = 0; r < w; ++r) {
      const double d = ref_dact(act, z[i * w + r]) * lamn[i * w + r];
      rgb += gs * d;
      for (int c = 0; c < w; ++c) {
        rlam[i * w + c] += dt * K[r * w + c] * d;
        rgK[r * w + c] += gs * d * u[i * w + c];
      }
    }
  for (std::size_t k = 0; k < lam.size(); ++k) EXPECT_NEAR(lam[k], rlam[k], 1e-12) << k;
  for (int k = 0; k < w * w; ++k) EXPECT_NEAR(gK[k], rgK[k], 1e-10 * (1 + std::fabs(rgK[k]))) << k;
  EXPECT_NEAR(gb, rgb, 1e-10 * (1 + std::fabs(rgb)));

  // Gradient only (no adjoint update) gives the same gradient.
  std::vector<double> gK2(w * w, 1.0);
  double gb2 = 2.0;
  dense_layer_gradient(act, w, K.data(), b, u.data(), lamn.data(), s, gK2.data(), &gb2, gs);
  for (int k = 0; k < w * w; ++k) EXPECT_NEAR(gK2[k], gK[k], 1e-12 * (1 + std::fabs(gK[k])));
  EXPECT_NEAR(gb2, gb, 1e-12 * (1 + std::fabs(gb)));
}

// Widths: templated (8, 16, 32), runtime (5, 13) and wide/BLAS (40, 65); batch
// sizes with partial chunks.
INSTANTIATE_TEST_SUITE_P(Widths, DenseKernel,
                         ::testing::Combine(::testing::Values(Activation::Tanh, Activation::Relu,
                                                              Activation::SmoothRelu),
                                            ::testing::Values(1, 5, 8, 13, 16, 32, 40, 65),
                                            ::testing::Values(1, 7, 300, 513)));

TEST(Dense, ResultsDoNotDependOnThreadCount) {
  const int w = 8, s = 1000;
  auto K = random_vector(w * w, -0.5, 0.5, 1);
  auto u = random_vector(s * w, -1, 1, 2);
  auto lamn = random_vector(s * w, -1, 1, 3);
  std::vector<double> g1(w * w), g2(w * w), l1(u.size()), l2(u.size());
  double b1 = 0, b2 = 0;
  set_num_threads(1);
  dense_adjoint_step(Activation::Tanh, w, K.data(), 0.1, 0.2, u.data(), lamn.data(), l1.data(), s, nullptr,
                     g1.data(), &b1, 0.2);
  set_num_threads(2);
  dense_adjoint_step(Activation::Tanh, w, K.data(), 0.1, 0.2, u.data(), lamn.data(), l2.data(), s, nullptr,
                     g2.data(), &b2, 0.2);
  set_num_threads(0);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(b1, b2);
}

TEST(Dense, OpeningsMatchReference) {
  const int w = 6, nf = 3, s = 301;
  auto Ko = random_vector(w * nf, -1, 1, 7);
  auto X = random_vector(s * nf, -2, 2, 8);
  auto lam0 = random_vector(s * w, -1, 1, 9);
  std::vector<double> U0(s * w), gKo(w * nf, 0.0);
  double gbo = 0.0;
  dense_opening(Activation::Tanh, w, nf, Ko.data(), 0.2, X.data(), U0.data(), s);
  dense_opening_gradient(Activation::Tanh, w, nf, Ko.data(), 0.2, X.data(), lam0.data(), s, gKo.data(), &gbo);
  std::vector<double> rg(w * nf, 0.0);
  double rgb = 0.0;
  for (int i = 0; i < s; ++i)
    for (int r = 0; r < w; ++r) {
      double z = 0.2;
      for (int c = 0; c < nf; ++c) z += Ko[r * nf + c] * X[i * nf + c];
      EXPECT_NEAR(U0[i * w + r], std::tanh(z), 1e-14);
      const double d = ref_dact(Activation::Tanh, z) * lam0[i * w + r];
      rgb += d;
      for (int c = 0; c < nf; ++c) rg[r * nf + c] += d * X[i * nf + c];
    }
  for (int k = 0; k < w * nf; ++k) EXPECT_NEAR(gKo[k], rg[k], 1e-11);
  EXPECT_NEAR(gbo, rgb, 1e-11);
  std::vector<double> E(s * 5);
  expand_opening(5, 3, X.data(), E.data(), s);
  for (int i = 0; i < s; ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(E[i * 5 + c], X[i * 3 + c]);
    EXPECT_EQ(E[i * 5 + 3], 0.0);
    EXPECT_EQ(E[i * 5 + 4], 0.0);
  }
}

TEST(Dense, ClassifierMatchesReference) {
  const int w = 7, nc = 4, s = 517;
  auto Wc = random_vector(nc * w, -1, 1, 11);
  auto mu = random_vector(nc, -1, 1, 12);
  auto U = random_vector(s * w, -2, 2, 13);
  std::vector<std::int64_t> y(s);
  for (int i = 0; i < s; ++i) y[i] = (i * 7) % nc;
  std::vector<double> lam(s * w), gW(nc * w, 0.0), gmu(nc, 0.0);
  std::int64_t correct = -1;
  const double scale = 1.0 / s;
  const double loss = classifier_loss(w, nc, Wc.data(), mu.data(), U.data(), y.data(), s, scale, &correct,
                                      lam.data(), gW.data(), gmu.data());
  double rloss = 0;
  std::int64_t rcorrect = 0;
  std::vector<double> rgW(nc * w, 0.0), rgmu(nc, 0.0);
  for (int i = 0; i < s; ++i) {
    std::vector<double> z(nc);
    for (int k = 0; k < nc; ++k) {
      z[k] = mu[k];
      for (int c = 0; c < w; ++c) z[k] += Wc[k * w + c] * U[i * w + c];
    }
    int am = 0;
    double zs = 0;
    for (int k = 0; k < nc; ++k) {
      if (z[k] > z[am]) am = k;
      zs += std::exp(z[k]);
    }
    rcorrect += (am == y[i]);
    rloss += std::log(zs) - z[y[i]];
    for (int k = 0; k < nc; ++k) {
      const double p = (std::exp(z[k]) / zs - (k == y[i])) * scale;
      rgmu[k] += p;
      for (int c = 0; c < w; ++c) rgW[k * w + c] += p * U[i * w + c];
    }
    for (int c = 0; c < w; ++c) {
      double l = 0;
      for (int k = 0; k < nc; ++k) l += Wc[k * w + c] * (std::exp(z[k]) / zs - (k == y[i])) * scale;
      EXPECT_NEAR(lam[i * w + c], l, 1e-14);
    }
  }
  EXPECT_NEAR(loss, rloss, 1e-10);
  EXPECT_EQ(correct, rcorrect);
  for (int k = 0; k < nc * w; ++k) EXPECT_NEAR(gW[k], rgW[k], 1e-12);
  for (int k = 0; k < nc; ++k) EXPECT_NEAR(gmu[k], rgmu[k], 1e-12);
}

TEST(Dense, SmoothReluIsContinuouslyDifferentiable) {
  for (double x : {-0.1, 0.1}) {
    EXPECT_NEAR(SmoothReluAct::f(x - 1e-12), SmoothReluAct::f(x + 1e-12), 1e-11);
    EXPECT_NEAR(SmoothReluAct::df(x - 1e-12), SmoothReluAct::df(x + 1e-12), 1e-10);
  }
  EXPECT_DOUBLE_EQ(SmoothReluAct::f(0.0), 0.025);
  EXPECT_DOUBLE_EQ(SmoothReluAct::df(0.0), 0.5);
}

}  // namespace
