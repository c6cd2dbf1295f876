// The 3x3 convolutional layer against a plain reference loop (explicit zero
// padding), the transposed convolution against the dot-product identity, and
// the adjoint and parameter gradients against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "layerparallel/conv.h"
#include "layerparallel/threading.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;

namespace {

// z[co][y][x] = bias + sum K[co][ci][ky][kx] * pad(u)[ci][y + ky][x + kx], pad by one zero.
std::vector<double> ref_preact(const ConvShape& sh, const std::vector<double>& K, const std::vector<double>& b,
                               const double* u) {
  const int C = sh.C, H = sh.H, W = sh.W;
  std::vector<double> pad(static_cast<std::size_t>(C) * (H + 2) * (W + 2), 0.0);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) pad[(c * (H + 2) + y + 1) * (W + 2) + x + 1] = u[(c * H + y) * W + x];
  std::vector<double> z(sh.size());
  for (int co = 0; co < C; ++co)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        double acc = sh.bias_per_channel ? b[co] : b[y * W + x];
        for (int ci = 0; ci < C; ++ci)
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx)
              acc += K[((co * C + ci) * 3 + ky) * 3 + kx] * pad[(ci * (H + 2) + y + ky) * (W + 2) + x + kx];
        z[(co * H + y) * W + x] = acc;
      }
  return z;
}

class ConvKernel : public ::testing::TestWithParam<std::tuple<int, int, int, bool, Activation>> {};

TEST_P(ConvKernel, StepMatchesReference) {
  const auto [C, H, W, per_channel, act] = GetParam();
  ConvShape sh{C, H, W, per_channel};
  const int s = 37;
  auto K = random_vector(sh.weight_size(), -0.4, 0.4, 1);
  auto b = random_vector(sh.bias_size(), -0.2, 0.2, 2);
  auto u = random_vector(static_cast<std::size_t>(s) * sh.size(), -1, 1, 3);
  std::vector<double> out(u.size()), deriv(u.size());
  conv_step(act, sh, K.data(), b.data(), 0.3, u.data(), out.data(), s, deriv.data());
  for (int i = 0; i < s; ++i) {
    const double* ui = u.data() + static_cast<std::size_t>(i) * sh.size();
    auto z = ref_preact(sh, K, b, ui);
    for (int k = 0; k < sh.size(); ++k) {
      ASSERT_NEAR(out[i * sh.size() + k], ui[k] + 0.3 * ref_act(act, z[k]), 1e-13);
      ASSERT_NEAR(deriv[i * sh.size() + k], ref_dact(act, z[k]), 1e-13);
    }
  }
}

TEST_P(ConvKernel, TransposeIsTheAdjointOfTheConvolution) {
  const auto [C, H, W, per_channel, act] = GetParam();
  (void)act;
  ConvShape sh{C, H, W, per_channel};
  auto K = random_vector(sh.weight_size(), -1, 1, 4);
  std::vector<double> zero_bias(sh.bias_size(), 0.0);
  auto u = random_vector(sh.size(), -1, 1, 5);
  auto v = random_vector(sh.size(), -1, 1, 6);
  std::vector<double> Ku(sh.size()), KTv(sh.size(), 0.0);
  conv_preact_example(sh, K.data(), zero_bias.data(), u.data(), Ku.data());
  conv_transpose_add(sh, K.data(), 1.0, v.data(), KTv.data());
  double lhs = 0, rhs = 0;
  for (int k = 0; k < sh.size(); ++k) {
    lhs += Ku[k] * v[k];
    rhs += u[k] * KTv[k];
  }
  EXPECT_NEAR(lhs, rhs, 1e-12 * (1 + std::fabs(lhs)));
}

TEST_P(ConvKernel, AdjointAndGradientMatchFiniteDifferences) {
  // J(u, K, b) = <c, step(u)>: its gradient in u is the adjoint step with
  // lam_next = c, its gradient in (K, b) the accumulated parameter gradient.
  const auto [C, H, W, per_channel, act] = GetParam();
  if (act == Activation::Relu) GTEST_SKIP() << "kinks make central differences unreliable";
  ConvShape sh{C, H, W, per_channel};
  const int s = 3;
  const double dt = 0.7;
  auto K = random_vector(sh.weight_size(), -0.5, 0.5, 7);
  auto b = random_vector(sh.bias_size(), -0.3, 0.3, 8);
  auto u = random_vector(static_cast<std::size_t>(s) * sh.size(), -1, 1, 9);
  auto c = random_vector(u.size(), -1, 1, 10);
  auto J = [&](const std::vector<double>& KK, const std::vector<double>& bb, const std::vector<double>& uu) {
    std::vector<double> out(uu.size());
    conv_step(act, sh, KK.data(), bb.data(), dt, uu.data(), out.data(), s);
    double acc = 0;
    for (std::size_t k = 0; k < out.size(); ++k) acc += c[k] * out[k];
    return acc;
  };
  std::vector<double> lam(u.size()), gK(K.size(), 0.0), gb(b.size(), 0.0);
  conv_adjoint_step(act, sh, K.data(), b.data(), dt, u.data(), c.data(), lam.data(), s, nullptr, gK.data(),
                    gb.data(), dt);
  const double eps = 1e-6;
  auto check = [&](std::vector<double>& x, const std::vector<double>& g, int which) {
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double keep = x[k];
      x[k] = keep + eps;
      const double fp = which == 0 ? J(x, b, u) : which == 1 ? J(K, x, u) : J(K, b, x);
      x[k] = keep - eps;
      const double fm = which == 0 ? J(x, b, u) : which == 1 ? J(K, x, u) : J(K, b, x);
      x[k] = keep;
      const double fd = (fp - fm) / (2 * eps);
      ASSERT_NEAR(g[k], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "block " << which << " entry " << k;
    }
  };
  check(K, gK, 0);
  check(b, gb, 1);
  check(u, lam, 2);
  // The variant with a known act'(.) gives the same adjoint.
  std::vector<double> out(u.size()), deriv(u.size()), lam2(u.size());
  conv_step(act, sh, K.data(), b.data(), dt, u.data(), out.data(), s, deriv.data());
  conv_adjoint_step(act, sh, K.data(), b.data(), dt, u.data(), c.data(), lam2.data(), s, deriv.data());
  for (std::size_t k = 0; k < lam.size(); ++k) ASSERT_NEAR(lam2[k], lam[k], 1e-13);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvKernel,
                         ::testing::Combine(::testing::Values(1, 4), ::testing::Values(1, 5), ::testing::Values(1, 7),
                                            ::testing::Bool(),
                                            ::testing::Values(Activation::Tanh, Activation::Relu,
                                                              Activation::SmoothRelu)));

TEST(Conv, GradientDoesNotDependOnThreadCount) {
  ConvShape sh{4, 6, 5, false};
  const int s = 700;  // three reduction chunks
  auto K = random_vector(sh.weight_size(), -0.5, 0.5, 1);
  auto b = random_vector(sh.bias_size(), -0.3, 0.3, 2);
  auto u = random_vector(static_cast<std::size_t>(s) * sh.size(), -1, 1, 3);
  auto c = random_vector(u.size(), -1, 1, 4);
  std::vector<double> g1(K.size(), 0.0), g2(K.size(), 0.0), b1(b.size(), 0.0), b2(b.size(), 0.0);
  set_num_threads(1);
  conv_adjoint_step(Activation::Tanh, sh, K.data(), b.data(), 0.2, u.data(), c.data(), nullptr, s, nullptr,
                    g1.data(), b1.data(), 0.2);
  set_num_threads(2);
  conv_adjoint_step(Activation::Tanh, sh, K.data(), b.data(), 0.2, u.data(), c.data(), nullptr, s, nullptr,
                    g2.data(), b2.data(), 0.2);
  set_num_threads(0);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(b1, b2);
}

TEST(Conv, ReplicateOpening) {
  ConvShape sh{3, 2, 2, false};
  std::vector<double> px{0.0, 127.5, 255.0, 51.0};
  std::vector<double> u0(sh.size());
  replicate_opening(sh, px.data(), u0.data(), 1);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(u0[c * 4 + 0], std::tanh(-3.0) + 1, 1e-15);
    EXPECT_NEAR(u0[c * 4 + 1], 1.0, 1e-15);
    EXPECT_NEAR(u0[c * 4 + 2], std::tanh(3.0) + 1, 1e-15);
    EXPECT_NEAR(u0[c * 4 + 3], std::tanh(6.0 * 51 / 255 - 3) + 1, 1e-15);
  }
}

}  // namespace
