// tanh_vec as a target without FMA computes it (LP_NATIVE=OFF on x86-64): this file
// is compiled with -ffp-contract=off (CMakeLists.txt), so the unfused variant's
// products and sums are rounded separately here even on a machine with FMA.
#include <gtest/gtest.h>

#include <cstdio>

#include "vector_math_sweep.h"

namespace layerparallel {
namespace {

TEST(VectorMath, TanhWithinThreeUlpsWithoutFma) {
  const auto xs = sweep();
  double at = 0.0;
  const double worst = max_tanh_ulps<false>(xs, &at);
  EXPECT_LE(worst, 3.0) << "at x = " << at;
  std::printf("tanh_vec (no fma): max %.3f ulp over %zu inputs (at %.17g)\n", worst, xs.size(), at);
}

}  // namespace
}  // namespace layerparallel
