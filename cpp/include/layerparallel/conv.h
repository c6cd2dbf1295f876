// Batch kernels of the 3x3 convolutional residual layer on the CPU: OpenMP over
// examples, the per-example math of conv_impl.h. States are (s, C, H, W).
#pragma once

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"

namespace layerparallel {

/// out = in + dt * act(conv(K, in) + bias); deriv (optional) receives act'(.).
void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
               const double* in, double* out, int s, double* deriv = nullptr);

/// lam = lam_next + dt conv^T(K, act'(conv(K, u) + bias) * lam_next) (deriv = act'(.) when known).
/// When gK != nullptr the layer's gradient is accumulated: gK += gscale corr(D, u),
/// gb += gscale sums of D, with D = act'(.) * lam_next; per-chunk partial sums added
/// in chunk order (independent of the thread count). lam may be nullptr.
void conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                       const double* u, const double* lam_next, double* lam, int s, const double* deriv = nullptr,
                       double* gK = nullptr, double* gb = nullptr, double gscale = 0.0);

/// u0 = tanh(6 p / 255 - 3) + 1 of each pixel, copied to every channel; pixels (s, H, W).
void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s);

}  // namespace layerparallel
