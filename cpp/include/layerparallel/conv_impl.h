// Per-example math of a 3x3 convolutional residual layer (C -> C channels,
// zero padding, same-size H x W images), written once as host/device inline
// functions for the CPU backend and the CUDA kernels. A state is one example's
// image stack, (C, H, W) row-major. K is (C_out, C_in, 3, 3). The bias is one
// value per pixel shared over channels (the paper, H*W values) or one per
// channel (C values).
#pragma once

#include "layerparallel/activation_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel {

/// Shape of a convolutional state and how its bias is shared.
struct ConvShape {
  int C = 4, H = 28, W = 28;
  bool bias_per_channel = false;
  LP_HOST_DEVICE int pixels() const { return H * W; }
  LP_HOST_DEVICE int size() const { return C * H * W; }
  LP_HOST_DEVICE int bias_size() const { return bias_per_channel ? C : H * W; }
  LP_HOST_DEVICE int weight_size() const { return C * C * 9; }
};

/// z = conv3x3(K, u) + bias for one example with Cin input and Cout output
/// channels (K is (Cout, Cin, 3, 3)); bias per output channel or per pixel.
LP_HOST_DEVICE inline void conv_preact_channels(int Cout, int Cin, int H, int W, bool bias_per_channel,
                                                const double* LP_RESTRICT K, const double* LP_RESTRICT bias,
                                                const double* LP_RESTRICT u, double* LP_RESTRICT z) {
  const int P = H * W;
  for (int co = 0; co < Cout; ++co) {
    double* zc = z + co * P;
    for (int p = 0; p < P; ++p) zc[p] = bias_per_channel ? bias[co] : bias[p];
    for (int ci = 0; ci < Cin; ++ci) {
      const double* uc = u + ci * P;
      const double* k = K + (co * Cin + ci) * 9;
      for (int ky = 0; ky < 3; ++ky) {
        for (int kx = 0; kx < 3; ++kx) {
          const double kv = k[ky * 3 + kx];
          // Output rows/columns whose input pixel (y + ky - 1, x + kx - 1) is inside.
          const int y0 = ky == 0 ? 1 : 0, y1 = ky == 2 ? H - 1 : H;
          const int x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? W - 1 : W;
          for (int y = y0; y < y1; ++y) {
            const double* urow = uc + (y + ky - 1) * W + (kx - 1);
            double* zrow = zc + y * W;
            LP_SIMD
            for (int x = x0; x < x1; ++x) zrow[x] += kv * urow[x];
          }
        }
      }
    }
  }
}

/// z = conv3x3(K, u) + bias for one example of a C -> C layer.
LP_HOST_DEVICE inline void conv_preact_example(const ConvShape& sh, const double* LP_RESTRICT K,
                                               const double* LP_RESTRICT bias, const double* LP_RESTRICT u,
                                               double* LP_RESTRICT z) {
  conv_preact_channels(sh.C, sh.C, sh.H, sh.W, sh.bias_per_channel, K, bias, u, z);
}

/// out = u + dt * act(conv(K, u) + bias) for one example; z is scratch (size()).
template <class Act>
LP_HOST_DEVICE inline void conv_step_example(const ConvShape& sh, const double* LP_RESTRICT K,
                                             const double* LP_RESTRICT bias, double dt,
                                             const double* LP_RESTRICT u, double* LP_RESTRICT out,
                                             double* LP_RESTRICT z) {
  conv_preact_example(sh, K, bias, u, z);
  const int n = sh.size();
  LP_SIMD
  for (int i = 0; i < n; ++i) out[i] = u[i] + dt * Act::f(z[i]);
}

/// lam += dt * conv^T(K, d): the transposed (flipped) convolution of d.
LP_HOST_DEVICE inline void conv_transpose_add(const ConvShape& sh, const double* LP_RESTRICT K, double dt,
                                              const double* LP_RESTRICT d, double* LP_RESTRICT lam) {
  const int C = sh.C, H = sh.H, W = sh.W, P = H * W;
  for (int co = 0; co < C; ++co) {
    const double* dc = d + co * P;
    for (int ci = 0; ci < C; ++ci) {
      double* lc = lam + ci * P;
      const double* k = K + (co * C + ci) * 9;
      for (int ky = 0; ky < 3; ++ky) {
        for (int kx = 0; kx < 3; ++kx) {
          const double kv = dt * k[ky * 3 + kx];
          const int y0 = ky == 0 ? 1 : 0, y1 = ky == 2 ? H - 1 : H;
          const int x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? W - 1 : W;
          for (int y = y0; y < y1; ++y) {
            double* lrow = lc + (y + ky - 1) * W + (kx - 1);
            const double* drow = dc + y * W;
            LP_SIMD
            for (int x = x0; x < x1; ++x) lrow[x] += kv * drow[x];
          }
        }
      }
    }
  }
}

/// Adjoint of one step for one example, linearised about u (or about a known
/// deriv = act'(z) when deriv != nullptr; then z is not needed):
///   d = act'(conv(K, u) + bias) * lam_next;  lam = lam_next + dt conv^T(K, d).
/// Writes d (for the gradient) and lam; z is scratch.
template <class Act>
LP_HOST_DEVICE inline void conv_adjoint_example(const ConvShape& sh, const double* LP_RESTRICT K,
                                                const double* LP_RESTRICT bias, double dt,
                                                const double* LP_RESTRICT u, const double* LP_RESTRICT deriv,
                                                const double* LP_RESTRICT lam_next, double* LP_RESTRICT d,
                                                double* LP_RESTRICT lam, double* LP_RESTRICT z) {
  const int n = sh.size();
  if (deriv) {
    for (int i = 0; i < n; ++i) d[i] = deriv[i] * lam_next[i];
  } else {
    conv_preact_example(sh, K, bias, u, z);
    LP_SIMD
    for (int i = 0; i < n; ++i) d[i] = Act::df(z[i]) * lam_next[i];
  }
  for (int i = 0; i < n; ++i) lam[i] = lam_next[i];
  conv_transpose_add(sh, K, dt, d, lam);
}

/// Gradient contribution of one example with Cin input and Cout output channels:
/// gK += gscale * corr(d, u) (gK is (Cout, Cin, 3, 3)), gb += gscale * sums of d.
LP_HOST_DEVICE inline void conv_gradient_channels(int Cout, int Cin, int H, int W, bool bias_per_channel,
                                                  double gscale, const double* LP_RESTRICT d,
                                                  const double* LP_RESTRICT u, double* LP_RESTRICT gK,
                                                  double* LP_RESTRICT gb) {
  const int P = H * W;
  for (int co = 0; co < Cout; ++co) {
    const double* dc = d + co * P;
    for (int ci = 0; ci < Cin; ++ci) {
      const double* uc = u + ci * P;
      double* g = gK + (co * Cin + ci) * 9;
      for (int ky = 0; ky < 3; ++ky) {
        for (int kx = 0; kx < 3; ++kx) {
          const int y0 = ky == 0 ? 1 : 0, y1 = ky == 2 ? H - 1 : H;
          const int x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? W - 1 : W;
          double acc = 0.0;
          for (int y = y0; y < y1; ++y) {
            const double* urow = uc + (y + ky - 1) * W + (kx - 1);
            const double* drow = dc + y * W;
            LP_SIMD_SUM(acc)
            for (int x = x0; x < x1; ++x) acc += drow[x] * urow[x];
          }
          g[ky * 3 + kx] += gscale * acc;
        }
      }
    }
    if (bias_per_channel) {
      double acc = 0.0;
      for (int p = 0; p < P; ++p) acc += dc[p];
      gb[co] += gscale * acc;
    } else {
      for (int p = 0; p < P; ++p) gb[p] += gscale * dc[p];
    }
  }
}

/// Gradient contribution of one example of a C -> C layer.
LP_HOST_DEVICE inline void conv_gradient_example(const ConvShape& sh, double gscale, const double* LP_RESTRICT d,
                                                 const double* LP_RESTRICT u, double* LP_RESTRICT gK,
                                                 double* LP_RESTRICT gb) {
  conv_gradient_channels(sh.C, sh.C, sh.H, sh.W, sh.bias_per_channel, gscale, d, u, gK, gb);
}

/// The paper's image opening: every channel gets tanh(6 p / 255 - 3) + 1 of pixel p.
LP_HOST_DEVICE inline void replicate_opening_example(const ConvShape& sh, const double* LP_RESTRICT pixels,
                                                     double* LP_RESTRICT u0) {
  const int P = sh.pixels();
  for (int c = 0; c < sh.C; ++c)
    for (int p = 0; p < P; ++p) u0[c * P + p] = TanhAct::f(6.0 * pixels[p] / 255.0 - 3.0) + 1.0;
}

}  // namespace layerparallel
