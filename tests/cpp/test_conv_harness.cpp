// The CUDA kernels' bodies of the convolutional layer (conv_kernels_impl.h) run
// on the CPU over their launch grid (harness.h), against the CPU backend
// (conv.h): forward step (with and without act'), adjoint step (with and
// without the stored act'), the deterministic layer gradient and the opening,
// for several channel counts, image sizes, both bias kinds, batches that are
// not a multiple of the block size and grids capped below the batch (the
// grid-stride loops). The CudaDevice case runs the real kernels when a device
// is present and skips with the reason otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "harness.h"
#include "layerparallel/conv.h"
#include "layerparallel/conv_kernels_impl.h"
#include "layerparallel/cuda.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;
using kernels::Idx3;

namespace {

constexpr double kTol = 1e-13;
constexpr double kSumTol = 1e-12;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------ kernels on the harness

std::vector<double> harness_conv_step(Activation act, const ConvShape& sh, const std::vector<double>& K,
                                      const std::vector<double>& bias, double dt, const std::vector<double>& in,
                                      int s, std::vector<double>* deriv = nullptr, bool reverse = false) {
  std::vector<double> out(in.size(), kNaN);
  if (deriv) deriv->assign(in.size(), kNaN);
  const Idx3 bd{kernels::kConvThreads, 1, 1}, grid{blocks_for(static_cast<long long>(s) * sh.C, bd.x), 1, 1};
  with_act(act, [&](auto A) {
    run_grid(grid, bd, 0, 0, reverse, [&](Idx3 blk, Block& B) {
      B.phase([&](Idx3 t, double*, double*) {
        kernels::conv_step_channel<decltype(A)>(blk, t, bd, sh, K.data(), bias.data(), dt, in.data(), out.data(), s,
                                                deriv ? deriv->data() : nullptr);
      });
    });
  });
  return out;
}

std::vector<double> harness_conv_adjoint(Activation act, const ConvShape& sh, const std::vector<double>& K,
                                         const std::vector<double>& bias, double dt, const std::vector<double>& u,
                                         const std::vector<double>& lamn, int s, const double* deriv,
                                         int max_blocks = kernels::kConvMaxBlocks) {
  std::vector<double> lam(lamn.size(), kNaN);
  const Idx3 bd{kernels::kConvThreads, 1, 1}, grid{std::min(blocks_for(s, bd.x), max_blocks), 1, 1};
  std::vector<double> scratch(static_cast<std::size_t>(grid.x) * bd.x * kernels::conv_adjoint_scratch(sh), kNaN);
  with_act(act, [&](auto A) {
    run_grid(grid, bd, 0, 0, false, [&](Idx3 blk, Block& B) {
      B.phase([&](Idx3 t, double*, double*) {
        kernels::conv_adjoint_examples<decltype(A)>(blk, t, bd, grid, sh, K.data(), bias.data(), dt, u.data(), deriv,
                                                    lamn.data(), lam.data(), s, scratch.data());
      });
    });
  });
  return lam;
}

void harness_conv_gradient(Activation act, const ConvShape& sh, const std::vector<double>& K,
                           const std::vector<double>& bias, const std::vector<double>& u,
                           const std::vector<double>& lamn, int s, double* gK, double* gb, double gscale,
                           const double* deriv, int threads = kernels::kConvGradThreads,
                           int max_blocks = kernels::kConvMaxBlocks, bool reverse = false) {
  const Idx3 bd{threads, 1, 1}, grid{std::min(blocks_for(s, threads), max_blocks), 1, 1};
  const int len = kernels::conv_gradient_len(sh);
  std::vector<double> scratch(static_cast<std::size_t>(grid.x) * threads * sh.size(), kNaN);
  std::vector<double> partial(static_cast<std::size_t>(grid.x) * len, kNaN);
  const int rounds = kernels::conv_gradient_rounds(s, bd, grid);
  // The blocks of a round run one after another here, but each block only
  // touches its own scratch slices and partial row, as on the device.
  with_act(act, [&](auto A) {
    run_grid(grid, bd, 0, 0, reverse, [&](Idx3 blk, Block& B) {
      for (int r = 0; r < rounds; ++r) {
        B.phase([&](Idx3 t, double*, double*) {
          kernels::conv_gradient_rows<decltype(A)>(r, blk, t, bd, grid, sh, K.data(), bias.data(), u.data(),
                                                   lamn.data(), deriv, s, scratch.data());
        });
        B.phase([&](Idx3 t, double*, double*) {
          kernels::conv_gradient_entries(r, blk, t, bd, grid, sh, u.data(), s, gscale, scratch.data(),
                                         partial.data());
        });
      }
    });
  });
  const Idx3 sbd{128, 1, 1}, sgrid{blocks_for(kernels::conv_gradient_out_len(sh), sbd.x), 1, 1};
  run_grid(sgrid, sbd, 0, 0, reverse, [&](Idx3 blk, Block& B) {
    B.phase([&](Idx3 t, double*, double*) {
      kernels::conv_gradient_sum(blk, t, sbd, sh, partial.data(), grid.x, gK, gb);
    });
  });
}

std::vector<double> harness_opening(const ConvShape& sh, const std::vector<double>& pixels, int s) {
  std::vector<double> U0(static_cast<std::size_t>(s) * sh.size(), kNaN);
  const Idx3 bd{kernels::kConvThreads, 1, 1}, grid{blocks_for(s, bd.x), 1, 1};
  run_grid(grid, bd, 0, 0, false, [&](Idx3 blk, Block& B) {
    B.phase([&](Idx3 t, double*, double*) {
      kernels::replicate_opening_examples(blk, t, bd, sh, pixels.data(), U0.data(), s);
    });
  });
  return U0;
}

// ------------------------------------------------------------------ problems

struct Problem {
  ConvShape sh;
  int s = 0;
  std::vector<double> K, bias, u, lamn;
};

Problem make_problem(int C, int H, int W, bool per_channel, int s, unsigned seed) {
  Problem p;
  p.sh.C = C;
  p.sh.H = H;
  p.sh.W = W;
  p.sh.bias_per_channel = per_channel;
  p.s = s;
  p.K = random_vector(p.sh.weight_size(), -0.4, 0.4, seed);
  p.bias = random_vector(p.sh.bias_size(), -0.3, 0.3, seed + 1);
  p.u = random_vector(static_cast<std::size_t>(s) * p.sh.size(), -1, 1, seed + 2);
  p.lamn = random_vector(static_cast<std::size_t>(s) * p.sh.size(), -1, 1, seed + 3);
  return p;
}

// ------------------------------------------------------------------ tests

// (activation, channels, image (H, W), per-channel bias, examples). Examples: one,
// and 77 / 133: not multiples of the block sizes (64 and 32), several blocks.
using Param = std::tuple<Activation, int, std::tuple<int, int>, bool, int>;
class ConvKernelHarness : public ::testing::TestWithParam<Param> {
 protected:
  Problem problem(unsigned seed) const {
    const auto [act, C, hw, pc, s] = GetParam();
    (void)act;
    return make_problem(C, std::get<0>(hw), std::get<1>(hw), pc, s, seed);
  }
};

TEST_P(ConvKernelHarness, ForwardStepMatchesCpuBackend) {
  const Activation act = std::get<0>(GetParam());
  const Problem p = problem(1);
  const double dt = 0.3;
  std::vector<double> ref(p.u.size()), rderiv(p.u.size()), ref2(p.u.size()), deriv;
  conv_step(act, p.sh, p.K.data(), p.bias.data(), dt, p.u.data(), ref.data(), p.s);
  EXPECT_TRUE(close(harness_conv_step(act, p.sh, p.K, p.bias, dt, p.u, p.s), ref, kTol));
  // With act' written out as well.
  conv_step(act, p.sh, p.K.data(), p.bias.data(), dt, p.u.data(), ref2.data(), p.s, rderiv.data());
  EXPECT_TRUE(close(harness_conv_step(act, p.sh, p.K, p.bias, dt, p.u, p.s, &deriv), ref2, kTol));
  EXPECT_TRUE(close(deriv, rderiv, kTol));
}

TEST_P(ConvKernelHarness, AdjointStepMatchesCpuBackend) {
  const Activation act = std::get<0>(GetParam());
  const Problem p = problem(11);
  const double dt = 0.2;
  std::vector<double> ref(p.u.size());
  conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), dt, p.u.data(), p.lamn.data(), ref.data(), p.s);
  EXPECT_TRUE(close(harness_conv_adjoint(act, p.sh, p.K, p.bias, dt, p.u, p.lamn, p.s, nullptr), ref, kTol));
  // A grid of one block: the grid-stride loop covers every example, reusing the scratch.
  EXPECT_TRUE(close(harness_conv_adjoint(act, p.sh, p.K, p.bias, dt, p.u, p.lamn, p.s, nullptr, 1), ref, kTol));
  // With the stored derivative (what MGRIT's adjoint uses).
  std::vector<double> fwd(p.u.size()), deriv(p.u.size()), ref2(p.u.size());
  conv_step(act, p.sh, p.K.data(), p.bias.data(), dt, p.u.data(), fwd.data(), p.s, deriv.data());
  conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), dt, p.u.data(), p.lamn.data(), ref2.data(), p.s,
                    deriv.data());
  EXPECT_TRUE(
      close(harness_conv_adjoint(act, p.sh, p.K, p.bias, dt, p.u, p.lamn, p.s, deriv.data(), 2), ref2, kTol));
}

TEST_P(ConvKernelHarness, LayerGradientMatchesCpuBackend) {
  const Activation act = std::get<0>(GetParam());
  const Problem p = problem(21);
  const double gs = 0.7;
  // Accumulates into nonzero gradients, as the sweeps do.
  const std::size_t nw = p.sh.weight_size(), nb = p.sh.bias_size();
  std::vector<double> rgK(nw, 0.5), rgb(nb, -1.0);
  conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), 0.1, p.u.data(), p.lamn.data(), nullptr, p.s, nullptr,
                    rgK.data(), rgb.data(), gs);
  {
    std::vector<double> gK(nw, 0.5), gb(nb, -1.0);
    harness_conv_gradient(act, p.sh, p.K, p.bias, p.u, p.lamn, p.s, gK.data(), gb.data(), gs, nullptr);
    // Sums over examples run in another order than the CPU's chunks.
    EXPECT_TRUE(close(gK, rgK, kSumTol));
    EXPECT_TRUE(close(gb, rgb, kSumTol));
  }
  {
    // An odd block size and a grid capped at two blocks (several rounds, partial last tile).
    std::vector<double> gK(nw, 0.5), gb(nb, -1.0);
    harness_conv_gradient(act, p.sh, p.K, p.bias, p.u, p.lamn, p.s, gK.data(), gb.data(), gs, nullptr, 7, 2);
    EXPECT_TRUE(close(gK, rgK, kSumTol));
    EXPECT_TRUE(close(gb, rgb, kSumTol));
  }
  {
    // With the stored derivative.
    std::vector<double> fwd(p.u.size()), deriv(p.u.size()), gK(nw, 0.5), gb(nb, -1.0);
    conv_step(act, p.sh, p.K.data(), p.bias.data(), 0.1, p.u.data(), fwd.data(), p.s, deriv.data());
    harness_conv_gradient(act, p.sh, p.K, p.bias, p.u, p.lamn, p.s, gK.data(), gb.data(), gs, deriv.data(), 24);
    EXPECT_TRUE(close(gK, rgK, kSumTol));
    EXPECT_TRUE(close(gb, rgb, kSumTol));
  }
}

TEST_P(ConvKernelHarness, OpeningMatchesCpuBackend) {
  const Problem p = problem(31);
  const auto pixels = random_vector(static_cast<std::size_t>(p.s) * p.sh.pixels(), 0, 255, 32);
  std::vector<double> ref(static_cast<std::size_t>(p.s) * p.sh.size());
  replicate_opening(p.sh, pixels.data(), ref.data(), p.s);
  EXPECT_TRUE(close(harness_opening(p.sh, pixels, p.s), ref, kTol));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvKernelHarness,
    ::testing::Combine(::testing::Values(Activation::Tanh, Activation::Relu, Activation::SmoothRelu),
                       ::testing::Values(1, 3, 4),
                       ::testing::Values(std::make_tuple(1, 1), std::make_tuple(5, 7), std::make_tuple(8, 8)),
                       ::testing::Bool(), ::testing::Values(1, 77, 133)));

// ------------------------------------------------------------------ the tests can fail

TEST(ConvKernelHarnessSensitivity, PerturbedInputsChangeTheResults) {
  for (bool pc : {false, true}) {
    Problem p = make_problem(3, 5, 7, pc, 77, 41);
    const Activation act = Activation::Tanh;
    std::vector<double> ref(p.u.size()), rlam(p.u.size());
    conv_step(act, p.sh, p.K.data(), p.bias.data(), 0.3, p.u.data(), ref.data(), p.s);
    conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), 0.3, p.u.data(), p.lamn.data(), rlam.data(), p.s);
    ASSERT_TRUE(close(harness_conv_step(act, p.sh, p.K, p.bias, 0.3, p.u, p.s), ref, kTol));
    ASSERT_TRUE(close(harness_conv_adjoint(act, p.sh, p.K, p.bias, 0.3, p.u, p.lamn, p.s, nullptr), rlam, kTol));
    // One weight (a corner tap of an off-diagonal channel pair) changed by 1e-6 is caught.
    auto K2 = p.K;
    K2[(2 * 3 + 1) * 9 + 8] += 1e-6;
    EXPECT_FALSE(close(harness_conv_step(act, p.sh, K2, p.bias, 0.3, p.u, p.s), ref, kTol));
    EXPECT_FALSE(close(harness_conv_adjoint(act, p.sh, K2, p.bias, 0.3, p.u, p.lamn, p.s, nullptr), rlam, kTol));
    // So is one bias entry, and the step size.
    auto b2 = p.bias;
    b2.back() += 1e-6;
    EXPECT_FALSE(close(harness_conv_step(act, p.sh, p.K, b2, 0.3, p.u, p.s), ref, kTol));
    EXPECT_FALSE(close(harness_conv_adjoint(act, p.sh, p.K, b2, 0.3, p.u, p.lamn, p.s, nullptr), rlam, kTol));
    EXPECT_FALSE(close(harness_conv_step(act, p.sh, p.K, p.bias, 0.3 * (1 + 1e-9), p.u, p.s), ref, kTol));

    // The gradient sees the last example's adjoint changed (a partial tile's row), in gK and gb.
    const std::size_t nw = p.sh.weight_size(), nb = p.sh.bias_size();
    std::vector<double> rgK(nw, 0.0), rgb(nb, 0.0), gK(nw, 0.0), gb(nb, 0.0);
    conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), 0.3, p.u.data(), p.lamn.data(), nullptr, p.s, nullptr,
                      rgK.data(), rgb.data(), 0.5);
    auto lam2 = p.lamn;
    lam2[(p.s - 1) * p.sh.size() + 2 * p.sh.pixels() + 3] += 1e-6;
    harness_conv_gradient(act, p.sh, p.K, p.bias, p.u, lam2, p.s, gK.data(), gb.data(), 0.5, nullptr);
    EXPECT_FALSE(close(gK, rgK, kSumTol));
    EXPECT_FALSE(close(gb, rgb, kSumTol));

    // And the opening one pixel.
    auto pixels = random_vector(static_cast<std::size_t>(p.s) * p.sh.pixels(), 0, 255, 42);
    std::vector<double> ropen(static_cast<std::size_t>(p.s) * p.sh.size());
    replicate_opening(p.sh, pixels.data(), ropen.data(), p.s);
    pixels[5] += 1e-3;
    EXPECT_FALSE(close(harness_opening(p.sh, pixels, p.s), ropen, kTol));
  }
}

TEST(ConvKernelHarnessSensitivity, ThreadOrderDoesNotChangeResults) {
  // A body that read another thread's output within a phase would depend on
  // the order; the harness runs both orders and the bits must agree.
  for (bool pc : {false, true}) {
    const Problem p = make_problem(4, 8, 8, pc, 133, 51);
    EXPECT_EQ(harness_conv_step(Activation::SmoothRelu, p.sh, p.K, p.bias, 0.3, p.u, p.s),
              harness_conv_step(Activation::SmoothRelu, p.sh, p.K, p.bias, 0.3, p.u, p.s, nullptr, true));
    const std::size_t nw = p.sh.weight_size(), nb = p.sh.bias_size();
    std::vector<double> g1(nw, 0.0), g2(nw, 0.0), b1(nb, 0.0), b2(nb, 0.0);
    harness_conv_gradient(Activation::Tanh, p.sh, p.K, p.bias, p.u, p.lamn, p.s, g1.data(), b1.data(), 0.5, nullptr,
                          32, 3);
    harness_conv_gradient(Activation::Tanh, p.sh, p.K, p.bias, p.u, p.lamn, p.s, g2.data(), b2.data(), 0.5, nullptr,
                          32, 3, true);
    EXPECT_EQ(g1, g2);
    EXPECT_EQ(b1, b2);
  }
}

// ------------------------------------------------------------------ the real kernels (need a device)

class ConvCudaDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status();
  }
};

TEST_F(ConvCudaDevice, KernelsMatchCpuBackend) {
  for (bool pc : {false, true}) {
    const Problem p = make_problem(4, 8, 8, pc, 133, 61);
    const Activation act = Activation::Tanh;
    const std::size_t n = p.u.size(), nw = p.sh.weight_size(), nb = p.sh.bias_size();
    std::vector<double> ref(n), rderiv(n), rlam(n), rgK(nw, 0.0), rgb(nb, 0.0);
    conv_step(act, p.sh, p.K.data(), p.bias.data(), 0.3, p.u.data(), ref.data(), p.s, rderiv.data());
    conv_adjoint_step(act, p.sh, p.K.data(), p.bias.data(), 0.3, p.u.data(), p.lamn.data(), rlam.data(), p.s, nullptr,
                      rgK.data(), rgb.data(), 0.5);
    DeviceBuffer<double> dK(p.K), db(p.bias), du(p.u), dl(p.lamn), dout(n), dderiv(n), dgK(nw), dgb(nb);
    dgK.zero();
    dgb.zero();
    cuda_conv_step(act, p.sh, dK.data(), db.data(), 0.3, du.data(), dout.data(), p.s, dderiv.data());
    EXPECT_TRUE(close(dout.to_host(), ref, kTol));
    EXPECT_TRUE(close(dderiv.to_host(), rderiv, kTol));
    cuda_conv_adjoint_step(act, p.sh, dK.data(), db.data(), 0.3, du.data(), dl.data(), dout.data(), p.s);
    EXPECT_TRUE(close(dout.to_host(), rlam, kTol));
    cuda_conv_adjoint_step(act, p.sh, dK.data(), db.data(), 0.3, du.data(), dl.data(), dout.data(), p.s,
                           dderiv.data());
    EXPECT_TRUE(close(dout.to_host(), rlam, kTol));
    cuda_conv_layer_gradient(act, p.sh, dK.data(), db.data(), du.data(), dl.data(), p.s, dgK.data(), dgb.data(), 0.5);
    EXPECT_TRUE(close(dgK.to_host(), rgK, kSumTol));
    EXPECT_TRUE(close(dgb.to_host(), rgb, kSumTol));
    const auto pixels = random_vector(static_cast<std::size_t>(p.s) * p.sh.pixels(), 0, 255, 62);
    std::vector<double> ropen(n);
    replicate_opening(p.sh, pixels.data(), ropen.data(), p.s);
    DeviceBuffer<double> dpix(pixels);
    cuda_replicate_opening(p.sh, dpix.data(), dout.data(), p.s);
    EXPECT_TRUE(close(dout.to_host(), ropen, kTol));
  }
}

TEST(ConvCudaHostApi, StubsSayBuiltWithoutCuda) {
  if (cuda_built()) GTEST_SKIP() << "built with CUDA";
  ConvShape sh;
  try {
    cuda_conv_step(Activation::Tanh, sh, nullptr, nullptr, 0.1, nullptr, nullptr, 1);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda_conv_adjoint_step(Activation::Tanh, sh, nullptr, nullptr, 0.1, nullptr, nullptr, nullptr, 1),
               std::runtime_error);
  EXPECT_THROW(cuda_conv_layer_gradient(Activation::Tanh, sh, nullptr, nullptr, nullptr, nullptr, 1, nullptr, nullptr,
                                        0.5),
               std::runtime_error);
  EXPECT_THROW(cuda_replicate_opening(sh, nullptr, nullptr, 1), std::runtime_error);
}

}  // namespace
