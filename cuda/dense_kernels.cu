// CUDA kernels of the dense residual layer and their host launch wrappers.
// Each __global__ kernel only maps blockIdx/threadIdx/blockDim/gridDim onto the
// bodies of dense_kernels_impl.h and puts __syncthreads() between their phases;
// all arithmetic lives in those bodies (tested on the CPU by
// tests/cpp/test_kernel_harness.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cuda_check.cuh"
#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/dense_kernels_impl.h"

namespace layerparallel {

namespace {

using kernels::Idx3;

LP_DEVICE inline Idx3 idx3(const uint3& v) { return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)}; }
LP_DEVICE inline Idx3 idx3(const dim3& v) { return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)}; }

#define LP_KERNEL_INDICES                        \
  const Idx3 blk = idx3(blockIdx);               \
  const Idx3 thr = idx3(threadIdx);              \
  const Idx3 bdim = idx3(blockDim);              \
  (void)blk;                                     \
  (void)thr;                                     \
  (void)bdim

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

void require_cuda(const char* what) {
  if (!cuda_available()) throw std::runtime_error(std::string(what) + " cannot run: " + cuda_status());
}

void require_width(int w) {
  LP_REQUIRE(w >= 1 && w <= kernels::kMaxWidth,
             "the one-thread-per-example CUDA kernels take widths 1.." << kernels::kMaxWidth
                                                << " (DeviceDenseResNet runs wider layers through cuBLAS), got " << w);
}

int blocks_for(long long n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

std::size_t shared_bytes(int doubles) { return static_cast<std::size_t>(doubles) * sizeof(double); }

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
// kernel that reads it is done; reusing it is safe on the default stream, whose
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

// The host-vector form of the free wrappers as chains (pointers into idx and outs).
std::vector<Propagator::Chain> as_chains(const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                                         const std::vector<std::vector<double*>>& outs) {
  LP_REQUIRE(in.size() == idx.size() && outs.size() == idx.size(),
             "block propagation needs one start state and one output list per interval, got "
                 << idx.size() << " index lists, " << in.size() << " start states and " << outs.size()
                 << " output lists");
  std::vector<Propagator::Chain> c;
  for (std::size_t q = 0; q < idx.size(); ++q) {
    const int count = static_cast<int>(idx[q].size()) - 1;
    LP_REQUIRE(count >= 1 && static_cast<int>(outs[q].size()) == count,
               "interval " << q << " needs at least 2 indices and one output per step, got " << idx[q].size()
                           << " indices and " << outs[q].size() << " outputs");
    c.push_back({idx[q].data(), count, in[q], outs[q].data(), nullptr});
  }
  return c;
}

void launch_block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                            const Propagator::Chain* chains, int n, DeviceBuffer<char>& scratch) {
  const detail::FlatChains f = detail::flatten_chains(chains, n);
  kernels::PropagateArgs a;
  a.w = w;
  a.s = s;
  a.h = h;
  a.K = K;
  a.bias = bias;
  a.iv = upload_chains(f, scratch);
  const dim3 grid(blocks_for(s, kernels::kStepThreads), n);
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = block_propagate_kernel<decltype(A), decltype(WC)::value>;
    LP_CUDA_LAUNCH(kern, grid, kernels::kStepThreads, shared_bytes(kernels::block_propagate_shared(w)), a);
  });
}

void launch_block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
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
  const dim3 grid(blocks_for(s, kernels::kStepThreads), n);
  dispatch(Activation::Tanh, w, [&](auto, auto WC) {
    auto kern = block_adjoint_kernel<decltype(WC)::value>;
    LP_CUDA_LAUNCH(kern, grid, kernels::kStepThreads, shared_bytes(kernels::block_adjoint_shared(w)), a);
  });
}

// Adds the per-block partials (nblocks rows of len) in block order into the targets.
void launch_sum_partials(const double* partial, int nblocks, int len, const kernels::PartialTargets& t) {
  const int threads = 128;
  LP_CUDA_LAUNCH(sum_partials_kernel, blocks_for(len, threads), threads, 0, partial, nblocks, len, t);
}

}  // namespace

// ------------------------------------------------------------------ wrappers

void cuda_dense_step(Activation act, int w, const double* K, double b, double dt, const double* in, double* out,
                     int s) {
  require_cuda("cuda_dense_step");
  require_width(w);
  if (s <= 0) return;
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = dense_step_kernel<decltype(A), decltype(WC)::value>;
    LP_CUDA_LAUNCH(kern, blocks_for(s, kernels::kStepThreads), kernels::kStepThreads,
                   shared_bytes(kernels::dense_step_shared(w)), w, K, b, dt, in, out, s);
  });
}

void cuda_dense_adjoint_step(Activation act, int w, const double* K, double b, double dt, const double* u,
                             const double* lam_next, double* lam, int s, const double* deriv) {
  require_cuda("cuda_dense_adjoint_step");
  require_width(w);
  if (s <= 0) return;
  const int blocks = blocks_for(s, kernels::kStepThreads);
  dispatch(act, w, [&](auto A, auto WC) {
    constexpr int W = decltype(WC)::value;
    if (deriv) {
      auto kern = dense_adjoint_deriv_kernel<W>;
      LP_CUDA_LAUNCH(kern, blocks, kernels::kStepThreads, shared_bytes(kernels::dense_adjoint_deriv_shared(w)), w, K,
                     dt, deriv, lam_next, lam, s);
    } else {
      auto kern = dense_adjoint_kernel<decltype(A), W>;
      LP_CUDA_LAUNCH(kern, blocks, kernels::kStepThreads, shared_bytes(kernels::dense_adjoint_shared(w)), w, K, b,
                     dt, u, lam_next, lam, s);
    }
  });
}

void cuda_block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                          const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                          const std::vector<std::vector<double*>>& outs) {
  require_cuda("cuda_block_propagate");
  require_width(w);
  if (s <= 0) return;
  const std::vector<Propagator::Chain> c = as_chains(idx, in, outs);
  DeviceBuffer<char> scratch;
  launch_block_propagate(act, w, s, h, K, bias, c.data(), static_cast<int>(c.size()), scratch);
  // The interval arrays are freed on return: wait for the kernel that reads them.
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_block_adjoint_propagate(int w, int s, int layers, double h, const double* K, const double* deriv,
                                  const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                                  const std::vector<std::vector<double*>>& outs) {
  require_cuda("cuda_block_adjoint_propagate");
  require_width(w);
  if (s <= 0) return;
  const std::vector<Propagator::Chain> c = as_chains(idx, in, outs);
  DeviceBuffer<char> scratch;
  launch_block_adjoint(w, s, layers, h, K, deriv, 0, c.data(), static_cast<int>(c.size()), scratch);
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_layer_gradient(Activation act, int w, const double* K, double b, const double* u, const double* lam_next,
                         int s, double* gK, double* gb, double gscale, const double* deriv) {
  require_cuda("cuda_layer_gradient");
  require_width(w);
  if (s <= 0) return;
  const int threads = kernels::kReduceThreads;
  const int blocks = blocks_for(s, threads);
  const int len = kernels::layer_gradient_len(w);
  DeviceBuffer<double> partial(static_cast<std::size_t>(blocks) * len);
  dispatch(act, w, [&](auto A, auto WC) {
    auto kern = layer_gradient_kernel<decltype(A), decltype(WC)::value>;
    LP_CUDA_LAUNCH(kern, blocks, threads, shared_bytes(kernels::layer_gradient_shared(w, threads)), w, K, b, u,
                   lam_next, deriv, s, gscale, partial.data());
  });
  launch_sum_partials(partial.data(), blocks, len, kernels::layer_gradient_targets(w, gK, gb));
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

double cuda_classifier_loss(int w, int nc, const double* Wc, const double* mu, const double* U,
                            const std::int64_t* labels, int s, double scale, std::int64_t* correct, double* lam,
                            double* gW, double* gmu) {
  require_cuda("cuda_classifier_loss");
  kernels::require_classifier_shape(w, nc);
  if (s <= 0) {
    if (correct) *correct = 0;
    return 0.0;
  }
  const bool grad = gW != nullptr;
  const int threads = kernels::kReduceThreads;
  const int blocks = blocks_for(s, threads);
  const int len = kernels::classifier_len(w, nc, grad);
  DeviceBuffer<double> partial(static_cast<std::size_t>(blocks) * len), totals(2);
  totals.zero();
  LP_CUDA_LAUNCH(classifier_kernel, blocks, threads, shared_bytes(kernels::classifier_shared(nc, threads)), w, nc,
                 Wc, mu, U, labels, s, scale, lam, grad, partial.data());
  launch_sum_partials(partial.data(), blocks, len, kernels::classifier_targets(w, nc, totals.data(), gW, gmu));
  double host[2];
  totals.download(host, 2);  // synchronises
  if (correct) *correct = static_cast<std::int64_t>(host[1]);
  return host[0];
}

namespace {
// sum_k (a_k - b_k)^2 on the device, returned to the host (synchronises).
double device_sumsq(const double* a, const double* b, std::size_t n) {
  if (n == 0) return 0.0;
  const int threads = 256;
  const long long needed = (static_cast<long long>(n) + threads - 1) / threads;
  const int blocks = static_cast<int>(std::min<long long>(needed, kernels::kNormMaxBlocks));
  DeviceBuffer<double> partial(blocks), total(1);
  total.zero();
  LP_CUDA_LAUNCH(sumsq_kernel, blocks, threads, shared_bytes(threads), a, b, static_cast<long long>(n),
                 partial.data());
  launch_sum_partials(partial.data(), blocks, 1, kernels::scalar_target(total.data()));
  double host = 0.0;
  total.download(&host, 1);
  return host;
}
}  // namespace

double cuda_residual_norm(const double* a, const double* b, std::size_t n) {
  require_cuda("cuda_residual_norm");
  return std::sqrt(device_sumsq(a, b, n));
}

// ------------------------------------------------------------------ cuBLAS, loaded at run time
// The wide layers' GEMMs call cuBLAS. It is opened with dlopen on first use
// rather than linked, so a build needs no cuBLAS (this machine's toolkit has
// none) and a GPU machine uses its own (the CUDA toolkit's, or the
// nvidia-cublas wheel's, found through LD_LIBRARY_PATH or LP_CUBLAS_LIBRARY).
// The declarations are cuBLAS's documented C API (cublas_api.h, CUDA 12/13).

namespace {

struct CublasApi {
  using Handle = void*;  // cublasHandle_t (struct cublasContext*)
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*dgemm)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
               const double*, double*, int) = nullptr;
  int (*dgemm_batched)(Handle, int, int, int, int, int, const double*, const double* const*, int,
                       const double* const*, int, const double*, double* const*, int, int) = nullptr;
  std::string error;  // why cuBLAS cannot be used (empty when it can)
};

constexpr int kCublasOpN = 0, kCublasOpT = 1;  // CUBLAS_OP_N, CUBLAS_OP_T

CublasApi load_cublas() {
  CublasApi api;
  std::vector<std::string> names;
  if (const char* env = std::getenv("LP_CUBLAS_LIBRARY")) names.push_back(env);
  names.push_back("libcublas.so." + std::to_string(CUDART_VERSION / 1000));
  names.push_back("libcublas.so");
  void* lib = nullptr;
  for (const std::string& n : names)
    if ((lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
  if (lib == nullptr) {
    api.error = "cuBLAS was not found (tried " + names.front() + (names.size() > 1 ? ", " + names[1] : "") +
                "; install the CUDA toolkit or `pip install nvidia-cublas`, or set LP_CUBLAS_LIBRARY to the "
                "library's path)";
    return api;
  }
  api.create = reinterpret_cast<decltype(api.create)>(dlsym(lib, "cublasCreate_v2"));
  api.destroy = reinterpret_cast<decltype(api.destroy)>(dlsym(lib, "cublasDestroy_v2"));
  api.dgemm = reinterpret_cast<decltype(api.dgemm)>(dlsym(lib, "cublasDgemm_v2"));
  api.dgemm_batched = reinterpret_cast<decltype(api.dgemm_batched)>(dlsym(lib, "cublasDgemmBatched"));
  if (!api.create || !api.destroy || !api.dgemm || !api.dgemm_batched) {
    api.error = "the cuBLAS library found lacks cublasCreate_v2 / cublasDgemm_v2 / cublasDgemmBatched";
    return api;
  }
  return api;  // the library is never closed
}

// The function table, loaded once per process (handles are per backend: a
// cuBLAS handle must not be used by two host threads at once).
const CublasApi& cublas() {
  static const CublasApi api = load_cublas();
  if (!api.error.empty())
    throw std::runtime_error("layers wider than 32 (and the dense opening of networks wider than 32) on the GPU "
                             "need cuBLAS: " + api.error);
  return api;
}

void check_cublas(int status, const char* what) {
  if (status != 0) throw std::runtime_error(std::string(what) + " failed with cuBLAS status " + std::to_string(status));
}

}  // namespace

// ------------------------------------------------------------------ the device backend

namespace {

class CudaBackend final : public DeviceBackend {
 public:
  ~CudaBackend() override {
    if (handle_) cublas().destroy(handle_);  // created only after cublas() succeeded
  }
  std::string name() const override { return "cuda"; }

  double* allocate(std::size_t n) override {
    auto* p = static_cast<double*>(detail::cuda_malloc(n * sizeof(double)));
    detail::cuda_memset_zero(p, n * sizeof(double));
    return p;
  }
  void release(double* p) noexcept override { detail::cuda_free(p); }
  void* allocate_bytes(std::size_t bytes) override { return detail::cuda_malloc(std::max<std::size_t>(bytes, 1)); }
  void release_bytes(void* p) noexcept override { detail::cuda_free(p); }
  void upload_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes > 0) detail::cuda_copy_to_device(dst, src, bytes);
  }
  void upload(double* dst, const double* src, std::size_t n) override {
    if (n > 0) detail::cuda_copy_to_device(dst, src, n * sizeof(double));
  }
  void download(double* dst, const double* src, std::size_t n) const override {
    if (n > 0) detail::cuda_copy_to_host(dst, src, n * sizeof(double));
  }
  void copy(double* dst, const double* src, std::size_t n) override {
    if (dst != src && n > 0) LP_CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(double), cudaMemcpyDeviceToDevice));
  }
  void zero(double* dst, std::size_t n) override {
    if (n > 0) detail::cuda_memset_zero(dst, n * sizeof(double));
  }
  void add(double* dst, const double* a, std::size_t n) override { element({kernels::ElementOp::Add, dst, a, nullptr, ll(n)}); }
  void sum(double* dst, const double* a, const double* b, std::size_t n) override {
    element({kernels::ElementOp::Sum, dst, a, b, ll(n)});
  }
  void fas(double* g, const double* gf, const double* p, std::size_t n) override {
    element({kernels::ElementOp::Fas, g, gf, p, ll(n)});
  }
  void sum_batch(double* const* dst, const double* const* a, const double* const* b, int count,
                 std::size_t n) override {
    element_batch(kernels::ElementOp::Sum, dst, a, b, count, n);
  }
  void fas_batch(double* const* g, const double* const* gf, const double* const* p, int count,
                 std::size_t n) override {
    element_batch(kernels::ElementOp::Fas, g, gf, p, count, n);
  }
  double sum_sq_diff(const double* a, const double* b, std::size_t n) const override { return device_sumsq(a, b, n); }
  void synchronize() override { LP_CUDA_CHECK(cudaDeviceSynchronize()); }

  void sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                         double* out) const override {
    if (count <= 0) return;
    if (n == 0) {
      std::fill(out, out + count, 0.0);
      return;
    }
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<long long>((ll(n) + threads - 1) / threads, kernels::kNormMaxBlocks));
    for (int q0 = 0; q0 < count; q0 += 65535) {
      const int c = std::min(count - q0, 65535);
      std::vector<const double*> host(2 * static_cast<std::size_t>(c));
      std::copy_n(a + q0, c, host.begin());
      std::copy_n(b + q0, c, host.begin() + c);  // null entries stay null: the norm of a[q]
      DeviceBuffer<const double*> ptrs(host);
      DeviceBuffer<double> partial(static_cast<std::size_t>(blocks) * c), totals(c);
      LP_CUDA_LAUNCH(sumsq_batch_kernel, dim3(blocks, c), threads, shared_bytes(threads), ptrs.data(),
                     ptrs.data() + c, ll(n), partial.data());
      LP_CUDA_LAUNCH(sum_rows_kernel, blocks_for(c, 128), 128, 0, partial.data(), c, blocks, totals.data());
      totals.download(out + q0, c);  // synchronises before the buffers are freed
    }
  }

  void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                       const Propagator::Chain* chains, int n) override {
    require_width(w);
    if (s > 0) launch_block_propagate(act, w, s, h, K, bias, chains, n, scratch_);
  }
  void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                     const Propagator::Chain* chains, int n) override {
    require_width(w);
    if (s > 0) launch_block_adjoint(w, s, layers, h, K, deriv, first, chains, n, scratch_);
  }
  void layer_derivs(Activation act, int w, int s, const double* K, const double* bias, int first, int count,
                    const double* const* u, double* deriv) override {
    require_width(w);
    if (s <= 0 || count <= 0) return;
    LP_REQUIRE(count <= 65535, "one launch takes at most 65535 layers, got " << count);
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(double*);
    if (ptrs_.size() < bytes) ptrs_ = DeviceBuffer<char>(bytes);
    ptrs_.upload(reinterpret_cast<const char*>(u), bytes);
    kernels::LayerDerivArgs a;
    a.w = w;
    a.s = s;
    a.first = first;
    a.K = K;
    a.bias = bias;
    a.u = reinterpret_cast<const double* const*>(ptrs_.data());
    a.deriv = deriv;
    const dim3 grid(blocks_for(s, kernels::kStepThreads), count);
    dispatch(act, w, [&](auto A, auto WC) {
      auto kern = layer_derivs_kernel<decltype(A), decltype(WC)::value>;
      LP_CUDA_LAUNCH(kern, grid, kernels::kStepThreads, shared_bytes(kernels::layer_derivs_shared(w)), a);
    });
  }
  void layer_gradient(int w, int s, const double* u, const double* lam_next, const double* deriv, double* gK,
                      double* gb, double gscale) override {
    // With deriv given the activation, K and b are not read.
    cuda_layer_gradient(Activation::Tanh, w, nullptr, 0.0, u, lam_next, s, gK, gb, gscale, deriv);
  }
  double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                    int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) override {
    return cuda_classifier_loss(w, nc, Wc, mu, U, labels, s, scale, correct, lam, gW, gmu);
  }

  void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                     int s) override {
    if (s <= 0) return;
    dispatch(act, 0, [&](auto A, auto) {
      auto kern = opening_kernel<decltype(A)>;
      LP_CUDA_LAUNCH(kern, blocks_for(s, kernels::kStepThreads), kernels::kStepThreads, 0, w, nf, W, b, X, U0, s);
    });
  }

  void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              const double* lam0, int s, double* gW, double* gb) override {
    if (s <= 0) return;
    const int threads = kernels::kReduceThreads;
    const int blocks = blocks_for(s, threads);
    const int len = kernels::opening_gradient_len(w, nf);
    DeviceBuffer<double> partial(static_cast<std::size_t>(blocks) * len);
    dispatch(act, 0, [&](auto A, auto) {
      auto kern = opening_gradient_kernel<decltype(A)>;
      LP_CUDA_LAUNCH(kern, blocks, threads, shared_bytes(kernels::opening_gradient_shared(w, threads)), w, nf, W, b,
                     X, lam0, s, partial.data());
    });
    launch_sum_partials(partial.data(), blocks, len, kernels::matrix_bias_targets(w * nf, gW, gb));
    LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
  }

  void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                 const double* in, double* out, int s, double* deriv) override {
    cuda_conv_step(act, sh, K, bias, dt, in, out, s, deriv);
  }
  void conv_adjoint(const ConvShape& sh, const double* K, double dt, const double* deriv, const double* lam_next,
                    double* lam, int s) override {
    // With deriv given the activation, u and the bias are not read (lam_next stands in for u).
    cuda_conv_adjoint_step(Activation::Tanh, sh, K, nullptr, dt, lam_next, lam_next, lam, s, deriv);
  }
  void conv_gradient(const ConvShape& sh, const double* u, const double* lam_next, const double* deriv, int s,
                     double* gK, double* gb, double gscale) override {
    cuda_conv_layer_gradient(Activation::Tanh, sh, nullptr, nullptr, u, lam_next, s, gK, gb, gscale, deriv);
  }
  void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) override {
    cuda_replicate_opening(sh, pixels, U0, s);
  }

  void gemm_batched(bool ta, bool tb, int m, int n, int k, double alpha, const double* const* A, int lda,
                    const double* const* B, int ldb, double beta, double* const* C, int ldc, int batch) override {
    if (batch <= 0) return;
    const CublasApi& api = cublas();
    if (handle_ == nullptr) check_cublas(api.create(&handle_), "cublasCreate");
    const int opa = ta ? kCublasOpT : kCublasOpN, opb = tb ? kCublasOpT : kCublasOpN;
    if (batch == 1) {
      check_cublas(api.dgemm(handle_, opa, opb, m, n, k, &alpha, A[0], lda, B[0], ldb, &beta, C[0], ldc),
                   "cublasDgemm");
      return;
    }
    // The pointer arrays go to the device (one buffer: A, B, C).
    const std::size_t bytes = 3 * static_cast<std::size_t>(batch) * sizeof(double*);
    std::vector<const double*> host(3 * static_cast<std::size_t>(batch));
    std::copy_n(A, batch, host.begin());
    std::copy_n(B, batch, host.begin() + batch);
    for (int q = 0; q < batch; ++q) host[2 * batch + q] = C[q];
    if (gemm_ptrs_.size() < bytes) gemm_ptrs_ = DeviceBuffer<char>(bytes);
    gemm_ptrs_.upload(reinterpret_cast<const char*>(host.data()), bytes);
    auto* d = reinterpret_cast<const double* const*>(gemm_ptrs_.data());
    check_cublas(api.dgemm_batched(handle_, opa, opb, m, n, k, &alpha, d, lda, d + batch, ldb, &beta,
                                   const_cast<double* const*>(d + 2 * batch), ldc, batch),
                 "cublasDgemmBatched");
  }

  void wide_epilogue(Activation act, int w, int s, const WideBatch& wb) override {
    const int count = static_cast<int>(wb.out.size() ? wb.out.size() : wb.z.size());
    if (count == 0 || s <= 0) return;
    LP_REQUIRE(count <= 65535, "one epilogue launch takes at most 65535 entries, got " << count);
    // Seven arrays of `count` 8-byte entries (pointers and dt), empty ones left out.
    const std::size_t c = static_cast<std::size_t>(count);
    std::vector<char> host(7 * c * 8);
    auto put = [&](int slot, const void* src, std::size_t n) -> bool {
      if (n == 0) return false;
      std::memcpy(host.data() + slot * c * 8, src, c * 8);
      return true;
    };
    const bool ha = put(0, wb.a.data(), wb.a.size()), hb = put(1, wb.b.data(), wb.b.size()),
               hz = put(2, wb.z.data(), wb.z.size()), ho = put(3, wb.out.data(), wb.out.size()),
               hr = put(4, wb.rhs.data(), wb.rhs.size()), hd = put(5, wb.dt.data(), wb.dt.size()),
               hbias = put(6, wb.bias.data(), wb.bias.size());
    if (epi_.size() < host.size()) epi_ = DeviceBuffer<char>(host.size());
    epi_.upload(host.data(), host.size());
    char* d = epi_.data();
    auto at = [&](int slot) { return d + slot * c * 8; };
    kernels::WideArgs a;
    a.op = wb.op;
    a.w = w;
    a.s = s;
    a.a = ha ? reinterpret_cast<const double* const*>(at(0)) : nullptr;
    a.b = hb ? reinterpret_cast<const double* const*>(at(1)) : nullptr;
    a.z = hz ? reinterpret_cast<double* const*>(at(2)) : nullptr;
    a.out = ho ? reinterpret_cast<double* const*>(at(3)) : nullptr;
    a.rhs = hr ? reinterpret_cast<const double* const*>(at(4)) : nullptr;
    a.dt = hd ? reinterpret_cast<const double*>(at(5)) : nullptr;
    a.bias = hbias ? reinterpret_cast<const double* const*>(at(6)) : nullptr;
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<long long>((static_cast<long long>(s) * w + threads - 1) / threads, 1024));
    const dim3 grid(blocks, count);
    dispatch(act, 0, [&](auto A, auto) {
      auto kern = wide_epilogue_kernel<decltype(A)>;
      LP_CUDA_LAUNCH(kern, grid, threads, 0, a);
    });
  }

  void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst) override {
    if (n == 0) return;
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<long long>((ll(n) + threads - 1) / threads, kernels::kNormMaxBlocks));
    DeviceBuffer<double> partial(blocks);
    LP_CUDA_LAUNCH(dot_kernel, blocks, threads, shared_bytes(threads), a, b, ll(n), scale, partial.data());
    launch_sum_partials(partial.data(), blocks, 1, kernels::scalar_target(dst));
    LP_CUDA_CHECK(cudaDeviceSynchronize());  // `partial` is freed on return
  }

 private:
  static long long ll(std::size_t n) { return static_cast<long long>(n); }
  // One launch per 65535 entries; the three pointer arrays go up in one copy.
  void element_batch(kernels::ElementOp op, double* const* dst, const double* const* a, const double* const* b,
                     int count, std::size_t n) {
    if (n == 0) return;
    for (int q0 = 0; q0 < count; q0 += 65535) {
      const int c = std::min(count - q0, 65535);
      std::vector<const double*> host(3 * static_cast<std::size_t>(c));
      for (int q = 0; q < c; ++q) {
        host[q] = dst[q0 + q];
        host[c + q] = a[q0 + q];
        host[2 * c + q] = b[q0 + q];
      }
      const std::size_t bytes = host.size() * sizeof(double*);
      if (batch_ptrs_.size() < bytes) batch_ptrs_ = DeviceBuffer<char>(bytes);
      batch_ptrs_.upload(reinterpret_cast<const char*>(host.data()), bytes);
      auto* d = reinterpret_cast<const double* const*>(batch_ptrs_.data());
      kernels::ElementBatchArgs e;
      e.op = op;
      e.dst = reinterpret_cast<double* const*>(batch_ptrs_.data());
      e.a = d + c;
      e.b = d + 2 * c;
      e.n = ll(n);
      const int threads = 256;
      const dim3 grid(static_cast<unsigned>(std::min<long long>((e.n + threads - 1) / threads, 1024)),
                      static_cast<unsigned>(c));
      LP_CUDA_LAUNCH(elementwise_batch_kernel, grid, threads, 0, e);
    }
  }

  void element(const kernels::ElementArgs& e) {
    if (e.n <= 0) return;
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<long long>((e.n + threads - 1) / threads, 1024));
    LP_CUDA_LAUNCH(elementwise_kernel, blocks, threads, 0, e);
  }
  DeviceBuffer<char> scratch_;  // chain arrays of the last block launch
  DeviceBuffer<char> ptrs_;     // state pointers of the last layer_derivs launch
  DeviceBuffer<char> gemm_ptrs_;  // pointer arrays of the last batched GEMM
  DeviceBuffer<char> batch_ptrs_;  // pointer arrays of the last batched state operation
  CublasApi::Handle handle_ = nullptr;  // this backend's cuBLAS handle (created on first use)
  DeviceBuffer<char> epi_;        // argument arrays of the last wide epilogue
};

}  // namespace

std::unique_ptr<DeviceBackend> make_cuda_backend() {
  require_cuda("the CUDA device backend");
  // One device per process (launches come from the thread that built the backend).
  int count = 0;
  LP_CUDA_CHECK(cudaGetDeviceCount(&count));
  LP_CUDA_CHECK(cudaSetDevice(pick_cuda_device(count)));
  return std::make_unique<CudaBackend>();
}

}  // namespace layerparallel
