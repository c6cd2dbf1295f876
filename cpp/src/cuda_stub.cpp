// The CUDA host API in a build without CUDA: every function exists and says
// why it cannot run, so callers get a clear error instead of a missing symbol.
#include <stdexcept>
#include <string>

#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"

namespace layerparallel {

namespace {
[[noreturn]] void unavailable(const char* what) {
  throw std::runtime_error(std::string(what) +
                           " needs CUDA, but layerparallel was built without CUDA (rebuild with -DLP_CUDA=ON "
                           "on a machine with the CUDA toolkit)");
}
}  // namespace

bool cuda_built() { return false; }
std::string cuda_status() { return "layerparallel was built without CUDA"; }
bool cuda_available() { return false; }
void cuda_synchronize() { unavailable("cuda_synchronize"); }

namespace detail {
void* cuda_malloc(std::size_t) { unavailable("a device buffer"); }
void cuda_free(void*) noexcept {}
void cuda_copy_to_device(void*, const void*, std::size_t) { unavailable("a device copy"); }
void cuda_copy_to_host(void*, const void*, std::size_t) { unavailable("a device copy"); }
void cuda_memset_zero(void*, std::size_t) { unavailable("a device memset"); }
}  // namespace detail

void cuda_dense_step(Activation, int, const double*, double, double, const double*, double*, int) {
  unavailable("cuda_dense_step");
}
void cuda_block_propagate(Activation, int, int, double, const double*, const double*,
                          const std::vector<std::vector<int>>&, const std::vector<const double*>&,
                          const std::vector<std::vector<double*>>&) {
  unavailable("cuda_block_propagate");
}
void cuda_dense_adjoint_step(Activation, int, const double*, double, double, const double*, const double*, double*,
                             int, const double*) {
  unavailable("cuda_dense_adjoint_step");
}
void cuda_block_adjoint_propagate(int, int, int, double, const double*, const double*,
                                  const std::vector<std::vector<int>>&, const std::vector<const double*>&,
                                  const std::vector<std::vector<double*>>&) {
  unavailable("cuda_block_adjoint_propagate");
}
void cuda_layer_gradient(Activation, int, const double*, double, const double*, const double*, int, double*, double*,
                         double, const double*) {
  unavailable("cuda_layer_gradient");
}
double cuda_classifier_loss(int, int, const double*, const double*, const double*, const std::int64_t*, int, double,
                            std::int64_t*, double*, double*, double*) {
  unavailable("cuda_classifier_loss");
}
double cuda_residual_norm(const double*, const double*, std::size_t) { unavailable("cuda_residual_norm"); }

void cuda_conv_step(Activation, const ConvShape&, const double*, const double*, double, const double*, double*, int,
                    double*) {
  unavailable("cuda_conv_step");
}
void cuda_conv_adjoint_step(Activation, const ConvShape&, const double*, const double*, double, const double*,
                            const double*, double*, int, const double*) {
  unavailable("cuda_conv_adjoint_step");
}
void cuda_conv_layer_gradient(Activation, const ConvShape&, const double*, const double*, const double*,
                              const double*, int, double*, double*, double, const double*) {
  unavailable("cuda_conv_layer_gradient");
}
void cuda_replicate_opening(const ConvShape&, const double*, double*, int) { unavailable("cuda_replicate_opening"); }

std::unique_ptr<DeviceBackend> make_cuda_backend() {
  unavailable("the CUDA device backend");
  return nullptr;
}

}  // namespace layerparallel
