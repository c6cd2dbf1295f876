// Activation functions and their derivatives, written once for the CPU and
// CUDA backends (host/device inline functions).
#pragma once

#include <cmath>

#include "layerparallel/macros.h"
#include "layerparallel/vector_math.h"

namespace layerparallel {

enum class Activation : int { Tanh = 0, Relu = 1, SmoothRelu = 2 };

/// Half-width of the quadratic piece of the smooth ReLU (the paper's eta).
constexpr double kSmoothReluEta = 0.1;

// The functions below are written without branches so that loops over them
// vectorise (vector_math.h); the host's tanh is vmath::tanh_vec, the device's
// the CUDA math library's tanh.

/// tanh on the host (vectorisable, vector_math.h) and on a device (CUDA's tanh).
LP_HOST_DEVICE LP_ALWAYS_INLINE double tanh_act(double x) {
#if defined(__CUDA_ARCH__)
  return tanh(x);
#else
  return vmath::tanh_vec(x);
#endif
}

struct TanhAct {
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double f(double x) { return tanh_act(x); }
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double df(double x) {
    const double t = tanh_act(x);
    return 1.0 - t * t;
  }
  /// Value and derivative with one tanh.
  LP_HOST_DEVICE LP_ALWAYS_INLINE static void fdf(double x, double& f, double& d) {
    f = tanh_act(x);
    d = 1.0 - f * f;
  }
};

struct ReluAct {
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double f(double x) { return x > 0.0 ? x : 0.0; }
  // The derivative at the kink is taken as 0 (the convention of PyTorch too).
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double df(double x) { return x > 0.0 ? 1.0 : 0.0; }
  LP_HOST_DEVICE LP_ALWAYS_INLINE static void fdf(double x, double& f, double& d) {
    f = ReluAct::f(x);
    d = ReluAct::df(x);
  }
};

struct SmoothReluAct {
  // Products with the reciprocals 1 / (4 eta) = 2.5 and 1 / (2 eta) = 5 (both exact)
  // instead of divisions: within an ulp of x^2 / (4 eta), and a vector division costs
  // as much as the rest of a width-8 step.
  static constexpr double kInv4Eta = 1.0 / (4.0 * kSmoothReluEta);
  static constexpr double kInv2Eta = 1.0 / (2.0 * kSmoothReluEta);
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double f(double x) {
    constexpr double eta = kSmoothReluEta;
    const double q = x * x * kInv4Eta + 0.5 * x + 0.25 * eta;
    return x >= eta ? x : (x <= -eta ? 0.0 : q);
  }
  LP_HOST_DEVICE LP_ALWAYS_INLINE static double df(double x) {
    constexpr double eta = kSmoothReluEta;
    const double q = x * kInv2Eta + 0.5;
    return x >= eta ? 1.0 : (x <= -eta ? 0.0 : q);
  }
  LP_HOST_DEVICE LP_ALWAYS_INLINE static void fdf(double x, double& f, double& d) {
    f = SmoothReluAct::f(x);
    d = SmoothReluAct::df(x);
  }
};

/// Calls f(ActivationStruct{}) for the runtime activation `a`, so hot loops are
/// compiled once per activation (host code; the CPU backend and the CUDA launchers).
template <class F>
void with_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::Tanh: f(TanhAct{}); break;
    case Activation::Relu: f(ReluAct{}); break;
    case Activation::SmoothRelu: f(SmoothReluAct{}); break;
    default: LP_REQUIRE(false, "unknown activation code " << static_cast<int>(a));
  }
}

/// Runtime-dispatched value (for code that is not hot).
LP_HOST_DEVICE inline double activate(Activation a, double x) {
  switch (a) {
    case Activation::Tanh: return TanhAct::f(x);
    case Activation::Relu: return ReluAct::f(x);
    default: return SmoothReluAct::f(x);
  }
}
LP_HOST_DEVICE inline double activate_deriv(Activation a, double x) {
  switch (a) {
    case Activation::Tanh: return TanhAct::df(x);
    case Activation::Relu: return ReluAct::df(x);
    default: return SmoothReluAct::df(x);
  }
}

}  // namespace layerparallel
