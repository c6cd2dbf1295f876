// CUDA kernels of the 3x3 convolutional residual layer and their host launch
// wrappers. Each __global__ kernel only maps blockIdx/threadIdx/blockDim/gridDim
// onto the bodies of conv_kernels_impl.h and puts __syncthreads() between their
// phases; all arithmetic lives in those bodies (tested on the CPU by
// tests/cpp/test_conv_harness.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "layerparallel/conv_kernels_impl.h"
#include "layerparallel/cuda.h"

namespace layerparallel {

namespace {

using kernels::Idx3;

LP_DEVICE inline Idx3 idx3(const uint3& v) { return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)}; }
LP_DEVICE inline Idx3 idx3(const dim3& v) { return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)}; }

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

// ------------------------------------------------------------------ host helpers

void require_cuda(const char* what) {
  if (!cuda_available()) throw std::runtime_error(std::string(what) + " cannot run: " + cuda_status());
}

void require_shape(const ConvShape& sh) {
  LP_REQUIRE(sh.C >= 1 && sh.H >= 1 && sh.W >= 1,
             "a convolutional layer needs C, H, W >= 1, got " << sh.C << ", " << sh.H << ", " << sh.W);
}

int blocks_for(long long n, int threads) { return static_cast<int>((n + threads - 1) / threads); }


}  // namespace

// ------------------------------------------------------------------ wrappers

void cuda_conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                    const double* in, double* out, int s, double* deriv) {
  require_cuda("cuda_conv_step");
  require_shape(sh);
  if (s <= 0) return;
  const int threads = kernels::kConvThreads;
  const int blocks = blocks_for(static_cast<long long>(s) * sh.C, threads);
  with_activation(act, [&](auto A) {
    auto kern = conv_step_kernel<decltype(A)>;
    LP_CUDA_LAUNCH(kern, blocks, threads, 0, sh, K, bias, dt, in, out, s, deriv);
  });
}

void cuda_conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                            const double* u, const double* lam_next, double* lam, int s, const double* deriv) {
  require_cuda("cuda_conv_adjoint_step");
  require_shape(sh);
  if (s <= 0) return;
  const int threads = kernels::kConvThreads;
  const int blocks = std::min(blocks_for(s, threads), kernels::kConvMaxBlocks);
  DeviceBuffer<double> scratch(static_cast<std::size_t>(blocks) * threads * kernels::conv_adjoint_scratch(sh));
  with_activation(act, [&](auto A) {
    auto kern = conv_adjoint_kernel<decltype(A)>;
    LP_CUDA_LAUNCH(kern, blocks, threads, 0, sh, K, bias, dt, u, deriv, lam_next, lam, s, scratch.data());
  });
  // The scratch is freed on return: wait for the kernel that uses it.
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_conv_layer_gradient(Activation act, const ConvShape& sh, const double* K, const double* bias,
                              const double* u, const double* lam_next, int s, double* gK, double* gb, double gscale,
                              const double* deriv) {
  require_cuda("cuda_conv_layer_gradient");
  require_shape(sh);
  if (s <= 0) return;
  const int threads = kernels::kConvGradThreads;
  const int blocks = std::min(blocks_for(s, threads), kernels::kConvMaxBlocks);
  DeviceBuffer<double> scratch(static_cast<std::size_t>(blocks) * threads * sh.size());
  DeviceBuffer<double> partial(static_cast<std::size_t>(blocks) * kernels::conv_gradient_len(sh));
  with_activation(act, [&](auto A) {
    auto kern = conv_gradient_kernel<decltype(A)>;
    LP_CUDA_LAUNCH(kern, blocks, threads, 0, sh, K, bias, u, lam_next, deriv, s, gscale, scratch.data(),
                   partial.data());
  });
  const int sum_threads = 128;
  LP_CUDA_LAUNCH(conv_gradient_sum_kernel, blocks_for(kernels::conv_gradient_out_len(sh), sum_threads), sum_threads,
                 0, sh, partial.data(), blocks, gK, gb);
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) {
  require_cuda("cuda_replicate_opening");
  require_shape(sh);
  if (s <= 0) return;
  const int threads = kernels::kConvThreads;
  LP_CUDA_LAUNCH(replicate_opening_kernel, blocks_for(s, threads), threads, 0, sh, pixels, U0, s);
}

}  // namespace layerparallel
