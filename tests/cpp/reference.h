// Plain reference loops (no fusion, no threads, no BLAS) that the kernels are
// tested against.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "layerparallel/activation_impl.h"

namespace lptest {

using layerparallel::Activation;

inline std::vector<double> random_vector(std::size_t n, double lo, double hi, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline double ref_act(Activation a, double x) {
  switch (a) {
    case Activation::Tanh: return std::tanh(x);
    case Activation::Relu: return x > 0 ? x : 0;
    default:
      if (std::fabs(x) < 0.1) return x * x / 0.4 + x / 2 + 0.025;
      return x > 0 ? x : 0;
  }
}

inline double ref_dact(Activation a, double x) {
  switch (a) {
    case Activation::Tanh: return 1 - std::tanh(x) * std::tanh(x);
    case Activation::Relu: return x > 0 ? 1 : 0;
    default:
      if (std::fabs(x) < 0.1) return x / 0.2 + 0.5;
      return x > 0 ? 1 : 0;
  }
}

// z[i][r] = sum_c K[r][c] u[i][c] + b
inline std::vector<double> ref_preact(int w, const std::vector<double>& K, double b, const std::vector<double>& u,
                                      int s) {
  std::vector<double> z(static_cast<std::size_t>(s) * w);
  for (int i = 0; i < s; ++i)
    for (int r = 0; r < w; ++r) {
      double acc = b;
      for (int c = 0; c < w; ++c) acc += K[r * w + c] * u[i * w + c];
      z[i * w + r] = acc;
    }
  return z;
}

}  // namespace lptest
