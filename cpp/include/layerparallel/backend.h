// The operation set every residual network is written over (docs/architecture.md).
//
// A Backend is where a network's states, parameters and gradients live (it is
// the StateSpace the MGRIT engine keeps its states in) and the layer operations
// on them. Each architecture (DenseResNet, ConvResNet) is written once over this
// interface and runs on every backend:
//   - "cpu" (HostBackend, host_backend.cpp): host memory, OpenMP over examples,
//     fused per-example loops for narrow dense layers and BLAS GEMMs for wide ones;
//   - "emulator" and "cuda" (device_ops.cpp): the same operations composed from
//     a DeviceBackend's kernel launches (device_backend.h) in device memory; the
//     emulator runs the CUDA kernels' bodies over their launch grids on the CPU.
// Pointers are in the backend's memory unless they say "host". Features X are
// always host memory (a device backend uploads them). Results are the same on
// every backend up to the rounding of reductions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "layerparallel/activation_impl.h"
#include "layerparallel/conv_impl.h"
#include "layerparallel/propagator.h"
#include "layerparallel/state_space.h"

namespace layerparallel {

/// The hidden layers of a dense network: K (layers, w, w) row-major and one bias
/// per layer, in the backend's memory; a step of layer n with size dt is
/// u + dt act(K_n u + b_n).
struct DenseLayers {
  Activation act = Activation::Tanh;
  int w = 0;
  int layers = 0;
  double h = 0.0;
  const double* K = nullptr;
  const double* bias = nullptr;
};

class Backend : public StateSpace {
 public:
  /// "cpu", "emulator" or "cuda".
  virtual std::string name() const = 0;
  /// True when dense_chains() and the conv chain steps relax every chain of a
  /// level in one call (device launches); false: the engine's threads take the
  /// chains one by one.
  virtual bool fuses_chains() const = 0;
  /// The most classes the classifier takes (device kernels keep a row of logits per thread).
  virtual int max_classes() const = 0;

  /// Raw memory (labels): bytes in this backend's memory.
  virtual void* allocate_bytes(std::size_t bytes) = 0;
  virtual void release_bytes(void* p) noexcept = 0;
  virtual void upload_bytes(void* dst, const void* host_src, std::size_t bytes) = 0;

  // ---- dense layers
  /// U0 = act(X W^T + b) (W (w, nf), b one value), X host (s, nf).
  virtual void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                             double* U0, int s) = 0;
  /// gW += D^T X, gb += sum(D), D = act'(X W^T + b) * lam0; X host. Deterministic.
  virtual void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b,
                                      const double* X, const double* lam0, int s, double* gW, double* gb) = 0;
  /// U0[:, :nf] = X (host), the rest 0.
  virtual void expand_opening(int w, int nf, const double* X, double* U0, int s) = 0;
  /// out = in + dt act(K_n in + b_n); deriv (may be null) receives act'(.).
  virtual void dense_step(const DenseLayers& L, int n, double dt, const double* in, double* out, int s,
                          double* deriv) = 0;
  /// lam = lam_next + dt K_n^T (act'(K_n u + b_n) * lam_next) (lam may be null: gradient
  /// only); deriv (may be null: formed from u) is act'(.). With gK != null the layer's
  /// gradient is accumulated: gK += gscale D^T u, gb += gscale sum(D), D = act'(.) * lam_next.
  virtual void dense_adjoint_step(const DenseLayers& L, int n, double dt, const double* u, const double* lam_next,
                                  double* lam, int s, const double* deriv, double* gK, double* gb,
                                  double gscale) = 0;
  /// deriv = act'(K_n u + b_n).
  virtual void dense_deriv(const DenseLayers& L, int n, const double* u, double* deriv, int s) = 0;
  /// Chains of steps (Propagator::Chain: chain q steps from in through layers idx[k] with
  /// size (idx[k+1] - idx[k]) h, outs[k] = step + rhs[k]). With derivs (unit steps only)
  /// act'(.) of every layer n stepped through goes to derivs + (n - first) s w. Returns
  /// false, computing nothing, when this backend has no fused chain for the shape (the
  /// caller then takes dense_step() by step).
  virtual bool dense_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, double* derivs,
                            int first) = 0;
  /// The adjoint chains in reversed index k = N - n: a step k0 -> k1 uses layer
  /// n0 = N - k1, size (k1 - k0) h, and act'(.) from derivs + (n0 - first) s w, or,
  /// when derivs is null, formed from states[n0]. With slots (unit steps, and only
  /// when dense_grad_slot_size() > 0) each chunk of kReduceChunk examples also
  /// writes layer n0's gradient partial sums to slots + (c N + n0) slot_size (the K
  /// block then the bias), for dense_reduce_slots(). Returns false as dense_chains.
  virtual bool dense_adjoint_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                                    const double* derivs, int first, const double* const* states, double* slots) = 0;
  /// Doubles per gradient slot of dense_adjoint_chains (0: no fused gradient).
  virtual std::size_t dense_grad_slot_size(int w) const = 0;
  /// gK / gb of layers [a, b) += the slots summed in chunk order (host memory). Called
  /// only where dense_grad_slot_size() > 0 (a device backend has no slots and refuses it).
  virtual void dense_reduce_slots(const DenseLayers& L, const double* slots, int a, int b, int s, double* gK,
                                  double* gb) = 0;
  /// Whether the serial sweeps should keep act'(.) of the forward sweep for the adjoint.
  virtual bool dense_keeps_derivs(int w) const = 0;

  // ---- the softmax classifier z = U Wc^T + mu (Wc (nc, w))
  /// Summed cross-entropy; *correct (host, may be null) counts argmax hits; lam (may be
  /// null) = scale-weighted dJ/dU; gW, gmu (may be null) accumulate. labels in this memory.
  virtual double classifier(int w, int nc, const double* Wc, const double* mu, const double* U,
                            const std::int64_t* labels, int s, double scale, std::int64_t* correct, double* lam,
                            double* gW, double* gmu) = 0;
  /// Z (host, (s, nc)) = U Wc^T + mu.
  virtual void classifier_logits(int w, int nc, const double* Wc, const double* mu, const double* U, int s,
                                 double* Z) = 0;

  // ---- 3x3 convolutional layers, states (s, C, H, W)
  /// out = in + dt act(conv(K, in) + bias); deriv (may be null) receives act'(.).
  virtual void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                         const double* in, double* out, int s, double* deriv) = 0;
  /// conv_adjoint_step of conv.h: lam (may be null) = lam_next + dt conv^T(K, D), D =
  /// act'(.) * lam_next (deriv, or formed from u); gK, gb (may be null) += gscale (corr(D, u), sums of D).
  virtual void conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias,
                                 double dt, const double* u, const double* lam_next, double* lam, int s,
                                 const double* deriv, double* gK, double* gb, double gscale) = 0;
  /// u0 = tanh(6 p / 255 - 3) + 1 in every channel; pixels host (s, H*W).
  virtual void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) = 0;
  /// Whether the learned conv opening below exists on this backend.
  virtual bool has_conv_opening() const = 0;
  /// u0 = act(conv(Ko, p / 255) + bo) from the one input channel; pixels host. This and
  /// the gradient below exist only where has_conv_opening() (ConvResNet refuses the
  /// learned opening on other backends when it is built, so they are never reached there).
  virtual void conv_opening(Activation act, const ConvShape& sh, const double* Ko, const double* bo,
                            const double* pixels, double* U0, int s) = 0;
  /// gKo, gbo += the opening's gradient from lam0 (deterministic).
  virtual void conv_opening_gradient(Activation act, const ConvShape& sh, const double* Ko, const double* bo,
                                     const double* pixels, const double* lam0, int s, double* gKo, double* gbo) = 0;
};

/// The process-wide CPU backend (host memory).
std::shared_ptr<Backend> cpu_backend();
/// "cpu", "emulator" or "cuda" (std::runtime_error with cuda_status()'s reason when
/// CUDA is unusable); anything else throws std::invalid_argument naming it.
std::shared_ptr<Backend> make_backend(const std::string& name);

}  // namespace layerparallel
