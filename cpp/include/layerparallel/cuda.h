// Host API of the CUDA backend: whether CUDA can be used (and why not), device
// buffers, and launch wrappers of the dense-layer kernels on device pointers.
// Implemented in cuda/*.cu when built with CUDA; in a CPU-only build
// cpp/src/cuda_stub.cpp provides every function, throwing a clear
// "built without CUDA" std::runtime_error, so callers never hit a missing symbol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"
#include "layerparallel/macros.h"

namespace layerparallel {

/// True when the library was compiled with the CUDA backend.
bool cuda_built();

/// One sentence saying whether CUDA can be used here and, if not, why: "layerparallel
/// was built without CUDA", "no CUDA device was found (...)", "the CUDA driver is
/// older than the runtime (...)"; when usable, names device 0.
std::string cuda_status();

/// True when built with CUDA and a device with a recent enough driver is present.
bool cuda_available();

/// Waits until every launch on the device has finished (for timing); throws
/// std::runtime_error when CUDA is unavailable or a kernel failed.
void cuda_synchronize();

namespace detail {
void* cuda_malloc(std::size_t bytes);
void cuda_free(void* p) noexcept;
void cuda_copy_to_device(void* dst, const void* src, std::size_t bytes);
void cuda_copy_to_host(void* dst, const void* src, std::size_t bytes);
void cuda_memset_zero(void* dst, std::size_t bytes);
}  // namespace detail

/// An owning array in device memory (move-only). Throws std::runtime_error when
/// CUDA is unavailable or the allocation fails.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n > 0) p_ = static_cast<T*>(detail::cuda_malloc(n * sizeof(T)));
  }
  /// Allocates and uploads host data.
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host.data(), host.size()); }
  ~DeviceBuffer() { detail::cuda_free(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      detail::cuda_free(p_);
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }

  void upload(const T* host, std::size_t n) {
    LP_REQUIRE(n <= n_, "cannot upload " << n << " elements into a device buffer of " << n_);
    if (n > 0) detail::cuda_copy_to_device(p_, host, n * sizeof(T));
  }
  void download(T* host, std::size_t n) const {
    LP_REQUIRE(n <= n_, "cannot download " << n << " elements from a device buffer of " << n_);
    if (n > 0) detail::cuda_copy_to_host(host, p_, n * sizeof(T));
  }
  std::vector<T> to_host() const {
    std::vector<T> v(n_);
    download(v.data(), n_);
    return v;
  }
  void zero() {
    if (n_ > 0) detail::cuda_memset_zero(p_, n_ * sizeof(T));
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// ---- launch wrappers; every pointer argument is a device pointer unless said otherwise.
// Widths up to 32 (one thread per example, weights in shared memory); wider
// layers are rejected here: DenseResNet on a device backend (device_ops.cpp) runs them as
// batched cuBLAS GEMMs with epilogue kernels through its DeviceBackend.

/// out = in + dt act(K in + b), (s, w) states (the CPU's dense_step).
void cuda_dense_step(Activation act, int w, const double* K, double b, double dt, const double* in, double* out,
                     int s);

/// Every interval of a level in one launch (the F-sweep of MGRIT): interval c steps
/// from in[c] through the fine indices idx[c][0..count_c] with layer idx[c][k],
/// step size (idx[c][k+1] - idx[c][k]) h, writing step k to outs[c][k]
/// (outs[c].size() == idx[c].size() - 1 == count_c >= 1). K is (layers, w, w), bias
/// (layers). idx, in and outs are host vectors holding device pointers.
void cuda_block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                          const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                          const std::vector<std::vector<double*>>& outs);

/// lam = lam_next + dt K^T (act'(K u + b) * lam_next); with deriv != nullptr
/// (act'(K u + b) known) u and b are not used.
void cuda_dense_adjoint_step(Activation act, int w, const double* K, double b, double dt, const double* u,
                             const double* lam_next, double* lam, int s, const double* deriv = nullptr);

/// The adjoint counterpart of cuda_block_propagate in reversed index k = N - n
/// (ResNetAdjointPropagator::propagate): a step k0 -> k1 uses layer n0 = N - k1,
/// step size (k1 - k0) h and deriv + n0 s w (deriv is (layers, s, w)).
void cuda_block_adjoint_propagate(int w, int s, int layers, double h, const double* K, const double* deriv,
                                  const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                                  const std::vector<std::vector<double*>>& outs);

/// gK += gscale D^T u, gb += gscale sum(D), D = act'(K u + b) * lam_next (or
/// deriv * lam_next); gK (w*w) and gb (1) on the device. Deterministic.
void cuda_layer_gradient(Activation act, int w, const double* K, double b, const double* u,
                         const double* lam_next, int s, double* gK, double* gb, double gscale,
                         const double* deriv = nullptr);

/// Summed softmax cross-entropy (returned) and the count of correct argmaxes
/// (`correct`, a host pointer, may be null); lam (optional) receives Wc^T (p - onehot)
/// scale per example; gW (nc, w) and gmu (nc) are accumulated when gW != nullptr.
/// labels are int64 on the device. Deterministic.
double cuda_classifier_loss(int w, int nc, const double* Wc, const double* mu, const double* U,
                            const std::int64_t* labels, int s, double scale, std::int64_t* correct, double* lam,
                            double* gW, double* gmu);

/// sqrt(sum_k (a_k - b_k)^2) over n entries (b may be null). Deterministic.
double cuda_residual_norm(const double* a, const double* b, std::size_t n);

// ---- the 3x3 convolutional residual layer (conv.h's batch functions on the device);
// states are (s, C, H, W), K (C, C, 3, 3), bias per pixel (H*W) or per channel (C).

/// out = in + dt act(conv(K, in) + bias); deriv (optional) receives act'(.). in != out.
void cuda_conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                    const double* in, double* out, int s, double* deriv = nullptr);

/// lam = lam_next + dt conv^T(K, act'(conv(K, u) + bias) * lam_next); with deriv != nullptr
/// (act'(.) known) u, bias and act are not used.
void cuda_conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                            const double* u, const double* lam_next, double* lam, int s,
                            const double* deriv = nullptr);

/// gK += gscale corr(D, u), gb += gscale sums of D, D = act'(conv(K, u) + bias) * lam_next
/// (or deriv * lam_next); gK (C*C*9) and gb (bias_size()) on the device. Deterministic.
void cuda_conv_layer_gradient(Activation act, const ConvShape& sh, const double* K, const double* bias,
                              const double* u, const double* lam_next, int s, double* gK, double* gb, double gscale,
                              const double* deriv = nullptr);

/// u0 = tanh(6 p / 255 - 3) + 1 of each pixel, copied to every channel; pixels (s, H, W).
void cuda_replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s);

}  // namespace layerparallel
