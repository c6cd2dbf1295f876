// The CUDA kernels' bodies (dense_kernels_impl.h) run on the CPU over their
// launch grid, block by block and phase by phase, against the CPU backend
// (dense.h). This tests the kernels' arithmetic, indexing, partial tiles and
// reductions on machines with no GPU; the CudaDevice cases run the real
// kernels when a device is present and skip with the reason otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

#include "layerparallel/cuda.h"
#include "layerparallel/dense.h"
#include "layerparallel/dense_kernels_impl.h"
#include "harness.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;
using kernels::Idx3;

namespace {

// Runs f with the compile-time width the CUDA dispatcher picks (8, 16, 32 or 0).
template <class F>
void with_w(int w, F&& f) {
  kernels::with_kernel_width(w, std::forward<F>(f));
}

constexpr double kTol = 1e-13;

// ------------------------------------------------------------------ kernels on the harness

std::vector<double> harness_step(Activation act, int w, const std::vector<double>& K, double b, double dt,
                                 const std::vector<double>& in, int s, bool reverse = false) {
  std::vector<double> out(in.size(), -7.0);
  const Idx3 bd{kernels::kStepThreads, 1, 1}, grid{blocks_for(s, bd.x), 1, 1};
  with_act(act, [&](auto A) {
    with_w(w, [&](auto WC) {
      run_grid(grid, bd, kernels::dense_step_shared(w), 0, reverse, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double* sh, double*) { kernels::dense_step_load(t, bd, w, K.data(), sh); });
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::dense_step_compute<decltype(A), decltype(WC)::value>(blk, t, bd, w, b, dt, in.data(), out.data(),
                                                                         s, sh);
        });
      });
    });
  });
  return out;
}

std::vector<double> harness_adjoint(Activation act, int w, const std::vector<double>& K, double b, double dt,
                                    const std::vector<double>& u, const std::vector<double>& lamn, int s,
                                    const double* deriv) {
  std::vector<double> lam(lamn.size(), -7.0);
  const Idx3 bd{kernels::kStepThreads, 1, 1}, grid{blocks_for(s, bd.x), 1, 1};
  with_act(act, [&](auto A) {
    with_w(w, [&](auto WC) {
      constexpr int W = decltype(WC)::value;
      if (deriv) {
        run_grid(grid, bd, kernels::dense_adjoint_deriv_shared(w), 0, false, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double* sh, double*) { kernels::dense_adjoint_deriv_load(t, bd, w, K.data(), sh); });
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::dense_adjoint_deriv_compute<W>(blk, t, bd, w, dt, deriv, lamn.data(), lam.data(), s, sh);
          });
        });
      } else {
        run_grid(grid, bd, kernels::dense_adjoint_shared(w), 0, false, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double* sh, double*) { kernels::dense_adjoint_load(t, bd, w, K.data(), sh); });
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::dense_adjoint_compute<decltype(A), W>(blk, t, bd, w, b, dt, u.data(), lamn.data(), lam.data(), s,
                                                           sh);
          });
        });
      }
    });
  });
  return lam;
}

// The second kernel of every reduction: one thread per entry over the grid.
void harness_sum_partials(const std::vector<double>& partial, int nblocks, int len, kernels::PartialTargets t) {
  const Idx3 bd{128, 1, 1}, grid{blocks_for(len, bd.x), 1, 1};
  run_grid(grid, bd, 0, 0, false, [&](Idx3 blk, Block& B) {
    B.phase([&](Idx3 th, double*, double*) { kernels::sum_partials(blk, th, bd, partial.data(), nblocks, len, t); });
  });
}

void harness_layer_gradient(Activation act, int w, const std::vector<double>& K, double b,
                            const std::vector<double>& u, const std::vector<double>& lamn, int s, double* gK,
                            double* gb, double gscale, const double* deriv, int threads, bool reverse = false) {
  const Idx3 bd{threads, 1, 1}, grid{blocks_for(s, threads), 1, 1};
  const int len = kernels::layer_gradient_len(w);
  std::vector<double> partial(static_cast<std::size_t>(grid.x) * len, std::nan(""));
  with_act(act, [&](auto A) {
    with_w(w, [&](auto WC) {
      run_grid(grid, bd, kernels::layer_gradient_shared(w, threads), 0, reverse, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double* sh, double*) { kernels::layer_gradient_load(t, bd, w, K.data(), deriv, sh); });
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::layer_gradient_rows<decltype(A), decltype(WC)::value>(blk, t, bd, w, b, u.data(), lamn.data(),
                                                                          deriv, s, sh);
        });
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::layer_gradient_entries(blk, t, bd, w, u.data(), s, gscale, sh, partial.data());
        });
      });
    });
  });
  kernels::PartialTargets t;
  t.dst[0] = gK;
  t.end[0] = w * w;
  t.dst[1] = gb;
  t.end[1] = len;
  t.end[2] = len;
  harness_sum_partials(partial, grid.x, len, t);
}

double harness_classifier(int w, int nc, const std::vector<double>& Wc, const std::vector<double>& mu,
                          const std::vector<double>& U, const std::vector<std::int64_t>& y, int s, double scale,
                          std::int64_t* correct, double* lam, double* gW, double* gmu, int threads) {
  const bool grad = gW != nullptr;
  const Idx3 bd{threads, 1, 1}, grid{blocks_for(s, threads), 1, 1};
  const int len = kernels::classifier_len(w, nc, grad);
  std::vector<double> partial(static_cast<std::size_t>(grid.x) * len, std::nan(""));
  run_grid(grid, bd, kernels::classifier_shared(nc, threads), 0, false, [&](Idx3 blk, Block& B) {
    B.phase([&](Idx3 t, double* sh, double*) {
      kernels::classifier_rows(blk, t, bd, w, nc, Wc.data(), mu.data(), U.data(), y.data(), s, scale, lam, sh);
    });
    B.phase([&](Idx3 t, double* sh, double*) {
      kernels::classifier_entries(blk, t, bd, w, nc, U.data(), s, grad, sh, partial.data());
    });
  });
  double totals[2] = {0.0, 0.0};
  kernels::PartialTargets t;
  t.dst[0] = totals;
  t.end[0] = 2;
  t.dst[1] = gW;
  t.end[1] = grad ? 2 + nc * w : 2;
  t.dst[2] = gmu;
  t.end[2] = len;
  harness_sum_partials(partial, grid.x, len, t);
  if (correct) *correct = static_cast<std::int64_t>(totals[1]);
  return totals[0];
}

double harness_sumsq(const std::vector<double>& a, const double* b, int threads, int max_blocks) {
  const long long n = static_cast<long long>(a.size());
  const Idx3 bd{threads, 1, 1}, grid{std::min(blocks_for(n, threads), max_blocks), 1, 1};
  std::vector<double> partial(grid.x, std::nan(""));
  run_grid(grid, bd, threads, 0, false, [&](Idx3 blk, Block& B) {
    B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_load(blk, t, bd, grid, a.data(), b, n, sh); });
    for (int stride = bd.x / 2; stride > 0; stride /= 2)
      B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_tree(t, stride, sh); });
    B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_store(blk, t, sh, partial.data()); });
  });
  double total = 0.0;
  kernels::PartialTargets t;
  t.dst[0] = &total;
  t.end[0] = t.end[1] = t.end[2] = 1;
  harness_sum_partials(partial, grid.x, 1, t);
  return total;
}

// ------------------------------------------------------------------ intervals
// A level of `intervals` intervals over fine indices 0..N with coarsening m
// (the last one shorter when N % m != 0): interval c runs from index c m.
struct Level {
  std::vector<std::vector<int>> idx;  // fine indices per interval
};

Level make_level(int N, int m, int stride = 1) {
  Level L;
  for (int start = 0; start < N; start += m * stride) {
    std::vector<int> v;
    for (int i = start; i <= std::min(N, start + m * stride); i += stride) v.push_back(i);
    if (v.back() != std::min(N, start + m * stride)) v.push_back(std::min(N, start + m * stride));
    if (v.size() >= 2) L.idx.push_back(v);
  }
  return L;
}

// Builds IntervalSteps over host pointers: in[c] and out slots per interval.
struct HostIntervals {
  std::vector<int> step_start{0}, flat;
  std::vector<const double*> in;
  std::vector<double*> out;
  kernels::IntervalSteps view() const {
    kernels::IntervalSteps v;
    v.intervals = static_cast<int>(in.size());
    v.step_start = step_start.data();
    v.idx = flat.data();
    v.in = in.data();
    v.out = out.data();
    return v;
  }
};

HostIntervals host_intervals(const Level& L, const std::vector<const double*>& in,
                             const std::vector<std::vector<double*>>& outs) {
  HostIntervals h;
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    h.step_start.push_back(h.step_start.back() + static_cast<int>(L.idx[c].size()) - 1);
    h.flat.insert(h.flat.end(), L.idx[c].begin(), L.idx[c].end());
    h.out.insert(h.out.end(), outs[c].begin(), outs[c].end());
  }
  h.in = in;
  return h;
}

void harness_block_propagate(Activation act, const kernels::PropagateArgs& a, bool reverse = false) {
  const Idx3 bd{kernels::kStepThreads, 1, 1}, grid{blocks_for(a.s, bd.x), a.iv.intervals, 1};
  with_act(act, [&](auto A) {
    with_w(a.w, [&](auto WC) {
      run_grid(grid, bd, kernels::block_propagate_shared(a.w), kernels::kMaxWidth, reverse, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double* cur) {
          kernels::block_propagate_begin(blk, t, bd, a.w, a.s, a.iv, cur);
        });
        const int steps = kernels::block_propagate_steps(blk, a.iv);
        for (int k = 0; k < steps; ++k) {
          B.phase([&](Idx3 t, double* sh, double*) { kernels::block_propagate_load(k, blk, t, bd, a, sh); });
          B.phase([&](Idx3 t, double* sh, double* cur) {
            kernels::block_propagate_step<decltype(A), decltype(WC)::value>(k, blk, t, bd, a, sh, cur);
          });
        }
      });
    });
  });
}

void harness_block_adjoint(const kernels::AdjointPropagateArgs& a) {
  const Idx3 bd{kernels::kStepThreads, 1, 1}, grid{blocks_for(a.s, bd.x), a.iv.intervals, 1};
  with_w(a.w, [&](auto WC) {
    run_grid(grid, bd, kernels::block_adjoint_shared(a.w), kernels::kMaxWidth, false, [&](Idx3 blk, Block& B) {
      B.phase([&](Idx3 t, double*, double* cur) { kernels::block_propagate_begin(blk, t, bd, a.w, a.s, a.iv, cur); });
      const int steps = kernels::block_propagate_steps(blk, a.iv);
      for (int k = 0; k < steps; ++k) {
        B.phase([&](Idx3 t, double* sh, double*) { kernels::block_adjoint_load(k, blk, t, bd, a, sh); });
        B.phase([&](Idx3 t, double* sh, double* cur) {
          kernels::block_adjoint_step<decltype(WC)::value>(k, blk, t, bd, a, sh, cur);
        });
      }
    });
  });
}

// ------------------------------------------------------------------ tests

const auto kActs = ::testing::Values(Activation::Tanh, Activation::Relu, Activation::SmoothRelu);
// Widths: 1, runtime (5, 13), templated (8, 32); examples: one, a partial tile,
// an exact multiple of both block sizes, and several blocks with a partial last one.
const auto kWidths = ::testing::Values(1, 5, 8, 13, 32);
const auto kSizes = ::testing::Values(1, 77, 256, 333);

class KernelHarness : public ::testing::TestWithParam<std::tuple<Activation, int, int>> {};

TEST_P(KernelHarness, ForwardStepMatchesCpuBackend) {
  const auto [act, w, s] = GetParam();
  const auto K = random_vector(w * w, -0.6, 0.6, 1);
  const auto u = random_vector(s * w, -1, 1, 2);
  const double b = 0.07, dt = 0.3;
  std::vector<double> ref(u.size());
  dense_step(act, w, K.data(), b, dt, u.data(), ref.data(), s);
  EXPECT_TRUE(close(harness_step(act, w, K, b, dt, u, s), ref, kTol));
}

TEST_P(KernelHarness, AdjointStepMatchesCpuBackend) {
  const auto [act, w, s] = GetParam();
  const auto K = random_vector(w * w, -0.6, 0.6, 3);
  const auto u = random_vector(s * w, -1, 1, 4);
  const auto lamn = random_vector(s * w, -1, 1, 5);
  const double b = -0.05, dt = 0.2;
  std::vector<double> ref(u.size()), deriv(u.size());
  dense_adjoint_step(act, w, K.data(), b, dt, u.data(), lamn.data(), ref.data(), s);
  EXPECT_TRUE(close(harness_adjoint(act, w, K, b, dt, u, lamn, s, nullptr), ref, kTol));
  // The variant with the stored derivative (what MGRIT's adjoint uses).
  dense_activation_deriv(act, w, K.data(), b, u.data(), deriv.data(), s);
  std::vector<double> ref2(u.size());
  dense_adjoint_step(act, w, K.data(), b, dt, u.data(), lamn.data(), ref2.data(), s, deriv.data());
  EXPECT_TRUE(close(harness_adjoint(act, w, K, b, dt, u, lamn, s, deriv.data()), ref2, kTol));
}

TEST_P(KernelHarness, LayerGradientMatchesCpuBackend) {
  const auto [act, w, s] = GetParam();
  const auto K = random_vector(w * w, -0.6, 0.6, 6);
  const auto u = random_vector(s * w, -1, 1, 7);
  const auto lamn = random_vector(s * w, -1, 1, 8);
  const double b = 0.03, gs = 0.7;
  // Accumulates into nonzero gradients, as the sweeps do.
  std::vector<double> rgK(w * w, 0.5), gK(w * w, 0.5), gK2(w * w, 0.5);
  double rgb = -1.0, gb = -1.0, gb2 = -1.0;
  dense_layer_gradient(act, w, K.data(), b, u.data(), lamn.data(), s, rgK.data(), &rgb, gs);
  harness_layer_gradient(act, w, K, b, u, lamn, s, gK.data(), &gb, gs, nullptr, kernels::kReduceThreads);
  // Sums over examples run in another order than the CPU's chunks.
  EXPECT_TRUE(close(gK, rgK, 1e-12));
  EXPECT_NEAR(gb, rgb, 1e-12 * (1 + std::fabs(rgb)));
  // With the stored derivative, and an odd block size (partial tiles in both phases).
  std::vector<double> deriv(u.size());
  dense_activation_deriv(act, w, K.data(), b, u.data(), deriv.data(), s);
  harness_layer_gradient(act, w, K, b, u, lamn, s, gK2.data(), &gb2, gs, deriv.data(), 24);
  EXPECT_TRUE(close(gK2, rgK, 1e-12));
  EXPECT_NEAR(gb2, rgb, 1e-12 * (1 + std::fabs(rgb)));
}

INSTANTIATE_TEST_SUITE_P(Sizes, KernelHarness, ::testing::Combine(kActs, kWidths, kSizes));

// Intervals of a level: fine (step 1) and coarse (stride 3: injected weights,
// step size 3h), coarsening 4, the last interval shorter (N % m != 0).
class BlockPropagation : public ::testing::TestWithParam<std::tuple<Activation, int, int, int>> {};

TEST_P(BlockPropagation, ForwardMatchesChainedSteps) {
  const auto [act, w, s, stride] = GetParam();
  const int N = 23, m = 4;
  const double h = 5.0 / N;
  const auto K = random_vector(static_cast<std::size_t>(N) * w * w, -0.5, 0.5, 11);
  const auto bias = random_vector(N, -0.2, 0.2, 12);
  const Level L = make_level(N, m, stride);
  ASSERT_GE(L.idx.size(), 2u);
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  // One start state per interval (as MGRIT's C-points), one output per step.
  std::vector<std::vector<double>> starts, outs, refs;
  std::vector<const double*> in;
  std::vector<std::vector<double*>> out_ptrs;
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    starts.push_back(random_vector(sz, -1, 1, 100 + static_cast<unsigned>(c)));
    in.push_back(starts.back().data());
  }
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    out_ptrs.emplace_back();
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k) {
      outs.emplace_back(sz, -7.0);
      refs.emplace_back(sz, 0.0);
    }
  }
  std::size_t slot = 0;
  for (std::size_t c = 0; c < L.idx.size(); ++c)
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k) out_ptrs[c].push_back(outs[slot++].data());
  const HostIntervals hi = host_intervals(L, in, out_ptrs);
  kernels::PropagateArgs a;
  a.w = w;
  a.s = s;
  a.h = h;
  a.K = K.data();
  a.bias = bias.data();
  a.iv = hi.view();
  harness_block_propagate(act, a);

  // Reference: the CPU backend's dense_step chained through each interval.
  slot = 0;
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    const double* prev = starts[c].data();
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k, ++slot) {
      const int n0 = L.idx[c][k], n1 = L.idx[c][k + 1];
      dense_step(act, w, K.data() + static_cast<std::size_t>(n0) * w * w, bias[n0], (n1 - n0) * h, prev,
                 refs[slot].data(), s);
      prev = refs[slot].data();
    }
  }
  for (std::size_t k = 0; k < outs.size(); ++k) EXPECT_TRUE(close(outs[k], refs[k], kTol)) << "output " << k;

  // The threads of a phase are independent: the opposite thread order gives identical bits.
  std::vector<std::vector<double>> first = outs;
  harness_block_propagate(act, a, /*reverse=*/true);
  EXPECT_EQ(outs, first);
}

TEST_P(BlockPropagation, AdjointMatchesChainedSteps) {
  const auto [act, w, s, stride] = GetParam();
  const int N = 23, m = 4;
  const double h = 5.0 / N;
  const auto K = random_vector(static_cast<std::size_t>(N) * w * w, -0.5, 0.5, 21);
  const auto bias = random_vector(N, -0.2, 0.2, 22);
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  // Primal states u_n and their derivatives deriv_n = act'(K_n u_n + b_n), n = 0..N-1.
  std::vector<double> derivs(N * sz);
  for (int n = 0; n < N; ++n) {
    const auto u = random_vector(sz, -1, 1, 200 + n);
    dense_activation_deriv(act, w, K.data() + n * w * w, bias[n], u.data(), derivs.data() + n * sz, s);
  }
  const Level L = make_level(N, m, stride);  // in the reversed index k = N - n
  std::vector<std::vector<double>> starts, outs, refs;
  std::vector<const double*> in;
  std::vector<std::vector<double*>> out_ptrs(L.idx.size());
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    starts.push_back(random_vector(sz, -1, 1, 300 + static_cast<unsigned>(c)));
    in.push_back(starts.back().data());
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k) {
      outs.emplace_back(sz, -7.0);
      refs.emplace_back(sz, 0.0);
    }
  }
  std::size_t slot = 0;
  for (std::size_t c = 0; c < L.idx.size(); ++c)
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k) out_ptrs[c].push_back(outs[slot++].data());
  const HostIntervals hi = host_intervals(L, in, out_ptrs);
  kernels::AdjointPropagateArgs a;
  a.w = w;
  a.s = s;
  a.layers = N;
  a.h = h;
  a.K = K.data();
  a.deriv = derivs.data();
  a.iv = hi.view();
  harness_block_adjoint(a);

  slot = 0;
  for (std::size_t c = 0; c < L.idx.size(); ++c) {
    const double* prev = starts[c].data();
    for (std::size_t k = 0; k + 1 < L.idx[c].size(); ++k, ++slot) {
      const int n1 = N - L.idx[c][k], n0 = N - L.idx[c][k + 1];
      dense_adjoint_step(act, w, K.data() + static_cast<std::size_t>(n0) * w * w, bias[n0], (n1 - n0) * h, nullptr,
                         prev, refs[slot].data(), s, derivs.data() + n0 * sz);
      prev = refs[slot].data();
    }
  }
  for (std::size_t k = 0; k < outs.size(); ++k) EXPECT_TRUE(close(outs[k], refs[k], kTol)) << "output " << k;
}

INSTANTIATE_TEST_SUITE_P(Levels, BlockPropagation,
                         ::testing::Combine(kActs, ::testing::Values(1, 5, 8, 13, 32), ::testing::Values(1, 200),
                                            ::testing::Values(1, 3)));

TEST(KernelHarnessClassifier, MatchesCpuBackend) {
  for (auto [w, nc, s] : {std::tuple{7, 4, 517}, std::tuple{1, 2, 1}, std::tuple{13, 16, 130}, std::tuple{32, 10, 64}}) {
    const auto Wc = random_vector(nc * w, -1, 1, 31);
    const auto mu = random_vector(nc, -1, 1, 32);
    const auto U = random_vector(static_cast<std::size_t>(s) * w, -2, 2, 33);
    std::vector<std::int64_t> y(s);
    for (int i = 0; i < s; ++i) y[i] = (i * 7) % nc;
    const double scale = 1.0 / s;
    std::vector<double> rlam(s * w), rgW(nc * w, 0.25), rgmu(nc, -0.5);
    std::int64_t rcorrect = -1;
    const double rloss = classifier_loss(w, nc, Wc.data(), mu.data(), U.data(), y.data(), s, scale, &rcorrect,
                                         rlam.data(), rgW.data(), rgmu.data());
    for (int threads : {kernels::kReduceThreads, 19}) {
      std::vector<double> lam(s * w, -7.0), gW(nc * w, 0.25), gmu(nc, -0.5);
      std::int64_t correct = -1;
      const double loss = harness_classifier(w, nc, Wc, mu, U, y, s, scale, &correct, lam.data(), gW.data(),
                                             gmu.data(), threads);
      EXPECT_NEAR(loss, rloss, 1e-12 * (1 + std::fabs(rloss))) << w << " " << nc << " " << s;
      EXPECT_EQ(correct, rcorrect);
      EXPECT_TRUE(close(lam, rlam, kTol));
      EXPECT_TRUE(close(gW, rgW, 1e-12));
      EXPECT_TRUE(close(gmu, rgmu, 1e-12));
      // Loss and accuracy only (no gradient buffers).
      std::int64_t c2 = -1;
      const double l2 = harness_classifier(w, nc, Wc, mu, U, y, s, scale, &c2, nullptr, nullptr, nullptr, threads);
      EXPECT_EQ(l2, loss);
      EXPECT_EQ(c2, correct);
    }
  }
}

TEST(KernelHarnessNorm, SumOfSquaresMatchesPlainLoop) {
  for (std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{4099}, std::size_t{100003}}) {
    const auto a = random_vector(n, -1, 1, 41);
    const auto b = random_vector(n, -1, 1, 42);
    double rdiff = 0.0, rnorm = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      rdiff += (a[k] - b[k]) * (a[k] - b[k]);
      rnorm += a[k] * a[k];
    }
    // Block sizes as on the device (256) and a small one; a cap on the blocks forces the grid-stride loop.
    for (auto [threads, max_blocks] : {std::pair{256, kernels::kNormMaxBlocks}, std::pair{32, 7}}) {
      EXPECT_NEAR(harness_sumsq(a, b.data(), threads, max_blocks), rdiff, 1e-13 * rdiff) << n;
      EXPECT_NEAR(harness_sumsq(a, nullptr, threads, max_blocks), rnorm, 1e-13 * rnorm) << n;
    }
  }
}

// ------------------------------------------------------------------ the tests can fail

TEST(KernelHarnessSensitivity, PerturbedInputsChangeTheResults) {
  const int w = 5, s = 77;
  auto K = random_vector(w * w, -0.6, 0.6, 1);
  const auto u = random_vector(s * w, -1, 1, 2);
  const auto lamn = random_vector(s * w, -1, 1, 3);
  std::vector<double> ref(u.size());
  dense_step(Activation::Tanh, w, K.data(), 0.1, 0.3, u.data(), ref.data(), s);
  ASSERT_TRUE(close(harness_step(Activation::Tanh, w, K, 0.1, 0.3, u, s), ref, kTol));
  // One weight changed by far less than a percent is caught.
  K[w + 2] += 1e-6;
  EXPECT_FALSE(close(harness_step(Activation::Tanh, w, K, 0.1, 0.3, u, s), ref, kTol));
  // A different bias or step size too.
  K[w + 2] -= 1e-6;
  EXPECT_FALSE(close(harness_step(Activation::Tanh, w, K, 0.1 + 1e-9, 0.3, u, s), ref, kTol));
  EXPECT_FALSE(close(harness_step(Activation::Tanh, w, K, 0.1, 0.3 * (1 + 1e-9), u, s), ref, kTol));

  // The gradient sees one example's adjoint changed (the last one: a partial tile's row).
  std::vector<double> rgK(w * w, 0.0), gK(w * w, 0.0);
  double rgb = 0.0, gb = 0.0;
  dense_layer_gradient(Activation::Tanh, w, K.data(), 0.1, u.data(), lamn.data(), s, rgK.data(), &rgb, 0.5);
  auto lam2 = lamn;
  lam2[(s - 1) * w + 1] += 1e-6;
  harness_layer_gradient(Activation::Tanh, w, K, 0.1, u, lam2, s, gK.data(), &gb, 0.5, nullptr,
                         kernels::kReduceThreads);
  EXPECT_FALSE(close(gK, rgK, 1e-12));
}

TEST(KernelHarnessSensitivity, ThreadOrderDoesNotChangeResults) {
  // A body that read another thread's output within a phase would depend on
  // the order; the harness runs both orders and the bits must agree.
  const int w = 13, s = 333;
  const auto K = random_vector(w * w, -0.6, 0.6, 4);
  const auto u = random_vector(s * w, -1, 1, 5);
  const auto lamn = random_vector(s * w, -1, 1, 6);
  EXPECT_EQ(harness_step(Activation::SmoothRelu, w, K, 0.1, 0.3, u, s),
            harness_step(Activation::SmoothRelu, w, K, 0.1, 0.3, u, s, /*reverse=*/true));
  std::vector<double> g1(w * w, 0.0), g2(w * w, 0.0);
  double b1 = 0.0, b2 = 0.0;
  harness_layer_gradient(Activation::Tanh, w, K, 0.1, u, lamn, s, g1.data(), &b1, 0.5, nullptr, 64);
  harness_layer_gradient(Activation::Tanh, w, K, 0.1, u, lamn, s, g2.data(), &b2, 0.5, nullptr, 64, true);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(b1, b2);
}

// ------------------------------------------------------------------ the real kernels (need a device)

class CudaDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status();
  }
};

TEST_F(CudaDevice, KernelsMatchCpuBackend) {
  for (int w : {1, 5, 8, 13, 32}) {
    const int s = 333;
    const auto K = random_vector(w * w, -0.6, 0.6, 1);
    const auto u = random_vector(s * w, -1, 1, 2);
    const auto lamn = random_vector(s * w, -1, 1, 3);
    std::vector<double> ref(u.size()), rlam(u.size()), rgK(w * w, 0.0);
    double rgb = 0.0;
    dense_step(Activation::Tanh, w, K.data(), 0.1, 0.3, u.data(), ref.data(), s);
    dense_adjoint_step(Activation::Tanh, w, K.data(), 0.1, 0.3, u.data(), lamn.data(), rlam.data(), s);
    dense_layer_gradient(Activation::Tanh, w, K.data(), 0.1, u.data(), lamn.data(), s, rgK.data(), &rgb, 0.5);
    DeviceBuffer<double> dK(K), du(u), dl(lamn), dout(u.size()), dgK(w * w), dgb(1);
    dgK.zero();
    dgb.zero();
    cuda_dense_step(Activation::Tanh, w, dK.data(), 0.1, 0.3, du.data(), dout.data(), s);
    EXPECT_TRUE(close(dout.to_host(), ref, kTol)) << w;
    cuda_dense_adjoint_step(Activation::Tanh, w, dK.data(), 0.1, 0.3, du.data(), dl.data(), dout.data(), s);
    EXPECT_TRUE(close(dout.to_host(), rlam, kTol)) << w;
    cuda_layer_gradient(Activation::Tanh, w, dK.data(), 0.1, du.data(), dl.data(), s, dgK.data(), dgb.data(), 0.5);
    EXPECT_TRUE(close(dgK.to_host(), rgK, 1e-12)) << w;
    EXPECT_NEAR(dgb.to_host()[0], rgb, 1e-12 * (1 + std::fabs(rgb)));
    double rn = 0.0;
    for (std::size_t k = 0; k < u.size(); ++k) rn += (u[k] - lamn[k]) * (u[k] - lamn[k]);
    EXPECT_NEAR(cuda_residual_norm(du.data(), dl.data(), u.size()), std::sqrt(rn), 1e-13 * std::sqrt(rn));
  }
}

TEST(CudaHostApi, StatusExplainsAvailability) {
  const std::string status = cuda_status();
  EXPECT_FALSE(status.empty());
  if (!cuda_built()) {
    EXPECT_EQ(status, "layerparallel was built without CUDA");
    EXPECT_FALSE(cuda_available());
    // Every entry point exists and says why it cannot run.
    try {
      cuda_residual_norm(nullptr, nullptr, 1);
      FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
    }
    EXPECT_THROW(DeviceBuffer<double>(4), std::runtime_error);
  } else if (!cuda_available()) {
    EXPECT_THROW(DeviceBuffer<double>(4), std::runtime_error);
    EXPECT_THROW(cuda_residual_norm(nullptr, nullptr, 1), std::runtime_error);
  }
}

}  // namespace
