// Google Benchmark of the dense layer kernels: forward step, adjoint step and
// parameter gradient, narrow (fused loops) and wide (BLAS) widths, 1 and 2
// threads, plus a whole serial gradient evaluation. Reports GFLOP/s.
// BM_Tanh compares three ways to evaluate tanh over an array: libm's scalar tanh,
// glibc's vector math library libmvec (when the build found it) and the engine's
// vectorised tanh (vector_math.h, through activation_apply).
//
//   cmake -S . -B build/bench -DLP_BENCHMARKS=ON -DLP_PYTHON=OFF && cmake --build build/bench -j2
//   build/bench/lp_bench_layers
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#if defined(LP_BENCH_LIBMVEC) && defined(__AVX2__)
#include <immintrin.h>
// glibc >= 2.35: the AVX2 variant of tanh in libmvec (x86-64 vector function ABI).
extern "C" __m256d _ZGVdN4v_tanh(__m256d);
#endif

#include "layerparallel/dense.h"
#include "layerparallel/network.h"
#include "layerparallel/threading.h"
#include "../bench_util.h"

using namespace layerparallel;

namespace {

using lpbench::random_vector;

// Arguments: width, examples, threads.
void BM_ForwardStep(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  std::vector<double> out(u.size());
  for (auto _ : st) {
    dense_step(Activation::SmoothRelu, w, K.data(), 0.1, 0.15, u.data(), out.data(), s);
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * w * w * s, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

void BM_AdjointStepWithGradient(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  auto lam = random_vector(static_cast<std::size_t>(s) * w, 1.0, 3);
  std::vector<double> out(u.size()), gK(static_cast<std::size_t>(w) * w);
  double gb = 0.0;
  for (auto _ : st) {
    dense_adjoint_step(Activation::SmoothRelu, w, K.data(), 0.1, 0.15, u.data(), lam.data(), out.data(), s,
                       nullptr, gK.data(), &gb, 0.15);
    benchmark::DoNotOptimize(out.data());
  }
  // pre-activation, K^T d and the gradient: three w*w products per example.
  st.counters["GFLOP/s"] = benchmark::Counter(6.0 * w * w * s, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

void BM_LayerGradient(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  auto lam = random_vector(static_cast<std::size_t>(s) * w, 1.0, 3);
  std::vector<double> gK(static_cast<std::size_t>(w) * w);
  double gb = 0.0;
  for (auto _ : st) {
    dense_layer_gradient(Activation::SmoothRelu, w, K.data(), 0.1, u.data(), lam.data(), s, gK.data(), &gb, 0.15);
    benchmark::DoNotOptimize(gK.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(4.0 * w * w * s, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

// The kernels MGRIT runs with act' known (dense_activation_deriv once per layer, then
// adjoint steps and the parameter gradient reuse it). Arguments: width, examples,
// threads, activation code (0 tanh, 1 ReLU, 2 smooth ReLU).
void BM_ActivationDeriv(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  const auto act = static_cast<Activation>(st.range(3));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  std::vector<double> deriv(u.size());
  for (auto _ : st) {
    dense_activation_deriv(act, w, K.data(), 0.1, u.data(), deriv.data(), s);
    benchmark::DoNotOptimize(deriv.data());
  }
}

void BM_ForwardStepAct(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  const auto act = static_cast<Activation>(st.range(3));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  std::vector<double> out(u.size());
  for (auto _ : st) {
    dense_step(act, w, K.data(), 0.1, 0.15, u.data(), out.data(), s);
    benchmark::DoNotOptimize(out.data());
  }
}

void BM_AdjointStepDeriv(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto deriv = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  auto lam = random_vector(static_cast<std::size_t>(s) * w, 1.0, 3);
  std::vector<double> out(lam.size());
  for (auto _ : st) {
    dense_adjoint_step(Activation::Relu, w, K.data(), 0.1, 0.15, nullptr, lam.data(), out.data(), s, deriv.data());
    benchmark::DoNotOptimize(out.data());
  }
}

void BM_LayerGradientDeriv(benchmark::State& st) {
  const int w = static_cast<int>(st.range(0)), s = static_cast<int>(st.range(1));
  set_num_threads(static_cast<int>(st.range(2)));
  auto K = random_vector(static_cast<std::size_t>(w) * w, 0.3, 1);
  auto u = random_vector(static_cast<std::size_t>(s) * w, 1.0, 2);
  auto lam = random_vector(static_cast<std::size_t>(s) * w, 1.0, 3);
  auto deriv = random_vector(static_cast<std::size_t>(s) * w, 1.0, 4);
  std::vector<double> gK(static_cast<std::size_t>(w) * w);
  double gb = 0.0;
  for (auto _ : st) {
    dense_layer_gradient(Activation::Relu, w, K.data(), 0.1, u.data(), lam.data(), s, gK.data(), &gb, 0.15,
                         deriv.data());
    benchmark::DoNotOptimize(gK.data());
  }
}

// tanh over 4096 values in [-4, 4]; argument: 0 libm scalar, 1 libmvec (AVX2), 2 ours.
void BM_Tanh(benchmark::State& st) {
  const int variant = static_cast<int>(st.range(0));
  const std::size_t n = 4096;
  auto x = random_vector(n, 4.0, 9);
  std::vector<double> y(n);
  if (variant == 1) {
#if defined(LP_BENCH_LIBMVEC) && defined(__AVX2__)
    for (auto _ : st) {
      for (std::size_t k = 0; k < n; k += 4) _mm256_storeu_pd(y.data() + k, _ZGVdN4v_tanh(_mm256_loadu_pd(x.data() + k)));
      benchmark::DoNotOptimize(y.data());
    }
#else
    st.SkipWithError("built without libmvec or AVX2");
    return;
#endif
  } else if (variant == 0) {
    for (auto _ : st) {
      for (std::size_t k = 0; k < n; ++k) y[k] = std::tanh(x[k]);
      benchmark::DoNotOptimize(y.data());
    }
  } else {
    for (auto _ : st) {
      activation_apply(Activation::Tanh, x.data(), y.data(), nullptr, n);
      benchmark::DoNotOptimize(y.data());
    }
  }
  st.counters["values/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

// A whole objective + gradient of a network: arguments width, layers, examples, threads.
void BM_NetworkGradient(benchmark::State& st) {
  NetworkSpec spec;
  spec.width = static_cast<int>(st.range(0));
  spec.layers = static_cast<int>(st.range(1));
  spec.n_features = 2;
  spec.n_classes = 5;
  spec.activation = spec.width > 32 ? Activation::Tanh : Activation::SmoothRelu;
  const int s = static_cast<int>(st.range(2));
  set_num_threads(static_cast<int>(st.range(3)));
  DenseResNet net(spec);
  auto theta = random_vector(net.layout().size, 0.2, 4);
  auto X = random_vector(static_cast<std::size_t>(s) * 2, 3.0, 5);
  std::vector<std::int64_t> y(s);
  for (int i = 0; i < s; ++i) y[i] = i % 5;
  std::vector<double> grad(theta.size());
  Regularization reg{1e-7, 1e-7, 1e-7};
  for (auto _ : st) {
    auto ev = net.evaluate(theta.data(), X.data(), y.data(), s, reg, grad.data());
    benchmark::DoNotOptimize(ev.objective);
  }
  const double w = spec.width;
  st.counters["GFLOP/s"] = benchmark::Counter(8.0 * w * w * s * spec.layers,
                                              benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

}  // namespace

BENCHMARK(BM_ForwardStep)->ArgsProduct({{8, 256}, {4096}, {1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AdjointStepWithGradient)->ArgsProduct({{8, 256}, {4096}, {1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LayerGradient)->ArgsProduct({{8, 256}, {4096}, {1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Tanh)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ForwardStepAct)->ArgsProduct({{8}, {5000}, {1}, {0, 1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ActivationDeriv)->ArgsProduct({{8}, {5000}, {1}, {0, 1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AdjointStepDeriv)->ArgsProduct({{8}, {5000}, {1}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LayerGradientDeriv)->ArgsProduct({{8}, {5000}, {1}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_NetworkGradient)->Args({8, 32, 5000, 1})->Args({8, 32, 5000, 2})->Args({256, 64, 4096, 1})->Args({256, 64, 4096, 2})->UseRealTime()->Unit(benchmark::kMillisecond);
