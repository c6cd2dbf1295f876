// The input sweep and ulp measure shared by the vector-math tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "layerparallel/vector_math.h"

namespace layerparallel {
namespace {

std::vector<double> sweep() {
  std::vector<double> x = {0.0, -0.0, std::numeric_limits<double>::denorm_min(), -std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::min(), 1e-300, 1e-20, 1e-9, 0.5493, 0.3466, 0.3467, 0.6931,
                           1.0, 2.0, 5.0, 19.06, 21.99, 22.0, 22.01, 30.0, 710.0, 1e300,
                           std::numeric_limits<double>::max(), std::numeric_limits<double>::infinity()};
  // Every binary exponent from subnormal to 2^9, at several mantissas.
  for (int e = -1074; e <= 9; ++e)
    for (double m : {1.0, 1.2345678901234, 1.5, 1.99999999})
      x.push_back(std::ldexp(m, e));
  // Dense random coverage of where tanh is not +-1 or x.
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> u(-20.0, 20.0), v(-1.0, 1.0);
  for (int i = 0; i < 200000; ++i) x.push_back(u(g));
  for (int i = 0; i < 100000; ++i) x.push_back(v(g));
  const std::size_t n = x.size();
  for (std::size_t i = 0; i < n; ++i) x.push_back(-x[i]);
  return x;
}

// |got - exact| in units of the last place of the exact value (as a double).
double ulps(double got, long double exact) {
  const double e = static_cast<double>(exact);
  if (std::isnan(e)) return std::isnan(got) ? 0.0 : 1e300;
  if (got == e && std::signbit(got) == std::signbit(e)) return 0.0;
  const double ae = std::fabs(e);
  const double ulp = ae == 0.0 ? std::numeric_limits<double>::denorm_min()
                               : std::nextafter(ae, std::numeric_limits<double>::infinity()) - ae;
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ulp);
}

template <bool Fused>
double max_tanh_ulps(const std::vector<double>& xs, double* worst_x) {
  double worst = 0.0;
  for (double x : xs) {
    const double e = ulps(vmath::tanh_vec<Fused>(x), tanhl(static_cast<long double>(x)));
    if (e > worst) {
      worst = e;
      *worst_x = x;
    }
  }
  return worst;
}

/// Expects tanh_vec<Fused> within `bound` ulps over the sweep and prints the maximum.
template <bool Fused>
void expect_tanh_within(double bound, const char* label) {
  const auto xs = sweep();
  double at = 0.0;
  const double worst = max_tanh_ulps<Fused>(xs, &at);
  EXPECT_LE(worst, bound) << "at x = " << at;
  std::printf("tanh_vec (%s): max %.3f ulp over %zu inputs (at %.17g)\n", label, worst, xs.size(), at);
}

}  // namespace
}  // namespace layerparallel
