// GPU timings of the dense-layer CUDA kernels (Google Benchmark). Each benchmark
// reports the bytes and flops of benchmarks/cuda/README.md as rates, so a run on
// a GPU can be read against the device's memory bandwidth and FP64 peak. On a
// machine without a usable device (or a CPU-only build) every benchmark is
// skipped with the reason from cuda_status(): nothing is timed, no figure is made.
//
//   cmake -S . -B build/bench -DLP_BENCHMARKS=ON -DLP_PYTHON=OFF -DLP_CUDA=ON
//   cmake --build build/bench -j && build/bench/lp_bench_cuda
#include <benchmark/benchmark.h>

#include <vector>

#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/device_solver.h"
#include "../bench_util.h"

using namespace layerparallel;

namespace {

std::vector<double> random(std::size_t n, unsigned seed, double scale = 0.5) {
  return lpbench::random_vector(n, scale, seed);
}

bool skip_without_device(benchmark::State& state) {
  if (cuda_available()) return false;
  state.SkipWithError(cuda_status().c_str());
  return true;
}

// Sets the rates that the README's cost model compares with the roofline.
void rates(benchmark::State& state, double bytes, double flops) {
  state.counters["bytes_per_s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flops_per_s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

// Arguments: width w, examples s.
void BM_DenseStep(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), s = static_cast<int>(state.range(1));
  DeviceBuffer<double> K(random(static_cast<std::size_t>(w) * w, 1)), in(random(static_cast<std::size_t>(s) * w, 2)),
      out(static_cast<std::size_t>(s) * w);
  for (auto _ : state) {
    cuda_dense_step(Activation::Tanh, w, K.data(), 0.1, 0.05, in.data(), out.data(), s);
    cuda_synchronize();
  }
  rates(state, 16.0 * s * w + 8.0 * w * w, s * (2.0 * w * w + 2.0 * w));
}

// Arguments: width w, examples s, intervals C, steps per interval m.
void BM_BlockPropagate(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), s = static_cast<int>(state.range(1));
  const int C = static_cast<int>(state.range(2)), m = static_cast<int>(state.range(3));
  const int layers = C * m;
  const std::size_t sw = static_cast<std::size_t>(s) * w;
  DeviceBuffer<double> K(random(static_cast<std::size_t>(layers) * w * w, 3)), bias(random(layers, 4));
  DeviceBuffer<double> starts(random(sw * C, 5)), states(sw * layers);
  std::vector<std::vector<int>> idx(C);
  std::vector<const double*> in(C);
  std::vector<std::vector<double*>> outs(C);
  for (int c = 0; c < C; ++c) {
    for (int k = 0; k <= m; ++k) idx[c].push_back(c * m + k);
    in[c] = starts.data() + sw * c;
    for (int k = 0; k < m; ++k) outs[c].push_back(states.data() + sw * (c * m + k));
  }
  for (auto _ : state) {
    cuda_block_propagate(Activation::Tanh, w, s, 0.05, K.data(), bias.data(), idx, in, outs);
    cuda_synchronize();
  }
  const double M = layers;
  rates(state, 8.0 * s * w * (C + M) + 8.0 * M * (w * w + 1.0), M * s * (2.0 * w * w + 2.0 * w));
}

// Arguments: width w, examples s, stored derivative (0/1).
void BM_AdjointStep(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), s = static_cast<int>(state.range(1));
  const bool stored = state.range(2) != 0;
  const std::size_t sw = static_cast<std::size_t>(s) * w;
  DeviceBuffer<double> K(random(static_cast<std::size_t>(w) * w, 6)), u(random(sw, 7)), lam_next(random(sw, 8)),
      deriv(random(sw, 9)), lam(sw);
  for (auto _ : state) {
    cuda_dense_adjoint_step(Activation::Tanh, w, K.data(), 0.1, 0.05, u.data(), lam_next.data(), lam.data(), s,
                            stored ? deriv.data() : nullptr);
    cuda_synchronize();
  }
  rates(state, 24.0 * s * w + 8.0 * w * w,
        stored ? s * (2.0 * w * w + 3.0 * w) : s * (4.0 * w * w + 4.0 * w));
}

// Arguments: width w, examples s.
void BM_LayerGradient(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), s = static_cast<int>(state.range(1));
  const std::size_t sw = static_cast<std::size_t>(s) * w;
  DeviceBuffer<double> K(random(static_cast<std::size_t>(w) * w, 10)), u(random(sw, 11)), lam_next(random(sw, 12)),
      gK(static_cast<std::size_t>(w) * w), gb(1);
  for (auto _ : state) {
    cuda_layer_gradient(Activation::Tanh, w, K.data(), 0.1, u.data(), lam_next.data(), s, gK.data(), gb.data(), 0.05);
    cuda_synchronize();
  }
  rates(state, 24.0 * s * w + 8.0 * w * w, s * (5.0 * w * w + 4.0 * w));
}

// Arguments: entries n.
void BM_ResidualNorm(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  DeviceBuffer<double> a(random(n, 13)), b(random(n, 14));
  for (auto _ : state) benchmark::DoNotOptimize(cuda_residual_norm(a.data(), b.data(), n));
  rates(state, 16.0 * n, 3.0 * n);
}

}  // namespace

// The wide path (width > 32): every chain's step k as one batched cuBLAS GEMM plus
// one epilogue launch. Arguments: width w, examples s, chains C, steps per chain m.
void BM_WideBlockPropagate(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), s = static_cast<int>(state.range(1));
  const int C = static_cast<int>(state.range(2)), m = static_cast<int>(state.range(3));
  NetworkSpec spec;
  spec.width = w;
  spec.layers = C * m;
  spec.activation = Activation::Tanh;
  spec.n_classes = 5;
  auto dev = std::shared_ptr<DeviceBackend>(make_cuda_backend());
  DenseResNet net(spec, backend_over(dev));
  const std::size_t sw = static_cast<std::size_t>(s) * w;
  DeviceBuffer<double> theta(random(net.param_size(), 6, 0.05)), starts(random(sw * C, 7)), states(sw * C * m);
  std::vector<std::vector<int>> idx(C);
  std::vector<std::vector<double*>> outs(C);
  std::vector<Propagator::Chain> chains;
  for (int c = 0; c < C; ++c) {
    for (int k = 0; k <= m; ++k) idx[c].push_back(c * m + k);
    for (int k = 0; k < m; ++k) outs[c].push_back(states.data() + sw * (c * m + k));
  }
  for (int c = 0; c < C; ++c) chains.push_back({idx[c].data(), m, starts.data() + sw * c, outs[c].data(), nullptr});
  for (auto _ : state) {
    net.propagate_chains(theta.data(), chains.data(), C, s);
    cuda_synchronize();
  }
  const double M = static_cast<double>(C) * m;
  // Per step: the GEMM reads K and the input, writes z; the epilogue reads z and the input, writes out.
  rates(state, M * (40.0 * s * w + 8.0 * w * w), M * s * (2.0 * w * w + 3.0 * w));
}

// One simultaneous-mode gradient (2 forward and 2 adjoint cycles, warm) on the
// device: the work of a training iteration whose line search takes the first
// step. Arguments: width w, layers N, examples s.
void BM_DeviceGradient(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const int w = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1));
  const int s = static_cast<int>(state.range(2));
  NetworkSpec spec;
  spec.width = w;
  spec.layers = N;
  spec.activation = Activation::SmoothRelu;
  MgritOptions o;
  o.cfactor = 4;
  o.relax = {"F", "FCF"};
  DeviceResNetMgrit solver(spec, s, o, o, nullptr, "cuda");
  const auto theta = random(DenseResNet(spec).param_size(), 8, 0.1), X = random(static_cast<std::size_t>(s) * 2, 9, 2.0);
  std::vector<std::int64_t> y(s);
  for (int i = 0; i < s; ++i) y[i] = i % spec.n_classes;
  std::vector<double> grad(theta.size());
  solver.evaluate(theta.data(), X.data(), y.data(), Regularization{}, grad.data(), -1, -1);
  for (auto _ : state) solver.evaluate(theta.data(), X.data(), y.data(), Regularization{}, grad.data(), 2, 2);
}

BENCHMARK(BM_DenseStep)->Args({8, 5000})->Args({32, 5000})->Args({8, 1 << 20})->UseRealTime();
BENCHMARK(BM_BlockPropagate)->Args({8, 5000, 8, 4})->Args({8, 5000, 256, 4})->Args({32, 65536, 64, 8})->UseRealTime();
BENCHMARK(BM_AdjointStep)->Args({8, 5000, 0})->Args({8, 5000, 1})->Args({32, 1 << 20, 1})->UseRealTime();
BENCHMARK(BM_LayerGradient)->Args({8, 5000})->Args({32, 1 << 20})->UseRealTime();
BENCHMARK(BM_ResidualNorm)->Arg(40000)->Arg(1 << 24)->UseRealTime();
BENCHMARK(BM_WideBlockPropagate)->Args({128, 5000, 16, 4})->Args({512, 4096, 16, 4})->UseRealTime();
BENCHMARK(BM_DeviceGradient)->Args({8, 32, 5000})->Args({8, 1024, 5000})->Args({128, 64, 5000})->UseRealTime();
