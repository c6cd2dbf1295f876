// Vectorisable elementary functions for the CPU kernels.
//
// The hot loops of the CPU backend apply an activation to every entry of a state
// (docs/algorithm.md, section 1). A call to libm's scalar tanh costs about 26 ns
// per value on the machines we measure, several times the rest of a width-8 step,
// and it blocks vectorisation of the loop around it. The functions here are
// written without branches or calls, from IEEE operations (fma, *, +, /, bit
// manipulation) only, so that:
//
//  - gcc and clang vectorise the loops that call them (SSE2, AVX2 or AVX-512,
//    whatever the build targets) when the translation unit is built with
//    -fno-trapping-math (CMakeLists.txt sets it for the engine library);
//  - a scalar call gives the same bits as a SIMD lane: every operation is
//    correctly rounded and the fused multiply-adds are explicit, so results do
//    not depend on which loop iterations were vectorised (remainders, chunk
//    boundaries, the number of examples a process holds), and training on P
//    processes stays bit for bit training on one.
//
// Why not a vector math library: glibc's libmvec (_ZGVdN4v_tanh, reached through
// `#pragma omp declare simd`) was measured at 3.8-4.8 ns per value on AVX2 against
// 1.8-2.0 ns for tanh_vec below, with a similar maximum error (2.12 against 2.45 ulp),
// and it is not there on non-glibc systems; SLEEF is not installable from PyPI.
// benchmarks/RESULTS.md has the comparison (lp_bench_layers, BM_Tanh*), and
// tests/cpp/test_vector_math.cpp measures the error over a sweep of inputs.
#pragma once

#include <cstdint>
#include <cstring>

#include "layerparallel/macros.h"

#if defined(__FMA__) || defined(__aarch64__)
#define LP_VMATH_HAS_FMA 1
#else
#define LP_VMATH_HAS_FMA 0
#endif

// Host code only: CUDA device code keeps the device's tanh (activation_impl.h).
namespace layerparallel {
namespace vmath {

LP_ALWAYS_INLINE double from_bits(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}
LP_ALWAYS_INLINE std::uint64_t to_bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

/// a * b + c: one fused operation where the target has FMA; without it, a call to
/// fma() would be a slow library call that blocks vectorisation, and the plain form
/// is as deterministic (no contraction is possible without the instruction).
template <bool Fused>
LP_ALWAYS_INLINE double mul_add(double a, double b, double c) {
  if constexpr (Fused)
    return __builtin_fma(a, b, c);
  else
    return a * b + c;
}

/// expm1(y) for 0 <= y <= 44 (what tanh needs), about 1 ulp.
///
/// y = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2's high part has 32 significant
/// bits, so k ln2_hi is exact for k < 2^21 with or without FMA), expm1(r) from its
/// Taylor series to r^13 / 13! (truncation below 2^-60 relative on that interval),
/// then expm1(y) = 2^k expm1(r) + (2^k - 1): both terms exact but the last rounding.
template <bool Fused = LP_VMATH_HAS_FMA>
LP_ALWAYS_INLINE double expm1_nonneg(double y) {
  constexpr double kShift = 0x1.8p52;  // adding it rounds to an integer in the low bits
  constexpr double kInvLn2 = 0x1.71547652b82fep0;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 0x3fe62e42fee00000
  constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln2 - kLn2Hi
  double kd = mul_add<Fused>(y, kInvLn2, kShift);
  const std::uint64_t ki = to_bits(kd);  // k in the low bits
  kd -= kShift;
  double r = mul_add<Fused>(-kd, kLn2Hi, y);
  r = mul_add<Fused>(-kd, kLn2Lo, r);
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = mul_add<Fused>(p, r, 1.0 / 479001600.0);
  p = mul_add<Fused>(p, r, 1.0 / 39916800.0);
  p = mul_add<Fused>(p, r, 1.0 / 3628800.0);
  p = mul_add<Fused>(p, r, 1.0 / 362880.0);
  p = mul_add<Fused>(p, r, 1.0 / 40320.0);
  p = mul_add<Fused>(p, r, 1.0 / 5040.0);
  p = mul_add<Fused>(p, r, 1.0 / 720.0);
  p = mul_add<Fused>(p, r, 1.0 / 120.0);
  p = mul_add<Fused>(p, r, 1.0 / 24.0);
  p = mul_add<Fused>(p, r, 1.0 / 6.0);
  p = mul_add<Fused>(p, r, 0.5);
  const double em = mul_add<Fused>(p * r, r, r);         // expm1(r)
  const double scale = from_bits((ki + 1023u) << 52);    // 2^k, 0 <= k <= 64
  return mul_add<Fused>(scale, em, scale - 1.0);
}

/// tanh(x) = sign(x) t / (t + 2) with t = expm1(2|x|): branch-free, within 2.5 ulp of
/// the exact value over the tested sweep (tests/cpp/test_vector_math.cpp, with and
/// without FMA). Keeps the sign of zero, gives +-1 beyond |x| = 22 (where tanh rounds
/// to 1) and for +-inf, NaN for NaN, and x itself for subnormal x.
template <bool Fused = LP_VMATH_HAS_FMA>
LP_ALWAYS_INLINE double tanh_vec(double x) {
  double a = __builtin_fabs(x);
  a = a > 22.0 ? 22.0 : a;  // a NaN stays a NaN (the comparison is false)
  const double t = expm1_nonneg<Fused>(2.0 * a);
  return __builtin_copysign(t / (t + 2.0), x);
}

}  // namespace vmath
}  // namespace layerparallel
