// Helpers shared by the C++ benchmark programs.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace lpbench {

/// n values uniform in [-scale, scale), reproducible from the seed.
inline std::vector<double> random_vector(std::size_t n, double scale, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace lpbench
