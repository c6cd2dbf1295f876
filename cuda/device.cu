// Device discovery and memory of the CUDA backend: why CUDA can or cannot be
// used here (one sentence for users), and the checked allocation and copies
// behind DeviceBuffer.
#include <cuda_runtime.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "layerparallel/cuda.h"

namespace layerparallel {

namespace {

std::string version_text(int v) {
  std::ostringstream os;
  os << v / 1000 << "." << (v % 1000) / 10;
  return os.str();
}

struct Probe {
  bool ok = false;
  std::string status;
};

// An empty kernel: whether the device can run this build's code (the
// architectures compiled in, or PTX it can JIT) is whether it has an image for it.
__global__ void probe_kernel() {}

#ifndef LP_CUDA_ARCHS
#define LP_CUDA_ARCHS "?"
#endif

// Asks the runtime once; the answer cannot change while the process runs.
Probe probe() {
  Probe p;
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  if (driver == 0) {
    p.status = "no CUDA device was found (no NVIDIA driver is installed)";
    return p;
  }
  if (driver < runtime) {
    p.status = "the CUDA driver is older than the runtime (driver supports CUDA " + version_text(driver) +
               ", layerparallel was built with CUDA " + version_text(runtime) + ")";
    return p;
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    p.status = std::string("no CUDA device was found (") +
               (err != cudaSuccess ? cudaGetErrorString(err) : "the driver reports 0 devices") + ")";
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return p;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    cudaGetLastError();
    p.status = "no CUDA device was found (device 0 cannot be queried)";
    return p;
  }
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, probe_kernel) != cudaSuccess) {
    cudaGetLastError();
    std::ostringstream os;
    os << "CUDA device 0 (" << prop.name << ", compute capability " << prop.major << "." << prop.minor
       << ") cannot run this build's kernels, compiled for architectures " << LP_CUDA_ARCHS
       << " (rebuild with -DCMAKE_CUDA_ARCHITECTURES=" << prop.major << prop.minor << ")";
    p.status = os.str();
    return p;
  }
  std::ostringstream os;
  os << "CUDA device 0: " << prop.name << " (compute capability " << prop.major << "." << prop.minor << ", "
     << count << " device" << (count > 1 ? "s" : "") << ", driver " << version_text(driver) << ", runtime "
     << version_text(runtime) << ")";
  p.ok = true;
  p.status = os.str();
  return p;
}

const Probe& cached_probe() {
  static const Probe p = probe();
  return p;
}

}  // namespace

bool cuda_built() { return true; }
std::string cuda_status() { return cached_probe().status; }
bool cuda_available() { return cached_probe().ok; }

void cuda_synchronize() {
  if (!cuda_available()) throw std::runtime_error("cannot synchronise the device: " + cuda_status());
  LP_CUDA_CHECK(cudaDeviceSynchronize());
}

namespace detail {

void* cuda_malloc(std::size_t bytes) {
  if (!cuda_available()) throw std::runtime_error("cannot allocate device memory: " + cuda_status());
  void* p = nullptr;
  LP_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void cuda_free(void* p) noexcept {
  if (p) cudaFree(p);  // a destructor must not throw; a failing free leaves nothing to recover
}

void cuda_copy_to_device(void* dst, const void* src, std::size_t bytes) {
  LP_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void cuda_copy_to_host(void* dst, const void* src, std::size_t bytes) {
  LP_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void cuda_memset_zero(void* dst, std::size_t bytes) { LP_CUDA_CHECK(cudaMemset(dst, 0, bytes)); }

}  // namespace detail

}  // namespace layerparallel
