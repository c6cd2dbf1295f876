// The launch layer of the device backends (backend.h composes the layer
// operations from it in device_ops.cpp): device memory (a
// StateSpace, so the MGRIT engine keeps its states there) and the dense-layer
// kernels on it. Two implementations run the very same kernel bodies
// (narrow_kernels_impl.h, state_kernels_impl.h, conv_kernels_impl.h):
//   - "cuda": real launches on a GPU (CudaBackend in cuda/cuda_backend.cu, CUDA builds);
//   - "emulator": the bodies over their launch grid on the CPU, in host memory
//     (grid_emulator.h). Slow, but it runs the whole device-resident training
//     (orchestration and kernels) where no GPU exists; the tests use it.
// Every pointer argument is a pointer in the backend's memory unless it says
// "host".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"
#include "layerparallel/dense_kernels_impl.h"
#include "layerparallel/propagator.h"
#include "layerparallel/state_space.h"

namespace layerparallel {

class DeviceBackend : public StateSpace {
 public:
  bool host() const override { return false; }
  /// "cuda" or "emulator".
  virtual std::string name() const = 0;

  /// Raw device memory (labels); released with release_bytes.
  virtual void* allocate_bytes(std::size_t bytes) = 0;
  virtual void release_bytes(void* p) noexcept = 0;
  virtual void upload_bytes(void* dst, const void* host_src, std::size_t bytes) = 0;

  /// Every chain of a level in the launches of plan_block_propagate (launch_plan.h; more than 65535 chains: several): chain q steps from
  /// chains[q].in through fine indices idx[0..count] with layer idx[k] and step size
  /// (idx[k+1] - idx[k]) h, outs[k] = step + rhs[k] (rhs, or an entry, may be null).
  /// K is (layers, w, w), bias (layers). The Chain arrays are host memory.
  virtual void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                               const Propagator::Chain* chains, int n) = 0;
  /// The adjoint chains in reversed index k = N - n (ResNetAdjointPropagator): a step
  /// k0 -> k1 uses layer n0 = layers - k1, step (k1 - k0) h and deriv + (n0 - first) s w.
  virtual void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                             const Propagator::Chain* chains, int n) = 0;
  /// deriv + j s w = act'(K_n u_n + b_n) for n = first + j, j < count; u: host array of count pointers.
  virtual void layer_derivs(Activation act, int w, int s, const double* K, const double* bias, int first, int count,
                            const double* const* u, double* deriv) = 0;
  /// gK += gscale D^T u, gb += gscale sum(D), D = deriv * lam_next (gK w*w, gb 1 double). Deterministic.
  virtual void layer_gradient(int w, int s, const double* u, const double* lam_next, const double* deriv, double* gK,
                              double* gb, double gscale) = 0;
  /// Summed softmax cross-entropy (returned) and hits (*correct, host, may be null);
  /// lam (may be null) receives Wc^T (p - onehot) scale per example; gW (nc, w) and gmu
  /// (nc) are accumulated when gW != nullptr. labels: int64 in device memory.
  virtual double classifier(int w, int nc, const double* Wc, const double* mu, const double* U,
                            const std::int64_t* labels, int s, double scale, std::int64_t* correct, double* lam,
                            double* gW, double* gmu) = 0;

  /// The dense opening, one thread per example (w <= kernels::kMaxWidth): U0 = act(W x + b),
  /// W (w, nf), b one value, X (s, nf), all device memory.
  virtual void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                             double* U0, int s) = 0;
  /// gW += d x^T, gb += sum d with d = act'(W x + b) * lam0. Deterministic.
  virtual void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b,
                                      const double* X, const double* lam0, int s, double* gW, double* gb) = 0;

  // ---- 3x3 convolutional layers (conv_kernels_impl.h); states (s, C, H, W), K (C, C, 3, 3),
  // bias per pixel or per channel (sh.bias_size()).
  /// out = in + dt act(conv(K, in) + bias); deriv (may be null) receives act'(.). in != out.
  virtual void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                         const double* in, double* out, int s, double* deriv) = 0;
  /// lam = lam_next + dt conv^T(K, deriv * lam_next) (deriv = act'(.) of the layer).
  virtual void conv_adjoint(const ConvShape& sh, const double* K, double dt, const double* deriv,
                            const double* lam_next, double* lam, int s) = 0;
  /// gK += gscale corr(D, u), gb += gscale sums of D, D = deriv * lam_next. Deterministic.
  virtual void conv_gradient(const ConvShape& sh, const double* u, const double* lam_next, const double* deriv,
                             int s, double* gK, double* gb, double gscale) = 0;
  /// u0 = tanh(6 p / 255 - 3) + 1 of each pixel in every channel; pixels (s, H*W).
  virtual void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) = 0;

  // ---- wide layers (w > kernels::kMaxWidth): GEMMs and their epilogues
  /// Column-major C_q = alpha op(A_q) op(B_q) + beta C_q for q < batch (cuBLAS's
  /// dgemmBatched; op = transpose when ta / tb); the pointer arrays are host memory.
  /// beta = 0 does not read C.
  virtual void gemm_batched(bool ta, bool tb, int m, int n, int k, double alpha, const double* const* A, int lda,
                            const double* const* B, int ldb, double beta, double* const* C, int ldc, int batch) = 0;
  /// One launch of kernels::wide_epilogue over out.size() entries (host vectors of
  /// device pointers; a, b, rhs, bias, dt may be empty where the op reads none).
  struct WideBatch {
    kernels::WideOp op = kernels::WideOp::Step;
    std::vector<const double*> a, b, rhs, bias;
    std::vector<double*> z, out;
    std::vector<double> dt;
  };
  virtual void wide_epilogue(Activation act, int w, int s, const WideBatch& batch) = 0;
  /// *dst += sum_k (scale a_k) b_k over n entries (dst in device memory). Deterministic.
  virtual void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst) = 0;
};

/// "cuda" (throws std::runtime_error with cuda_status()'s reason when unusable) or
/// "emulator". Anything else throws std::invalid_argument.
std::unique_ptr<DeviceBackend> make_device_backend(const std::string& device);

/// Which of `device_count` CUDA devices this process uses: LP_CUDA_DEVICE when set
/// (std::invalid_argument unless it names one of them), else the process's rank
/// on its node (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID,
/// PMI_LOCAL_RANK) modulo the count, else 0; so processes of one node spread
/// over its GPUs.
int pick_cuda_device(int device_count);

class Backend;
/// The layer operations of backend.h composed from this device's launches (device_ops.cpp).
std::shared_ptr<Backend> backend_over(std::shared_ptr<DeviceBackend> device);

/// The emulator backend (CPU, host memory, kernel bodies over their launch grid).
std::unique_ptr<DeviceBackend> make_emulated_backend();
/// The CUDA backend; in a build without CUDA this throws "built without CUDA".
std::unique_ptr<DeviceBackend> make_cuda_backend();

namespace detail {
/// Chains flattened into the arrays kernels::IntervalSteps points at (host copies).
struct FlatChains {
  std::vector<int> step_start{0}, idx;
  std::vector<const double*> in;
  std::vector<double*> out;
  std::vector<const double*> rhs;
  bool any_rhs = false;
};
FlatChains flatten_chains(const Propagator::Chain* chains, int n);
}  // namespace detail

}  // namespace layerparallel
