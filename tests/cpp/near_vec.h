// A gtest predicate for comparing vectors relative to the reference's size.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lptest {

/// |a - b| <= rel * max|b| over the vector.
inline ::testing::AssertionResult near_vec(const std::vector<double>& a, const std::vector<double>& b, double rel) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  double scale = 1e-300;
  for (double x : b) scale = std::max(scale, std::fabs(x));
  for (std::size_t k = 0; k < a.size(); ++k)
    if (!(std::fabs(a[k] - b[k]) <= rel * scale))
      return ::testing::AssertionFailure() << "entry " << k << ": " << a[k] << " vs " << b[k] << " (scale " << scale
                                           << ")";
  return ::testing::AssertionSuccess();
}

}  // namespace lptest
