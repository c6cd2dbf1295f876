// The vectorised activations (vector_math.h, activation_impl.h) against scalar
// references over a sweep of inputs: +-0, subnormals, small and large magnitudes,
// +-inf and NaN. tanh is measured in ulps against long double tanhl; the
// vectorised loop compiled into the engine library must give the same bits as the
// scalar function (so no result depends on which iterations were vectorised).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "layerparallel/activation_impl.h"
#include "layerparallel/dense.h"
#include "layerparallel/vector_math.h"
#include "vector_math_sweep.h"

namespace layerparallel {
namespace {

TEST(VectorMath, TanhWithinTwoAndAHalfUlpsWithFma) { expect_tanh_within<true>(2.5, "fma"); }

TEST(VectorMath, TanhSpecialValues) {
  const double inf = std::numeric_limits<double>::infinity();
  const double tiny = std::numeric_limits<double>::denorm_min();
  EXPECT_EQ(vmath::tanh_vec(0.0), 0.0);
  EXPECT_FALSE(std::signbit(vmath::tanh_vec(0.0)));
  EXPECT_TRUE(std::signbit(vmath::tanh_vec(-0.0)));
  EXPECT_EQ(vmath::tanh_vec(tiny), tiny);
  EXPECT_EQ(vmath::tanh_vec(-tiny), -tiny);
  EXPECT_EQ(vmath::tanh_vec(inf), 1.0);
  EXPECT_EQ(vmath::tanh_vec(-inf), -1.0);
  EXPECT_EQ(vmath::tanh_vec(1e300), 1.0);
  EXPECT_EQ(vmath::tanh_vec(-40.0), -1.0);
  EXPECT_TRUE(std::isnan(vmath::tanh_vec(std::numeric_limits<double>::quiet_NaN())));
  // Odd: tanh(-x) = -tanh(x) exactly.
  for (double x : {1e-5, 0.1, 0.7, 3.3, 12.0}) EXPECT_EQ(vmath::tanh_vec(-x), -vmath::tanh_vec(x));
}

// The reference the scalar activations must reproduce (the definitions of
// docs/algorithm.md, written with branches).
double relu_ref(double x) { return x > 0.0 ? x : 0.0; }
double drelu_ref(double x) { return x > 0.0 ? 1.0 : 0.0; }
double srelu_ref(double x) {
  const double eta = kSmoothReluEta;
  if (x >= eta) return x;
  if (x <= -eta) return 0.0;
  return x * x / (4.0 * eta) + 0.5 * x + 0.25 * eta;
}
double dsrelu_ref(double x) {
  const double eta = kSmoothReluEta;
  if (x >= eta) return 1.0;
  if (x <= -eta) return 0.0;
  return x / (2.0 * eta) + 0.5;
}

bool same_bits(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  std::uint64_t p, q;
  std::memcpy(&p, &a, sizeof p);
  std::memcpy(&q, &b, sizeof q);
  return p == q;
}

class VectorPath : public ::testing::TestWithParam<Activation> {};

TEST_P(VectorPath, EngineLoopEqualsScalarFunctionBitForBit) {
  const Activation act = GetParam();
  auto xs = sweep();
  // Odd lengths and offsets: remainders of every vector width.
  xs.resize(xs.size() - 3);
  std::vector<double> f(xs.size()), df(xs.size()), f_only(xs.size());
  activation_apply(act, xs.data(), f.data(), df.data(), xs.size());
  activation_apply(act, xs.data() + 1, f_only.data(), nullptr, xs.size() - 1);
  std::size_t bad = 0;
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const double x = xs[k];
    const double rf = activate(act, x), rd = activate_deriv(act, x);
    if (!same_bits(f[k], rf) || !same_bits(df[k], rd)) ++bad;
    if (k + 1 < xs.size() && !same_bits(f_only[k], activate(act, xs[k + 1]))) ++bad;
  }
  EXPECT_EQ(bad, 0u);
}

TEST_P(VectorPath, ScalarFunctionsMatchTheDefinitions) {
  const Activation act = GetParam();
  const auto xs = sweep();
  double worst_f = 0.0, worst_d = 0.0;
  for (double x : xs) {
    if (std::isnan(x)) continue;
    const double f = activate(act, x), d = activate_deriv(act, x);
    switch (act) {
      case Activation::Relu:
        ASSERT_TRUE(same_bits(f, relu_ref(x)) || (f == 0.0 && relu_ref(x) == 0.0)) << x;
        ASSERT_EQ(d, drelu_ref(x)) << x;
        break;
      case Activation::SmoothRelu: {
        // Products with the exact reciprocals of 4 eta and 2 eta instead of divisions:
        // within an ulp of the largest term of the quadratic (which cancels near -eta).
        const double eps = std::numeric_limits<double>::epsilon();
        const double scale_f = x * x / (4.0 * kSmoothReluEta) + std::fabs(0.5 * x) + 0.25 * kSmoothReluEta;
        const double scale_d = std::fabs(x / (2.0 * kSmoothReluEta)) + 0.5;
        ASSERT_TRUE(f == srelu_ref(x) || std::fabs(f - srelu_ref(x)) <= 2.0 * eps * scale_f) << x;
        ASSERT_TRUE(d == dsrelu_ref(x) || std::fabs(d - dsrelu_ref(x)) <= 2.0 * eps * scale_d) << x;
        break;
      }
      case Activation::Tanh: {
        const long double t = tanhl(static_cast<long double>(x));
        worst_f = std::max(worst_f, ulps(f, t));
        // 1 - t^2 from a t within 2.5 ulp: absolute error a few ulps of 1.
        worst_d = std::max(worst_d, std::fabs(d - static_cast<double>(1.0L - t * t)));
        break;
      }
    }
  }
  EXPECT_LE(worst_f, 2.5);
  EXPECT_LE(worst_d, 4.0 * std::numeric_limits<double>::epsilon());
}

INSTANTIATE_TEST_SUITE_P(Activations, VectorPath,
                         ::testing::Values(Activation::Tanh, Activation::Relu, Activation::SmoothRelu),
                         [](const ::testing::TestParamInfo<Activation>& i) {
                           return std::string(i.param == Activation::Tanh ? "tanh"
                                              : i.param == Activation::Relu ? "relu" : "smooth_relu");
                         });

}  // namespace
}  // namespace layerparallel
