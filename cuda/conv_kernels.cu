// CUDA kernels of the 3x3 convolutional residual layer and their operations
// (kernel_ops.h), every launch taken from the operation's plan (launch_plan.h).
// Each __global__ kernel only maps blockIdx/threadIdx/blockDim/gridDim onto the
// bodies of conv_kernels_impl.h and puts __syncthreads() between their phases;
// all arithmetic lives in those bodies (tested on the CPU by
// tests/cpp/test_conv_harness.cpp).
#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "kernel_ops.h"
#include "launch.cuh"
#include "layerparallel/conv_kernels_impl.h"
#include "layerparallel/cuda.h"
#include "layerparallel/launch_plan.h"

namespace layerparallel {

namespace {

using kernels::Idx3;
using kernels::Launch;
using kernels::LaunchPlan;

// ------------------------------------------------------------------ kernels

template <class Act>
__global__ void conv_step_kernel(ConvShape sh, const double* K, const double* bias, double dt, const double* in,
                                 double* out, int s, double* deriv) {
  kernels::conv_step_channel<Act>(idx3(blockIdx), idx3(threadIdx), idx3(blockDim), sh, K, bias, dt, in, out, s,
                                  deriv);
}

template <class Act>
__global__ void conv_adjoint_kernel(ConvShape sh, const double* K, const double* bias, double dt, const double* u,
                                    const double* deriv, const double* lam_next, double* lam, int s,
                                    double* scratch) {
  kernels::conv_adjoint_examples<Act>(idx3(blockIdx), idx3(threadIdx), idx3(blockDim), idx3(gridDim), sh, K, bias,
                                      dt, u, deriv, lam_next, lam, s, scratch);
}

template <class Act>
__global__ void conv_gradient_kernel(ConvShape sh, const double* K, const double* bias, const double* u,
                                     const double* lam_next, const double* deriv, int s, double gscale,
                                     double* scratch, double* partial) {
  const Idx3 blk = idx3(blockIdx), thr = idx3(threadIdx), bdim = idx3(blockDim), gdim = idx3(gridDim);
  const int rounds = kernels::conv_gradient_rounds(s, bdim, gdim);
  for (int r = 0; r < rounds; ++r) {
    kernels::conv_gradient_rows<Act>(r, blk, thr, bdim, gdim, sh, K, bias, u, lam_next, deriv, s, scratch);
    __syncthreads();
    kernels::conv_gradient_entries(r, blk, thr, bdim, gdim, sh, u, s, gscale, scratch, partial);
    __syncthreads();
  }
}

__global__ void conv_gradient_sum_kernel(ConvShape sh, const double* partial, int nblocks, double* gK, double* gb) {
  kernels::conv_gradient_sum(idx3(blockIdx), idx3(threadIdx), idx3(blockDim), sh, partial, nblocks, gK, gb);
}

__global__ void replicate_opening_kernel(ConvShape sh, const double* pixels, double* U0, int s) {
  kernels::replicate_opening_examples(idx3(blockIdx), idx3(threadIdx), idx3(blockDim), sh, pixels, U0, s);
}

}  // namespace

// ------------------------------------------------------------------ operations

namespace cuda_ops {

void require_conv_shape(const ConvShape& sh) {
  LP_REQUIRE(sh.C >= 1 && sh.H >= 1 && sh.W >= 1,
             "a convolutional layer needs C, H, W >= 1, got " << sh.C << ", " << sh.H << ", " << sh.W);
}

void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt, const double* in,
               double* out, int s, double* deriv) {
  const LaunchPlan p = kernels::plan_conv_step(sh, s);
  with_activation(act, [&](auto A) {
    auto kern = conv_step_kernel<decltype(A)>;
    p.each([&](const Launch& l) { LP_CUDA_LAUNCH_AT(kern, l, sh, K, bias, dt, in, out, s, deriv); });
  });
}

void conv_adjoint(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                  const double* u, const double* lam_next, double* lam, int s, const double* deriv) {
  const LaunchPlan p = kernels::plan_conv_adjoint(s);
  DeviceBuffer<double> scratch(p.row_threads() * kernels::conv_adjoint_scratch(sh));
  with_activation(act, [&](auto A) {
    auto kern = conv_adjoint_kernel<decltype(A)>;
    p.each([&](const Launch& l) {
      LP_CUDA_LAUNCH_AT(kern, l, sh, K, bias, dt, u, deriv, lam_next, lam, s, scratch.data());
    });
  });
  // The scratch is freed on return: wait for the kernel that uses it.
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void conv_gradient(Activation act, const ConvShape& sh, const double* K, const double* bias, const double* u,
                   const double* lam_next, int s, double* gK, double* gb, double gscale, const double* deriv) {
  const LaunchPlan p = kernels::plan_conv_gradient(s);
  DeviceBuffer<double> scratch(p.row_threads() * static_cast<std::size_t>(sh.size()));
  DeviceBuffer<double> partial(p.partial_doubles(kernels::conv_gradient_len(sh)));
  with_activation(act, [&](auto A) {
    auto kern = conv_gradient_kernel<decltype(A)>;
    p.each([&](const Launch& l) {
      LP_CUDA_LAUNCH_AT(kern, l, sh, K, bias, u, lam_next, deriv, s, gscale, scratch.data(), partial.data());
    });
  });
  kernels::plan_conv_gradient_sum(sh).each([&](const Launch& l) {
    LP_CUDA_LAUNCH_AT(conv_gradient_sum_kernel, l, sh, partial.data(), p.blocks, gK, gb);
  });
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) {
  kernels::plan_replicate_opening(s).each(
      [&](const Launch& l) { LP_CUDA_LAUNCH_AT(replicate_opening_kernel, l, sh, pixels, U0, s); });
}

}  // namespace cuda_ops

}  // namespace layerparallel
