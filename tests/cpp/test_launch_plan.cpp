// The launch plans (launch_plan.h) that CudaBackend and EmulatedBackend share:
// batches past CUDA's grid.y limit split into launches with the right offsets,
// each launch's arguments advanced to its first row, launches CUDA would refuse
// refused (by the plans and by the emulator); and every batched backend
// operation run on more than 65535 chains, layers or entries in one call,
// each result checked against a plain CPU loop. The CudaBackend case repeats
// the large batches on a GPU and skips without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/grid_emulator.h"
#include "layerparallel/launch_plan.h"
#include "harness.h"
#include "reference.h"

using namespace layerparallel;
using namespace lptest;
using kernels::Idx3;
using kernels::Launch;
using kernels::LaunchPlan;

namespace {

constexpr int kRows = kernels::kMaxGridRows;
constexpr double kTol = 1e-13;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------ the split

TEST(LaunchPlan, SplitsBatchRowsIntoLaunchesCudaAccepts) {
  struct Case {
    int rows, launches;
  };
  for (const Case c : {Case{0, 0}, Case{1, 1}, Case{kRows - 1, 1}, Case{kRows, 1}, Case{kRows + 1, 2},
                       Case{2 * kRows, 2}, Case{2 * kRows + 1, 3}, Case{200000, 4}}) {
    SCOPED_TRACE("rows " + std::to_string(c.rows));
    const LaunchPlan p = kernels::plan_block_propagate(8, 300, c.rows);
    ASSERT_EQ(p.launches(), c.launches);
    int next = 0;
    p.each([&](const Launch& l) {
      EXPECT_EQ(l.row0, next);  // contiguous, in row order
      EXPECT_GE(l.grid.y, 1);
      EXPECT_LE(l.grid.y, kRows);
      EXPECT_EQ(l.grid.x, 3);  // 300 examples over blocks of kStepThreads
      EXPECT_EQ(l.grid.z, 1);
      EXPECT_EQ(l.block.x, kernels::kStepThreads);
      EXPECT_EQ(l.shared_doubles, kernels::block_propagate_shared(8));
      next += l.grid.y;
    });
    EXPECT_EQ(next, c.rows);  // every row once
  }
  // Full launches first, the remainder last.
  const LaunchPlan p = kernels::plan_layer_derivs(5, 1, 200000);
  std::vector<int> row0, rows;
  p.each([&](const Launch& l) {
    row0.push_back(l.row0);
    rows.push_back(l.grid.y);
  });
  EXPECT_EQ(row0, (std::vector<int>{0, kRows, 2 * kRows, 3 * kRows}));
  EXPECT_EQ(rows, (std::vector<int>{kRows, kRows, kRows, 200000 - 3 * kRows}));
  // Unbatched kernels are one launch; a batched GEMM is split the same way.
  EXPECT_EQ(kernels::plan_layer_gradient(32, 100000).launches(), 1);
  EXPECT_EQ(kernels::gemm_calls(kRows), 1);
  EXPECT_EQ(kernels::gemm_calls(kRows + 1), 2);
  EXPECT_EQ(kernels::row_range(kRows + 1, 1).row0, kRows);
  EXPECT_EQ(kernels::row_range(kRows + 1, 1).rows, 1);
}

TEST(LaunchPlan, ForLaunchAdvancesEveryRowArray) {
  // Six intervals of 1..3 steps; a launch of intervals 2..4.
  const std::vector<int> counts{2, 1, 3, 1, 2, 3};
  std::vector<int> step_start{0}, idx;
  std::vector<double> states(64);
  std::vector<const double*> in, rhs;
  std::vector<double*> out;
  for (std::size_t c = 0; c < counts.size(); ++c) {
    step_start.push_back(step_start.back() + counts[c]);
    for (int k = 0; k <= counts[c]; ++k) idx.push_back(10 * static_cast<int>(c) + k);
    in.push_back(&states[c]);
    for (int k = 0; k < counts[c]; ++k) {
      out.push_back(&states[16 + out.size()]);
      rhs.push_back(k == 1 ? &states[40 + rhs.size()] : nullptr);
    }
  }
  kernels::IntervalSteps iv;
  iv.intervals = static_cast<int>(counts.size());
  iv.step_start = step_start.data();
  iv.idx = idx.data();
  iv.in = in.data();
  iv.out = out.data();
  iv.rhs = rhs.data();
  Launch l;
  l.grid = Idx3{1, 3, 1};
  l.row0 = 2;
  const kernels::IntervalSteps v = kernels::for_launch(iv, l);
  EXPECT_EQ(v.intervals, 3);
  for (int c = 0; c < 3; ++c) {
    ASSERT_EQ(v.count(c), iv.count(2 + c)) << c;
    EXPECT_EQ(v.in[c], iv.in[2 + c]) << c;
    for (int k = 0; k <= v.count(c); ++k) EXPECT_EQ(v.index(c, k), iv.index(2 + c, k)) << c << " " << k;
    for (int k = 0; k < v.count(c); ++k) {
      EXPECT_EQ(v.output(c, k), iv.output(2 + c, k)) << c << " " << k;
      EXPECT_EQ(v.rhs_of(c, k), iv.rhs_of(2 + c, k)) << c << " " << k;
    }
  }
  // Layer derivatives: layer first + row0 + j, its state u[row0 + j], its block of deriv.
  std::vector<const double*> u(8, nullptr);
  kernels::LayerDerivArgs d;
  d.w = 3;
  d.s = 5;
  d.first = 4;
  d.u = u.data();
  d.deriv = states.data();
  const kernels::LayerDerivArgs dl = kernels::for_launch(d, l);
  EXPECT_EQ(dl.first, 6);
  EXPECT_EQ(dl.u, u.data() + 2);
  EXPECT_EQ(dl.deriv, states.data() + 2 * 5 * 3);
  // Epilogue and batched state arguments: every array advances, absent ones stay null.
  std::vector<double*> z(8);
  std::vector<double> dt(8);
  kernels::WideArgs wa;
  wa.a = in.data();
  wa.z = z.data();
  wa.dt = dt.data();
  const kernels::WideArgs wl = kernels::for_launch(wa, l);
  EXPECT_EQ(wl.a, in.data() + 2);
  EXPECT_EQ(wl.z, z.data() + 2);
  EXPECT_EQ(wl.dt, dt.data() + 2);
  EXPECT_EQ(wl.b, nullptr);
  EXPECT_EQ(wl.out, nullptr);
  EXPECT_EQ(wl.rhs, nullptr);
  EXPECT_EQ(wl.bias, nullptr);
  kernels::ElementBatchArgs e;
  e.dst = z.data();
  e.a = in.data();
  e.b = rhs.data();
  const kernels::ElementBatchArgs el = kernels::for_launch(e, l);
  EXPECT_EQ(el.dst, z.data() + 2);
  EXPECT_EQ(el.a, in.data() + 2);
  EXPECT_EQ(el.b, rhs.data() + 2);
  l.grid.x = 7;
  EXPECT_EQ(kernels::partial_rows_for_launch(states.data(), l), states.data() + 2 * 7);
}

TEST(LaunchPlan, RefusesLaunchesCudaRefuses) {
  // The widest narrow layer and the most classes fit the shared memory of a launch.
  EXPECT_NO_THROW(kernels::plan_layer_gradient(kernels::kMaxWidth, 10));
  EXPECT_NO_THROW(kernels::plan_classifier(kernels::kMaxClasses, 10));
  EXPECT_NO_THROW(kernels::plan_opening_gradient(kernels::kMaxWidth, 10));
  // More shared memory than a launch takes, and more threads than the body's int index holds.
  EXPECT_THROW(kernels::plan_opening_gradient(200, 10), std::invalid_argument);
  ConvShape sh;
  sh.C = 64;
  EXPECT_THROW(kernels::plan_conv_step(sh, 40000000), std::invalid_argument);
  // The emulator refuses what CUDA refuses: a grid.y past the limit, an empty grid, too big a block.
  auto run = [](Idx3 grid, Idx3 block, int shared) {
    emu::run_grid(grid, block, shared, 0, false, [](Idx3, emu::Block&) {});
  };
  EXPECT_NO_THROW(run(Idx3{1, kRows, 1}, Idx3{32, 1, 1}, 0));
  EXPECT_THROW(run(Idx3{1, kRows + 1, 1}, Idx3{32, 1, 1}, 0), std::runtime_error);
  EXPECT_THROW(run(Idx3{0, 1, 1}, Idx3{32, 1, 1}, 0), std::runtime_error);
  EXPECT_THROW(run(Idx3{1, 1, 1}, Idx3{1025, 1, 1}, 0), std::runtime_error);
  EXPECT_THROW(run(Idx3{1, 1, 1}, Idx3{32, 1, 1}, kernels::kMaxSharedBytes / 8 + 1), std::runtime_error);
}

// ------------------------------------------------------------------ large batches on a backend
// One example, width 3 (a runtime width), one step per chain: small and fast,
// yet every chain, layer or entry past row 65535 must land in its own output.

constexpr int kW = 3;
constexpr int kLayers = 7;
const double kH = 0.2;

std::vector<double> fetch(const DeviceBackend& dev, const StateBuffer& b) {
  std::vector<double> h(b.size());
  dev.download(h.data(), b.data(), h.size());
  return h;
}

StateBuffer put(DeviceBackend& dev, const std::vector<double>& h) {
  StateBuffer b(dev, h.size());
  dev.upload(b.data(), h.data(), h.size());
  return b;
}

// out = in + dt act(K in + b) for one example (plain loops).
void ref_step(Activation act, const double* K, double b, double dt, const double* in, double* out) {
  for (int r = 0; r < kW; ++r) {
    double z = b;
    for (int c = 0; c < kW; ++c) z += K[r * kW + c] * in[c];
    out[r] = in[r] + dt * ref_act(act, z);
  }
}

// Chain q steps from fine index n0 = q % 5 by one or two layers; every third adds a right-hand side.
void check_block_propagate(DeviceBackend& dev, int n) {
  const Activation act = Activation::Tanh;
  const auto K = random_vector(kLayers * kW * kW, -0.6, 0.6, 1), bias = random_vector(kLayers, -0.2, 0.2, 2);
  const auto in = random_vector(static_cast<std::size_t>(n) * kW, -1, 1, 3);
  const auto g = random_vector(static_cast<std::size_t>(n) * kW, -1, 1, 4);
  StateBuffer dK = put(dev, K), dbias = put(dev, bias), din = put(dev, in), dg = put(dev, g);
  StateBuffer dout = put(dev, std::vector<double>(in.size(), kNaN));  // a chain never run stays NaN
  std::vector<int> idx(2 * static_cast<std::size_t>(n));
  std::vector<double*> outs(n);
  std::vector<const double*> rhs(n);
  std::vector<Propagator::Chain> chains(n);
  for (int q = 0; q < n; ++q) {
    idx[2 * q] = q % 5;
    idx[2 * q + 1] = q % 5 + 1 + q % 2;
    outs[q] = dout.data() + static_cast<std::size_t>(q) * kW;
    rhs[q] = dg.data() + static_cast<std::size_t>(q) * kW;
    chains[q] = {&idx[2 * q], 1, din.data() + static_cast<std::size_t>(q) * kW, &outs[q],
                 q % 3 == 0 ? &rhs[q] : nullptr};
  }
  dev.block_propagate(act, kW, 1, kH, dK.data(), dbias.data(), chains.data(), n);
  const std::vector<double> got = fetch(dev, dout);
  std::vector<double> want(got.size());
  for (int q = 0; q < n; ++q) {
    const int n0 = idx[2 * q], n1 = idx[2 * q + 1];
    double* o = &want[static_cast<std::size_t>(q) * kW];
    ref_step(act, &K[n0 * kW * kW], bias[n0], (n1 - n0) * kH, &in[static_cast<std::size_t>(q) * kW], o);
    if (q % 3 == 0)
      for (int r = 0; r < kW; ++r) o[r] += g[static_cast<std::size_t>(q) * kW + r];
  }
  EXPECT_TRUE(close(got, want, kTol));
}

// The adjoint in reversed index k: chain q maps lambda_{n1} to lambda_{n0} = lambda_{n1}
// + dt K_{n0}^T (deriv_{n0} * lambda_{n1}), n0 = layers - k1, deriv of layer n at (n - first).
void check_block_adjoint(DeviceBackend& dev, int n) {
  const int first = 1;
  const auto K = random_vector(kLayers * kW * kW, -0.6, 0.6, 5);
  const auto deriv = random_vector((kLayers - first) * kW, 0.1, 1.0, 6);
  const auto in = random_vector(static_cast<std::size_t>(n) * kW, -1, 1, 7);
  StateBuffer dK = put(dev, K), dd = put(dev, deriv), din = put(dev, in);
  StateBuffer dout = put(dev, std::vector<double>(in.size(), kNaN));
  std::vector<int> idx(2 * static_cast<std::size_t>(n));
  std::vector<double*> outs(n);
  std::vector<Propagator::Chain> chains(n);
  for (int q = 0; q < n; ++q) {
    idx[2 * q] = q % 4;  // n1 = layers - k0 <= 7, n0 = layers - k1 >= 1 = first
    idx[2 * q + 1] = q % 4 + 1 + q % 3;
    outs[q] = dout.data() + static_cast<std::size_t>(q) * kW;
    chains[q] = {&idx[2 * q], 1, din.data() + static_cast<std::size_t>(q) * kW, &outs[q], nullptr};
  }
  dev.block_adjoint(kW, 1, kLayers, kH, dK.data(), dd.data(), first, chains.data(), n);
  const std::vector<double> got = fetch(dev, dout);
  std::vector<double> want(got.size());
  for (int q = 0; q < n; ++q) {
    const int n1 = kLayers - idx[2 * q], n0 = kLayers - idx[2 * q + 1];
    const double* l = &in[static_cast<std::size_t>(q) * kW];
    const double* d = &deriv[static_cast<std::size_t>(n0 - first) * kW];
    for (int c = 0; c < kW; ++c) {
      double acc = 0.0;
      for (int r = 0; r < kW; ++r) acc += K[n0 * kW * kW + r * kW + c] * (d[r] * l[r]);
      want[static_cast<std::size_t>(q) * kW + c] = l[c] + (n1 - n0) * kH * acc;
    }
  }
  EXPECT_TRUE(close(got, want, kTol));
}

// deriv_j = act'(K_n u_j + b_n) for layers n = first + j.
void check_layer_derivs(DeviceBackend& dev, int count) {
  const Activation act = Activation::SmoothRelu;
  const int first = 3, layers = first + count;
  const auto K = random_vector(static_cast<std::size_t>(layers) * kW * kW, -0.6, 0.6, 8);
  const auto bias = random_vector(layers, -0.2, 0.2, 9);
  const auto u = random_vector(static_cast<std::size_t>(count) * kW, -1, 1, 10);
  StateBuffer dK = put(dev, K), dbias = put(dev, bias), du = put(dev, u);
  StateBuffer dderiv = put(dev, std::vector<double>(u.size(), kNaN));
  std::vector<const double*> up(count);
  for (int j = 0; j < count; ++j) up[j] = du.data() + static_cast<std::size_t>(j) * kW;
  dev.layer_derivs(act, kW, 1, dK.data(), dbias.data(), first, count, up.data(), dderiv.data());
  const std::vector<double> got = fetch(dev, dderiv);
  std::vector<double> want(got.size());
  for (int j = 0; j < count; ++j)
    for (int r = 0; r < kW; ++r) {
      const std::size_t n = first + j;
      double z = bias[n];
      for (int c = 0; c < kW; ++c) z += K[n * kW * kW + r * kW + c] * u[static_cast<std::size_t>(j) * kW + c];
      want[static_cast<std::size_t>(j) * kW + r] = ref_dact(act, z);
    }
  EXPECT_TRUE(close(got, want, kTol));
}

// The wide forward epilogue out = a + dt act(z + bias) (+ rhs) over `count` entries.
void check_wide_epilogue(DeviceBackend& dev, int count) {
  const std::size_t n = static_cast<std::size_t>(count) * kW;
  const auto a = random_vector(n, -1, 1, 11), z = random_vector(n, -1, 1, 12), g = random_vector(n, -1, 1, 13);
  const auto bias = random_vector(count, -0.2, 0.2, 14);
  StateBuffer da = put(dev, a), dz = put(dev, z), dg = put(dev, g), db = put(dev, bias);
  StateBuffer dout = put(dev, std::vector<double>(n, kNaN));
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Step;
  for (int q = 0; q < count; ++q) {
    const std::size_t o = static_cast<std::size_t>(q) * kW;
    e.a.push_back(da.data() + o);
    e.z.push_back(dz.data() + o);
    e.out.push_back(dout.data() + o);
    e.rhs.push_back(q % 2 ? dg.data() + o : nullptr);
    e.dt.push_back(0.1 + 0.001 * (q % 7));
    e.bias.push_back(db.data() + q);
  }
  dev.wide_epilogue(Activation::Tanh, kW, 1, e);
  const std::vector<double> got = fetch(dev, dout);
  std::vector<double> want(n);
  for (int q = 0; q < count; ++q)
    for (int r = 0; r < kW; ++r) {
      const std::size_t k = static_cast<std::size_t>(q) * kW + r;
      want[k] = a[k] + e.dt[q] * std::tanh(z[k] + bias[q]) + (q % 2 ? g[k] : 0.0);
    }
  EXPECT_TRUE(close(got, want, kTol));
}

// sum_batch, fas_batch and sum_sq_diff_batch over `count` states of kW entries.
void check_state_batches(DeviceBackend& dev, int count) {
  const std::size_t n = static_cast<std::size_t>(count) * kW;
  const auto a = random_vector(n, -1, 1, 15), b = random_vector(n, -1, 1, 16);
  StateBuffer da = put(dev, a), db = put(dev, b), dc = put(dev, std::vector<double>(n, kNaN));
  std::vector<double*> dst(count);
  std::vector<const double*> pa(count), pb(count);
  for (int q = 0; q < count; ++q) {
    const std::size_t o = static_cast<std::size_t>(q) * kW;
    dst[q] = dc.data() + o;
    pa[q] = da.data() + o;
    pb[q] = q % 2 ? db.data() + o : nullptr;  // null: a copy of a
  }
  dev.sum_batch(dst.data(), pa.data(), pb.data(), count, kW);
  std::vector<double> want(n);
  for (std::size_t k = 0; k < n; ++k) want[k] = (k / kW) % 2 ? a[k] + b[k] : a[k];
  EXPECT_EQ(fetch(dev, dc), want);
  for (int q = 0; q < count; ++q) pb[q] = db.data() + static_cast<std::size_t>(q) * kW;
  dev.fas_batch(dst.data(), pa.data(), pb.data(), count, kW);  // c = a + b - c
  for (std::size_t k = 0; k < n; ++k) want[k] = a[k] + b[k] - want[k];
  EXPECT_EQ(fetch(dev, dc), want);
  std::vector<double> norms(count, kNaN);
  dev.sum_sq_diff_batch(pa.data(), pb.data(), count, kW, norms.data());
  for (int q = 0; q < count; ++q) {
    double acc = 0.0;
    for (int r = 0; r < kW; ++r) {
      const std::size_t k = static_cast<std::size_t>(q) * kW + r;
      acc += (a[k] - b[k]) * (a[k] - b[k]);
    }
    ASSERT_NEAR(norms[q], acc, kTol * acc) << "entry " << q;
  }
}

// C_q = alpha A_q B_q + beta C_q with 2x2 matrices.
void check_gemm_batched(DeviceBackend& dev, int batch) {
  const std::size_t n = static_cast<std::size_t>(batch) * 4;
  const auto A = random_vector(n, -1, 1, 17), B = random_vector(n, -1, 1, 18), C = random_vector(n, -1, 1, 19);
  StateBuffer dA = put(dev, A), dB = put(dev, B), dC = put(dev, C);
  std::vector<const double*> pa(batch), pb(batch);
  std::vector<double*> pc(batch);
  for (int q = 0; q < batch; ++q) {
    pa[q] = dA.data() + 4 * static_cast<std::size_t>(q);
    pb[q] = dB.data() + 4 * static_cast<std::size_t>(q);
    pc[q] = dC.data() + 4 * static_cast<std::size_t>(q);
  }
  dev.gemm_batched(false, false, 2, 2, 2, 0.5, pa.data(), 2, pb.data(), 2, 1.0, pc.data(), 2, batch);
  const std::vector<double> got = fetch(dev, dC);
  std::vector<double> want(n);
  for (int q = 0; q < batch; ++q)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const std::size_t o = 4 * static_cast<std::size_t>(q);
        const double x = A[o + i] * B[o + 2 * j] + A[o + 2 + i] * B[o + 2 * j + 1];  // column-major
        want[o + i + 2 * j] = 0.5 * x + C[o + i + 2 * j];
      }
  EXPECT_TRUE(close(got, want, kTol));
}

// Past one launch: the remainder of a second launch, and a third launch for the chains.
constexpr int kMany = kRows + 1234;

TEST(EmulatorLargeBatch, BlockPropagateRunsEveryChain) {
  auto dev = make_emulated_backend();
  check_block_propagate(*dev, 2 * kRows + 3);
}

TEST(EmulatorLargeBatch, BlockAdjointRunsEveryChain) {
  auto dev = make_emulated_backend();
  check_block_adjoint(*dev, kMany);
}

TEST(EmulatorLargeBatch, LayerDerivsRunEveryLayer) {
  auto dev = make_emulated_backend();
  check_layer_derivs(*dev, kMany);
}

TEST(EmulatorLargeBatch, WideEpilogueRunsEveryEntry) {
  auto dev = make_emulated_backend();
  check_wide_epilogue(*dev, kMany);
}

TEST(EmulatorLargeBatch, StateBatchesRunEveryEntry) {
  auto dev = make_emulated_backend();
  check_state_batches(*dev, kMany);
}

TEST(EmulatorLargeBatch, GemmBatchedRunsEveryEntry) {
  auto dev = make_emulated_backend();
  check_gemm_batched(*dev, kMany);
}

TEST(CudaLargeBatch, EveryBatchedOperationRunsEveryRow) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status();
  auto dev = make_cuda_backend();
  check_block_propagate(*dev, 2 * kRows + 3);
  check_block_adjoint(*dev, kMany);
  check_layer_derivs(*dev, kMany);
  check_wide_epilogue(*dev, kMany);
  check_state_batches(*dev, kMany);
  check_gemm_batched(*dev, kMany);  // needs cuBLAS
}

}  // namespace
