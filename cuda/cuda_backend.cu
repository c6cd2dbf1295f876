// The "cuda" device backend (CudaBackend): device memory as a StateSpace, the
// kernel operations of kernel_ops.h (every launch from launch_plan.h's plans,
// the launches EmulatedBackend runs on the CPU) and the wide layers' GEMMs in
// cuBLAS (cublas_loader.h). Host arrays of device pointers go up into buffers
// the backend keeps, reused call after call: the default stream orders each
// upload after the kernels that read the previous contents.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cublas_loader.h"
#include "cuda_check.cuh"
#include "kernel_ops.h"
#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/launch_plan.h"

namespace layerparallel {

namespace {

void require_cuda(const char* what) {
  if (!cuda_available()) throw std::runtime_error(std::string(what) + " cannot run: " + cuda_status());
}

// Uploads `bytes` of host data into buf (grown when too small); returns its device address.
char* upload_into(DeviceBuffer<char>& buf, const void* host, std::size_t bytes) {
  if (buf.size() < bytes) buf = DeviceBuffer<char>(bytes);
  buf.upload(static_cast<const char*>(host), bytes);
  return buf.data();
}

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
  double sum_sq_diff(const double* a, const double* b, std::size_t n) const override { return cuda_ops::sum_sq(a, b, n); }
  void synchronize() override { LP_CUDA_CHECK(cudaDeviceSynchronize()); }

  void sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                         double* out) const override {
    if (count <= 0) return;
    if (n == 0) {
      std::fill(out, out + count, 0.0);
      return;
    }
    const std::size_t c = static_cast<std::size_t>(count);
    std::vector<const double*> host(2 * c);
    std::copy_n(a, count, host.begin());
    std::copy_n(b, count, host.begin() + count);  // null entries stay null: the norm of a[q]
    DeviceBuffer<const double*> ptrs(host);
    DeviceBuffer<double> totals(c);
    cuda_ops::sum_sq_batch(ptrs.data(), ptrs.data() + count, count, n, totals.data());
    totals.download(out, c);
  }

  void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                       const Propagator::Chain* chains, int n) override {
    cuda_ops::require_narrow_width(w);
    if (s > 0) cuda_ops::block_propagate(act, w, s, h, K, bias, chains, n, scratch_);
  }
  void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                     const Propagator::Chain* chains, int n) override {
    cuda_ops::require_narrow_width(w);
    if (s > 0) cuda_ops::block_adjoint(w, s, layers, h, K, deriv, first, chains, n, scratch_);
  }
  void layer_derivs(Activation act, int w, int s, const double* K, const double* bias, int first, int count,
                    const double* const* u, double* deriv) override {
    cuda_ops::require_narrow_width(w);
    if (s <= 0 || count <= 0) return;
    kernels::LayerDerivArgs a;
    a.w = w;
    a.s = s;
    a.first = first;
    a.K = K;
    a.bias = bias;
    a.u = reinterpret_cast<const double* const*>(
        upload_into(ptrs_, u, static_cast<std::size_t>(count) * sizeof(double*)));
    a.deriv = deriv;
    cuda_ops::layer_derivs(act, a, count);
  }
  void layer_gradient(int w, int s, const double* u, const double* lam_next, const double* deriv, double* gK,
                      double* gb, double gscale) override {
    cuda_ops::require_narrow_width(w);
    // With deriv given the activation, K and b are not read.
    if (s > 0) cuda_ops::layer_gradient(Activation::Tanh, w, nullptr, 0.0, u, lam_next, deriv, s, gK, gb, gscale);
  }
  double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                    int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) override {
    kernels::require_classifier_shape(w, nc);
    if (s <= 0) {
      if (correct) *correct = 0;
      return 0.0;
    }
    return cuda_ops::classifier(w, nc, Wc, mu, U, labels, s, scale, correct, lam, gW, gmu);
  }

  void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                     int s) override {
    if (s > 0) cuda_ops::dense_opening(act, w, nf, W, b, X, U0, s);
  }
  void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              const double* lam0, int s, double* gW, double* gb) override {
    if (s > 0) cuda_ops::dense_opening_gradient(act, w, nf, W, b, X, lam0, s, gW, gb);
  }

  void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                 const double* in, double* out, int s, double* deriv) override {
    cuda_ops::require_conv_shape(sh);
    if (s > 0) cuda_ops::conv_step(act, sh, K, bias, dt, in, out, s, deriv);
  }
  void conv_adjoint(const ConvShape& sh, const double* K, double dt, const double* deriv, const double* lam_next,
                    double* lam, int s) override {
    cuda_ops::require_conv_shape(sh);
    // With deriv given the activation, u and the bias are not read (lam_next stands in for u).
    if (s > 0) cuda_ops::conv_adjoint(Activation::Tanh, sh, K, nullptr, dt, lam_next, lam_next, lam, s, deriv);
  }
  void conv_gradient(const ConvShape& sh, const double* u, const double* lam_next, const double* deriv, int s,
                     double* gK, double* gb, double gscale) override {
    cuda_ops::require_conv_shape(sh);
    if (s > 0) cuda_ops::conv_gradient(Activation::Tanh, sh, nullptr, nullptr, u, lam_next, s, gK, gb, gscale, deriv);
  }
  void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) override {
    cuda_ops::require_conv_shape(sh);
    if (s > 0) cuda_ops::replicate_opening(sh, pixels, U0, s);
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
    // The pointer arrays go to the device (one buffer: A, B, C), then one call per
    // piece of the batch (kernels::gemm_calls), as the emulator splits it.
    std::vector<const double*> host(3 * static_cast<std::size_t>(batch));
    std::copy_n(A, batch, host.begin());
    std::copy_n(B, batch, host.begin() + batch);
    for (int q = 0; q < batch; ++q) host[2 * batch + q] = C[q];
    auto* d = reinterpret_cast<const double* const*>(
        upload_into(gemm_ptrs_, host.data(), host.size() * sizeof(double*)));
    for (int i = 0; i < kernels::gemm_calls(batch); ++i) {
      const kernels::RowRange r = kernels::row_range(batch, i);
      check_cublas(api.dgemm_batched(handle_, opa, opb, m, n, k, &alpha, d + r.row0, lda, d + batch + r.row0, ldb,
                                     &beta, const_cast<double* const*>(d + 2 * batch + r.row0), ldc, r.rows),
                   "cublasDgemmBatched");
    }
  }

  void wide_epilogue(Activation act, int w, int s, const WideBatch& wb) override {
    const int count = static_cast<int>(wb.out.size() ? wb.out.size() : wb.z.size());
    if (count == 0 || s <= 0) return;
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
    char* d = upload_into(epi_, host.data(), host.size());
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
    cuda_ops::wide_epilogue(act, a, count);
  }

  void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst) override {
    cuda_ops::dot_accumulate(a, b, n, scale, dst);
  }

 private:
  static long long ll(std::size_t n) { return static_cast<long long>(n); }
  // The three pointer arrays go up in one copy; the plan splits the launches.
  void element_batch(kernels::ElementOp op, double* const* dst, const double* const* a, const double* const* b,
                     int count, std::size_t n) {
    if (n == 0 || count <= 0) return;
    const std::size_t c = static_cast<std::size_t>(count);
    std::vector<const double*> host(3 * c);
    std::copy_n(dst, count, host.begin());
    std::copy_n(a, count, host.begin() + count);
    std::copy_n(b, count, host.begin() + 2 * count);
    char* up = upload_into(batch_ptrs_, host.data(), host.size() * sizeof(double*));
    auto* d = reinterpret_cast<const double* const*>(up);
    kernels::ElementBatchArgs e;
    e.op = op;
    e.dst = reinterpret_cast<double* const*>(up);
    e.a = d + count;
    e.b = d + 2 * count;
    e.n = ll(n);
    cuda_ops::elementwise_batch(e, count);
  }

  void element(const kernels::ElementArgs& e) {
    if (e.n > 0) cuda_ops::elementwise(e);
  }
  DeviceBuffer<char> scratch_;     // chain arrays of the last block launch
  DeviceBuffer<char> ptrs_;        // state pointers of the last layer_derivs launch
  DeviceBuffer<char> gemm_ptrs_;   // pointer arrays of the last batched GEMM
  DeviceBuffer<char> batch_ptrs_;  // pointer arrays of the last batched state operation
  CublasApi::Handle handle_ = nullptr;  // this backend's cuBLAS handle (created on first use)
  DeviceBuffer<char> epi_;         // argument arrays of the last wide epilogue
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
