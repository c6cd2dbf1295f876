// The launch wrappers of cuda.h: the kernels on device pointers, for the tests
// (tests/cpp/test_*_harness.cpp) and the GPU benchmarks (benchmarks/cuda/).
// Each checks that CUDA is usable and its arguments, then runs the operation of
// kernel_ops.h that CudaBackend runs too; the ones that free what the kernels
// read synchronise first.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_check.cuh"
#include "kernel_ops.h"
#include "layerparallel/cuda.h"
#include "layerparallel/launch_plan.h"

namespace layerparallel {

namespace {

void require_cuda(const char* what) {
  if (!cuda_available()) throw std::runtime_error(std::string(what) + " cannot run: " + cuda_status());
}

// The host-vector form of the block wrappers as chains (pointers into idx and outs).
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

}  // namespace

// ------------------------------------------------------------------ the dense layer

void cuda_dense_step(Activation act, int w, const double* K, double b, double dt, const double* in, double* out,
                     int s) {
  require_cuda("cuda_dense_step");
  cuda_ops::require_narrow_width(w);
  if (s > 0) cuda_ops::dense_step(act, w, K, b, dt, in, out, s);
}

void cuda_dense_adjoint_step(Activation act, int w, const double* K, double b, double dt, const double* u,
                             const double* lam_next, double* lam, int s, const double* deriv) {
  require_cuda("cuda_dense_adjoint_step");
  cuda_ops::require_narrow_width(w);
  if (s > 0) cuda_ops::dense_adjoint(act, w, K, b, dt, u, lam_next, lam, s, deriv);
}

void cuda_block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                          const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                          const std::vector<std::vector<double*>>& outs) {
  require_cuda("cuda_block_propagate");
  cuda_ops::require_narrow_width(w);
  if (s <= 0) return;
  const std::vector<Propagator::Chain> c = as_chains(idx, in, outs);
  DeviceBuffer<char> scratch;
  cuda_ops::block_propagate(act, w, s, h, K, bias, c.data(), static_cast<int>(c.size()), scratch);
  // The interval arrays are freed on return: wait for the kernels that read them.
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_block_adjoint_propagate(int w, int s, int layers, double h, const double* K, const double* deriv,
                                  const std::vector<std::vector<int>>& idx, const std::vector<const double*>& in,
                                  const std::vector<std::vector<double*>>& outs) {
  require_cuda("cuda_block_adjoint_propagate");
  cuda_ops::require_narrow_width(w);
  if (s <= 0) return;
  const std::vector<Propagator::Chain> c = as_chains(idx, in, outs);
  DeviceBuffer<char> scratch;
  cuda_ops::block_adjoint(w, s, layers, h, K, deriv, 0, c.data(), static_cast<int>(c.size()), scratch);
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_layer_gradient(Activation act, int w, const double* K, double b, const double* u, const double* lam_next,
                         int s, double* gK, double* gb, double gscale, const double* deriv) {
  require_cuda("cuda_layer_gradient");
  cuda_ops::require_narrow_width(w);
  if (s > 0) cuda_ops::layer_gradient(act, w, K, b, u, lam_next, deriv, s, gK, gb, gscale);
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
  return cuda_ops::classifier(w, nc, Wc, mu, U, labels, s, scale, correct, lam, gW, gmu);
}

double cuda_residual_norm(const double* a, const double* b, std::size_t n) {
  require_cuda("cuda_residual_norm");
  return std::sqrt(cuda_ops::sum_sq(a, b, n));
}

// ------------------------------------------------------------------ the convolutional layer

void cuda_conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                    const double* in, double* out, int s, double* deriv) {
  require_cuda("cuda_conv_step");
  cuda_ops::require_conv_shape(sh);
  if (s > 0) cuda_ops::conv_step(act, sh, K, bias, dt, in, out, s, deriv);
}

void cuda_conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                            const double* u, const double* lam_next, double* lam, int s, const double* deriv) {
  require_cuda("cuda_conv_adjoint_step");
  cuda_ops::require_conv_shape(sh);
  if (s > 0) cuda_ops::conv_adjoint(act, sh, K, bias, dt, u, lam_next, lam, s, deriv);
}

void cuda_conv_layer_gradient(Activation act, const ConvShape& sh, const double* K, const double* bias,
                              const double* u, const double* lam_next, int s, double* gK, double* gb, double gscale,
                              const double* deriv) {
  require_cuda("cuda_conv_layer_gradient");
  cuda_ops::require_conv_shape(sh);
  if (s > 0) cuda_ops::conv_gradient(act, sh, K, bias, u, lam_next, s, gK, gb, gscale, deriv);
}

void cuda_replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) {
  require_cuda("cuda_replicate_opening");
  cuda_ops::require_conv_shape(sh);
  if (s > 0) cuda_ops::replicate_opening(sh, pixels, U0, s);
}

}  // namespace layerparallel
