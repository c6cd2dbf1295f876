// CUDA kernels of the dense residual layer and of whole states, and their
// operations (kernel_ops.h): every launch taken from the operation's plan
// (launch_plan.h), so EmulatedBackend runs the same launches on the CPU.
// Each __global__ kernel only maps blockIdx/threadIdx/blockDim/gridDim onto the
// bodies of dense_kernels_impl.h and puts __syncthreads() between their phases;
// all arithmetic lives in those bodies (tested on the CPU by
// tests/cpp/test_kernel_harness.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda_check.cuh"
#include "kernel_ops.h"
#include "launch.cuh"
#include "layerparallel/cuda.h"
#include "layerparallel/dense_kernels_impl.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/launch_plan.h"

namespace layerparallel {

namespace {

using kernels::Idx3;
using kernels::Launch;
using kernels::LaunchPlan;

// ------------------------------------------------------------------ kernels

template <class Act, int W>
__global__ void dense_step_kernel(int w, const double* K, double b, double dt, const double* in, double* out,
                                  int s) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::dense_step_load(thr, bdim, w, K, sh);
  __syncthreads();
  kernels::dense_step_compute<Act, W>(blk, thr, bdim, w, b, dt, in, out, s, sh);
}

template <class Act, int W>
__global__ void dense_adjoint_kernel(int w, const double* K, double b, double dt, const double* u,
                                     const double* lam_next, double* lam, int s) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::dense_adjoint_load(thr, bdim, w, K, sh);
  __syncthreads();
  kernels::dense_adjoint_compute<Act, W>(blk, thr, bdim, w, b, dt, u, lam_next, lam, s, sh);
}

template <int W>
__global__ void dense_adjoint_deriv_kernel(int w, const double* K, double dt, const double* deriv,
                                           const double* lam_next, double* lam, int s) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::dense_adjoint_deriv_load(thr, bdim, w, K, sh);
  __syncthreads();
  kernels::dense_adjoint_deriv_compute<W>(blk, thr, bdim, w, dt, deriv, lam_next, lam, s, sh);
}

template <class Act, int W>
__global__ void block_propagate_kernel(kernels::PropagateArgs a) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  double cur[kernels::kMaxWidth];
  kernels::block_propagate_begin(blk, thr, bdim, a.w, a.s, a.iv, cur);
  const int steps = kernels::block_propagate_steps(blk, a.iv);
  for (int k = 0; k < steps; ++k) {
    kernels::block_propagate_load(k, blk, thr, bdim, a, sh);
    __syncthreads();
    kernels::block_propagate_step<Act, W>(k, blk, thr, bdim, a, sh, cur);
    __syncthreads();
  }
}

template <int W>
__global__ void block_adjoint_kernel(kernels::AdjointPropagateArgs a) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  double cur[kernels::kMaxWidth];
  kernels::block_propagate_begin(blk, thr, bdim, a.w, a.s, a.iv, cur);
  const int steps = kernels::block_propagate_steps(blk, a.iv);
  for (int k = 0; k < steps; ++k) {
    kernels::block_adjoint_load(k, blk, thr, bdim, a, sh);
    __syncthreads();
    kernels::block_adjoint_step<W>(k, blk, thr, bdim, a, sh, cur);
    __syncthreads();
  }
}

template <class Act, int W>
__global__ void layer_gradient_kernel(int w, const double* K, double b, const double* u, const double* lam_next,
                                      const double* deriv, int s, double gscale, double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::layer_gradient_load(thr, bdim, w, K, deriv, sh);
  __syncthreads();
  kernels::layer_gradient_rows<Act, W>(blk, thr, bdim, w, b, u, lam_next, deriv, s, sh);
  __syncthreads();
  kernels::layer_gradient_entries(blk, thr, bdim, w, u, s, gscale, sh, partial);
}

__global__ void classifier_kernel(int w, int nc, const double* Wc, const double* mu, const double* U,
                                  const std::int64_t* labels, int s, double scale, double* lam, bool grad,
                                  double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::classifier_rows(blk, thr, bdim, w, nc, Wc, mu, U, labels, s, scale, lam, sh);
  __syncthreads();
  kernels::classifier_entries(blk, thr, bdim, w, nc, U, s, grad, sh, partial);
}

__global__ void sumsq_kernel(const double* a, const double* b, long long n, double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::sumsq_load(blk, thr, bdim, idx3(gridDim), a, b, n, sh);
  __syncthreads();
  for (int stride = bdim.x / 2; stride > 0; stride /= 2) {
    kernels::sumsq_tree(thr, stride, sh);
    __syncthreads();
  }
  kernels::sumsq_store(blk, thr, sh, partial);
}

__global__ void sumsq_batch_kernel(const double* const* a, const double* const* b, long long n, double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  const Idx3 gdim = idx3(gridDim);
  kernels::sumsq_load(blk, thr, bdim, gdim, a[blk.y], b[blk.y], n, sh);
  __syncthreads();
  for (int stride = bdim.x / 2; stride > 0; stride /= 2) {
    kernels::sumsq_tree(thr, stride, sh);
    __syncthreads();
  }
  kernels::sumsq_batch_store(blk, thr, gdim, sh, partial);
}

__global__ void sum_rows_kernel(const double* partial, int rows, int len, double* out) {
  LP_KERNEL_INDICES;
  kernels::sum_rows(blk, thr, bdim, partial, rows, len, out);
}

__global__ void sum_partials_kernel(const double* partial, int nblocks, int len, kernels::PartialTargets t) {
  LP_KERNEL_INDICES;
  kernels::sum_partials(blk, thr, bdim, partial, nblocks, len, t);
}

template <class Act, int W>
__global__ void layer_derivs_kernel(kernels::LayerDerivArgs a) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::layer_derivs_load(blk, thr, bdim, a, sh);
  __syncthreads();
  kernels::layer_derivs_compute<Act, W>(blk, thr, bdim, a, sh);
}

__global__ void elementwise_batch_kernel(kernels::ElementBatchArgs e) {
  LP_KERNEL_INDICES;
  kernels::elementwise_batch(blk, thr, bdim, idx3(gridDim), e);
}

__global__ void elementwise_kernel(kernels::ElementArgs e) {
  LP_KERNEL_INDICES;
  kernels::elementwise(blk, thr, bdim, idx3(gridDim), e);
}

template <class Act>
__global__ void wide_epilogue_kernel(kernels::WideArgs a) {
  LP_KERNEL_INDICES;
  kernels::wide_epilogue<Act>(blk, thr, bdim, idx3(gridDim), a);
}

__global__ void dot_kernel(const double* a, const double* b, long long n, double scale, double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::dot_load(blk, thr, bdim, idx3(gridDim), a, b, n, scale, sh);
  __syncthreads();
  for (int stride = bdim.x / 2; stride > 0; stride /= 2) {
    kernels::sumsq_tree(thr, stride, sh);
    __syncthreads();
  }
  kernels::sumsq_store(blk, thr, sh, partial);
}

template <class Act>
__global__ void opening_kernel(int w, int nf, const double* W, const double* b, const double* X, double* U0, int s) {
  LP_KERNEL_INDICES;
  kernels::opening_compute<Act>(blk, thr, bdim, w, nf, W, b, X, U0, s);
}

template <class Act>
__global__ void opening_gradient_kernel(int w, int nf, const double* W, const double* b, const double* X,
                                        const double* lam0, int s, double* partial) {
  extern __shared__ double sh[];
  LP_KERNEL_INDICES;
  kernels::opening_gradient_rows<Act>(blk, thr, bdim, w, nf, W, b, X, lam0, s, sh);
  __syncthreads();
  kernels::opening_gradient_entries(blk, thr, bdim, w, nf, X, s, sh, partial);
}

// ------------------------------------------------------------------ host helpers

// Compile-time widths for the common narrow layers (state in registers); others run with a runtime width.
template <class F>
void dispatch(Activation a, int w, F&& f) {
  auto with_w = [&](auto A) { kernels::with_kernel_width(w, [&](auto WC) { f(A, WC); }); };
  switch (a) {
    case Activation::Tanh: with_w(TanhAct{}); break;
    case Activation::Relu: with_w(ReluAct{}); break;
    case Activation::SmoothRelu: with_w(SmoothReluAct{}); break;
    default: LP_REQUIRE(false, "unknown activation code " << static_cast<int>(a));
  }
}

// Chains flattened (detail::flatten_chains) and uploaded into one device
// buffer, which IntervalSteps points into. The buffer must stay alive until the
// kernels that read it are done; reusing it is safe on the default stream, whose
// next copy waits for the kernels before it.
kernels::IntervalSteps upload_chains(const detail::FlatChains& f, DeviceBuffer<char>& buf) {
  const std::size_t n_start = f.step_start.size(), n_idx = f.idx.size(), n_in = f.in.size(), n_out = f.out.size();
  auto align8 = [](std::size_t b) { return (b + 7) / 8 * 8; };
  const std::size_t o_idx = align8(n_start * sizeof(int));
  const std::size_t o_in = o_idx + align8(n_idx * sizeof(int));
  const std::size_t o_out = o_in + n_in * sizeof(double*);
  const std::size_t o_rhs = o_out + n_out * sizeof(double*);
  const std::size_t total = o_rhs + (f.any_rhs ? n_out * sizeof(double*) : 0);
  std::vector<char> host(total);
  std::memcpy(host.data(), f.step_start.data(), n_start * sizeof(int));
  std::memcpy(host.data() + o_idx, f.idx.data(), n_idx * sizeof(int));
  std::memcpy(host.data() + o_in, f.in.data(), n_in * sizeof(double*));
  std::memcpy(host.data() + o_out, f.out.data(), n_out * sizeof(double*));
  if (f.any_rhs) std::memcpy(host.data() + o_rhs, f.rhs.data(), n_out * sizeof(double*));
  if (buf.size() < total) buf = DeviceBuffer<char>(std::max(total, 2 * buf.size()));
  buf.upload(host.data(), total);
  char* d = buf.data();
  kernels::IntervalSteps iv;
  iv.intervals = static_cast<int>(n_in);
  iv.step_start = reinterpret_cast<const int*>(d);
  iv.idx = reinterpret_cast<const int*>(d + o_idx);
  iv.in = reinterpret_cast<const double* const*>(d + o_in);
  iv.out = reinterpret_cast<double* const*>(d + o_out);
  iv.rhs = f.any_rhs ? reinterpret_cast<const double* const*>(d + o_rhs) : nullptr;
  return iv;
}

// Adds the per-block partials (nblocks rows of len) in block order into the targets.
void launch_sum_partials(const double* partial, int nblocks, int len, const kernels::PartialTargets& t) {
  kernels::plan_sum_partials(len).each(
      [&](const Launch& l) { LP_CUDA_LAUNCH_AT(sum_partials_kernel, l, partial, nblocks, len, t); });
}

// A grid-stride tree reduction (plan_tree_reduce) of `kernel` (sumsq_kernel or
// dot_kernel, called with args..., partial) added into *dst (device) in block order.
template <class Kernel, class... Args>
void tree_reduce(std::size_t n, double* dst, Kernel kernel, Args... args) {
  const LaunchPlan p = kernels::plan_tree_reduce(static_cast<long long>(n));
  DeviceBuffer<double> partial(p.partial_doubles(1));
  p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kernel, l, args..., partial.data()); });
  launch_sum_partials(partial.data(), p.blocks, 1, kernels::scalar_target(dst));
  LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
}

}  // namespace

// ------------------------------------------------------------------ operations

namespace cuda_ops {

void require_narrow_width(int w) {
  LP_REQUIRE(w >= 1 && w <= kernels::kMaxWidth,
             "the one-thread-per-example CUDA kernels take widths 1.." << kernels::kMaxWidth
                                                << " (DenseResNet on a device backend runs wider layers through cuBLAS), got " << w);
}

void dense_step(Activation act, int w, const double* K, double b, double dt, const double* in, double* out, int s) {
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = dense_step_kernel<decltype(A), decltype(WC)::value>;
    kernels::plan_dense_step(w, s).each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, w, K, b, dt, in, out, s); });
  });
}

void dense_adjoint(Activation act, int w, const double* K, double b, double dt, const double* u,
                   const double* lam_next, double* lam, int s, const double* deriv) {
  const LaunchPlan p = kernels::plan_dense_adjoint(w, s, deriv != nullptr);
  dispatch(act, w, [&](auto A, auto WC) {
    constexpr int W = decltype(WC)::value;
    if (deriv) {
      auto kern = dense_adjoint_deriv_kernel<W>;
      p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, w, K, dt, deriv, lam_next, lam, s); });
    } else {
      auto kern = dense_adjoint_kernel<decltype(A), W>;
      p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, w, K, b, dt, u, lam_next, lam, s); });
    }
  });
}

void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                     const Propagator::Chain* chains, int n, DeviceBuffer<char>& scratch) {
  const detail::FlatChains f = detail::flatten_chains(chains, n);
  kernels::PropagateArgs a;
  a.w = w;
  a.s = s;
  a.h = h;
  a.K = K;
  a.bias = bias;
  a.iv = upload_chains(f, scratch);
  const LaunchPlan p = kernels::plan_block_propagate(w, s, n);
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = block_propagate_kernel<decltype(A), decltype(WC)::value>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, kernels::for_launch(a, l)); });
  });
}

void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                   const Propagator::Chain* chains, int n, DeviceBuffer<char>& scratch) {
  const detail::FlatChains f = detail::flatten_chains(chains, n);
  kernels::AdjointPropagateArgs a;
  a.w = w;
  a.s = s;
  a.layers = layers;
  a.h = h;
  a.K = K;
  a.deriv = deriv;
  a.first = first;
  a.iv = upload_chains(f, scratch);
  const LaunchPlan p = kernels::plan_block_adjoint(w, s, n);
  dispatch(Activation::Tanh, w, [&](auto, auto WC) {
    auto kern = block_adjoint_kernel<decltype(WC)::value>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, kernels::for_launch(a, l)); });
  });
}

void layer_derivs(Activation act, const kernels::LayerDerivArgs& a, int count) {
  const LaunchPlan p = kernels::plan_layer_derivs(a.w, a.s, count);
  dispatch(act, a.w, [&](auto A, auto WC) {
    auto kern = layer_derivs_kernel<decltype(A), decltype(WC)::value>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, kernels::for_launch(a, l)); });
  });
}

void layer_gradient(Activation act, int w, const double* K, double b, const double* u, const double* lam_next,
                    const double* deriv, int s, double* gK, double* gb, double gscale) {
  const LaunchPlan p = kernels::plan_layer_gradient(w, s);
  const int len = kernels::layer_gradient_len(w);
  DeviceBuffer<double> partial(p.partial_doubles(len));
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = layer_gradient_kernel<decltype(A), decltype(WC)::value>;
    p.each([&](const Launch& l) {
      LP_CUDA_LAUNCH_AT(kern, l, w, K, b, u, lam_next, deriv, s, gscale, partial.data());
    });
  });
  launch_sum_partials(partial.data(), p.blocks, len, kernels::layer_gradient_targets(w, gK, gb));
  LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
}

double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                  int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) {
  const bool grad = gW != nullptr;
  const LaunchPlan p = kernels::plan_classifier(nc, s);
  const int len = kernels::classifier_len(w, nc, grad);
  DeviceBuffer<double> partial(p.partial_doubles(len)), totals(2);
  totals.zero();
  p.each([&](const Launch& l) {
    LP_CUDA_LAUNCH_AT(classifier_kernel, l, w, nc, Wc, mu, U, labels, s, scale, lam, grad, partial.data());
  });
  launch_sum_partials(partial.data(), p.blocks, len, kernels::classifier_targets(w, nc, totals.data(), gW, gmu));
  double host[2];
  totals.download(host, 2);  // synchronises
  if (correct) *correct = static_cast<std::int64_t>(host[1]);
  return host[0];
}

void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                   int s) {
  dispatch(act, 0, [&](auto A, auto) {
    auto kern = opening_kernel<decltype(A)>;
    kernels::plan_dense_opening(s).each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, w, nf, W, b, X, U0, s); });
  });
}

void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                            const double* lam0, int s, double* gW, double* gb) {
  const LaunchPlan p = kernels::plan_opening_gradient(w, s);
  const int len = kernels::opening_gradient_len(w, nf);
  DeviceBuffer<double> partial(p.partial_doubles(len));
  dispatch(act, 0, [&](auto A, auto) {
    auto kern = opening_gradient_kernel<decltype(A)>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, w, nf, W, b, X, lam0, s, partial.data()); });
  });
  launch_sum_partials(partial.data(), p.blocks, len, kernels::matrix_bias_targets(w * nf, gW, gb));
  LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
}

double sum_sq(const double* a, const double* b, std::size_t n) {
  if (n == 0) return 0.0;
  DeviceBuffer<double> total(1);
  total.zero();
  tree_reduce(n, total.data(), sumsq_kernel, a, b, static_cast<long long>(n));
  double host = 0.0;
  total.download(&host, 1);
  return host;
}

void sum_sq_batch(const double* const* a, const double* const* b, int count, std::size_t n, double* out) {
  // Row q reduces a[q] - b[q] over the same blocks as sum_sq, then sum_rows adds each row.
  const LaunchPlan p = kernels::plan_tree_reduce(static_cast<long long>(n), count);
  DeviceBuffer<double> partial(p.partial_doubles(1));
  p.each([&](const Launch& l) {
    LP_CUDA_LAUNCH_AT(sumsq_batch_kernel, l, kernels::rows_from(a, l), kernels::rows_from(b, l),
                      static_cast<long long>(n), kernels::partial_rows_for_launch(partial.data(), l));
  });
  kernels::plan_sum_rows(count).each(
      [&](const Launch& l) { LP_CUDA_LAUNCH_AT(sum_rows_kernel, l, partial.data(), count, p.blocks, out); });
  LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
}

void elementwise(const kernels::ElementArgs& e) {
  kernels::plan_elementwise(e.n).each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(elementwise_kernel, l, e); });
}

void elementwise_batch(const kernels::ElementBatchArgs& e, int count) {
  kernels::plan_elementwise(e.n, count).each(
      [&](const Launch& l) { LP_CUDA_LAUNCH_AT(elementwise_batch_kernel, l, kernels::for_launch(e, l)); });
}

void wide_epilogue(Activation act, const kernels::WideArgs& a, int count) {
  const LaunchPlan p = kernels::plan_wide_epilogue(a.w, a.s, count);
  dispatch(act, 0, [&](auto A, auto) {
    auto kern = wide_epilogue_kernel<decltype(A)>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, kernels::for_launch(a, l)); });
  });
}

void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst) {
  if (n == 0) return;
  tree_reduce(n, dst, dot_kernel, a, b, static_cast<long long>(n), scale);
}

}  // namespace cuda_ops

}  // namespace layerparallel
