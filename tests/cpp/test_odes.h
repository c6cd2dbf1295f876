// Small test ODEs shared by the MGRIT engine tests.
#pragma once

#include <cmath>

namespace lptest {

/// One step of u' = tanh(A u + b(t)) from fine index i0 to i1 (dt = (i1 - i0) h),
/// with b depending on the left index (as a ResNet's weights do): nonlinear, 3-D.
inline void vec_ode_step(double h, int i0, int i1, const double* in, double* out) {
  static const double A[3][3] = {{-0.8, 0.5, 0.1}, {-0.4, -0.6, 0.3}, {0.2, -0.3, -0.9}};
  const double dt = (i1 - i0) * h;
  for (int r = 0; r < 3; ++r) {
    double z = 0.4 * std::sin(0.3 * i0 + r);
    for (int c = 0; c < 3; ++c) z += A[r][c] * in[c];
    out[r] = in[r] + dt * std::tanh(z);
  }
}

}  // namespace lptest
