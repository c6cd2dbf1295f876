// The CUDA backend's kernel operations, internal to cuda/: each runs one
// operation as every launch of its plan (launch_plan.h), with the scratch and
// the fixed-order final sums it needs. Implemented next to their kernels
// (dense_kernels.cu, conv_kernels.cu: a kernel is launched from its own file);
// called by CudaBackend (cuda_backend.cu) and by the test and benchmark entry
// points of cuda.h (cuda_api.cu). Pointers are device pointers unless they say
// "host"; callers check widths and shapes. An operation that frees scratch on
// return synchronises first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"
#include "layerparallel/cuda.h"
#include "layerparallel/launch_plan.h"
#include "layerparallel/propagator.h"

namespace layerparallel::cuda_ops {

/// std::invalid_argument unless 1 <= w <= kernels::kMaxWidth (the one-thread-per-example kernels).
void require_narrow_width(int w);

// ---- the narrow dense layer (w <= kMaxWidth)
void dense_step(Activation act, int w, const double* K, double b, double dt, const double* in, double* out, int s);
/// With deriv (act'(.) known) u and b are not read.
void dense_adjoint(Activation act, int w, const double* K, double b, double dt, const double* u,
                   const double* lam_next, double* lam, int s, const double* deriv);
/// Chains in host memory; their arrays go up into `scratch`, which the launches read
/// (reused safely by the next call: the default stream orders the copy after them).
void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                     const Propagator::Chain* chains, int n, DeviceBuffer<char>& scratch);
void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                   const Propagator::Chain* chains, int n, DeviceBuffer<char>& scratch);
/// a.u: `count` state pointers in device memory.
void layer_derivs(Activation act, const kernels::LayerDerivArgs& a, int count);
/// gK += gscale D^T u, gb += gscale sum(D), D = act'(K u + b) * lam_next or deriv * lam_next.
void layer_gradient(Activation act, int w, const double* K, double b, const double* u, const double* lam_next,
                    const double* deriv, int s, double* gK, double* gb, double gscale);
/// correct: host pointer (may be null). Synchronises.
double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                  int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu);
void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                   int s);
void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                            const double* lam0, int s, double* gW, double* gb);

// ---- whole states
/// sum_k (a_k - b_k)^2 (b may be null), returned to the host.
double sum_sq(const double* a, const double* b, std::size_t n);
/// out[q] = sum_sq(a[q], b[q], n) for q < count: a, b (entries may be null) and out in device memory.
void sum_sq_batch(const double* const* a, const double* const* b, int count, std::size_t n, double* out);
void elementwise(const kernels::ElementArgs& e);
/// e's pointer arrays in device memory, `count` entries.
void elementwise_batch(const kernels::ElementBatchArgs& e, int count);
/// a's arrays in device memory, `count` entries.
void wide_epilogue(Activation act, const kernels::WideArgs& a, int count);
/// *dst += sum_k (scale a_k) b_k.
void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst);

// ---- the 3x3 convolutional layer (conv_kernels.cu)
/// std::invalid_argument unless C, H, W >= 1.
void require_conv_shape(const ConvShape& sh);
void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt, const double* in,
               double* out, int s, double* deriv);
/// With deriv (act'(.) known) u, bias and act are not read.
void conv_adjoint(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                  const double* u, const double* lam_next, double* lam, int s, const double* deriv);
void conv_gradient(Activation act, const ConvShape& sh, const double* K, const double* bias, const double* u,
                   const double* lam_next, int s, double* gK, double* gb, double gscale, const double* deriv);
void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s);

}  // namespace layerparallel::cuda_ops
