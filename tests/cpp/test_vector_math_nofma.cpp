// tanh_vec as a target without FMA computes it (LP_NATIVE=OFF on x86-64): this file
// is compiled with -ffp-contract=off (CMakeLists.txt), so the unfused variant's
// products and sums are rounded separately here even on a machine with FMA.
#include <gtest/gtest.h>

#include "vector_math_sweep.h"

namespace layerparallel {
namespace {

TEST(VectorMath, TanhWithinThreeUlpsWithoutFma) { expect_tanh_within<false>(3.0, "no fma"); }

}  // namespace
}  // namespace layerparallel
