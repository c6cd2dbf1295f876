// CPU backend of the 3x3 convolutional residual layer (direct convolution; for
// the paper's 4-8 channels on 28x28 images the 3x3 stencil is memory-light).
#include "layerparallel/conv.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "layerparallel/dense.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {
// Examples per chunk of the convolutional layers: an image is thousands of values, so
// chunks far smaller than the dense layers' keep every thread busy on mini-batches
// (a batch of 128 is 8 chunks). The adjoint's gradient partial sums are per chunk and
// added in chunk order, so the result does not depend on the number of threads.
constexpr int kConvChunk = 16;
}  // namespace

void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
               const double* in, double* out, int s, double* deriv) {
  const std::size_t n = sh.size();
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    for_each_chunk(s, [&](int r0, int rows) {
      std::vector<double> z(n);
      for (int i = r0; i < r0 + rows; ++i) {
        const std::size_t o = static_cast<std::size_t>(i) * n;
        if (deriv) {
          // act and act' from one evaluation (one tanh, not two).
          conv_preact_example(sh, K, bias, in + o, z.data());
          LP_SIMD
          for (std::size_t k = 0; k < n; ++k) {
            double f, d;
            Act::fdf(z[k], f, d);
            out[o + k] = in[o + k] + dt * f;
            deriv[o + k] = d;
          }
        } else {
          conv_step_example<Act>(sh, K, bias, dt, in + o, out + o, z.data());
        }
      }
    }, kConvChunk);
  });
}

void conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                       const double* u, const double* lam_next, double* lam, int s, const double* deriv,
                       double* gK, double* gb, double gscale) {
  const std::size_t n = sh.size();
  const int chunks = (s + kConvChunk - 1) / kConvChunk;
  const int len = sh.weight_size() + sh.bias_size();
  std::vector<double> partial(gK ? static_cast<std::size_t>(chunks) * len : 0, 0.0);
  with_activation(act, [&](auto A) {
    using Act = decltype(A);
    for_each_chunk(s, [&](int r0, int rows) {
      std::vector<double> z(n), d(n), scratch(lam ? 0 : n);
      double* pg = gK ? partial.data() + static_cast<std::size_t>(r0 / kConvChunk) * len : nullptr;
      for (int i = r0; i < r0 + rows; ++i) {
        const std::size_t o = static_cast<std::size_t>(i) * n;
        conv_adjoint_example<Act>(sh, K, bias, dt, u + o, deriv ? deriv + o : nullptr, lam_next + o, d.data(),
                                  lam ? lam + o : scratch.data(), z.data());
        if (pg) conv_gradient_example(sh, gscale, d.data(), u + o, pg, pg + sh.weight_size());
      }
    }, kConvChunk);
  });
  if (gK) {
    for (int c = 0; c < chunks; ++c) {
      const double* p = partial.data() + static_cast<std::size_t>(c) * len;
      for (int k = 0; k < sh.weight_size(); ++k) gK[k] += p[k];
      for (int k = 0; k < sh.bias_size(); ++k) gb[k] += p[sh.weight_size() + k];
    }
  }
}

void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) {
  for_each_chunk(s, [&](int r0, int rows) {
    for (int i = r0; i < r0 + rows; ++i)
      replicate_opening_example(sh, pixels + static_cast<std::size_t>(i) * sh.pixels(),
                                U0 + static_cast<std::size_t>(i) * sh.size());
  }, kConvChunk);
}

}  // namespace layerparallel
