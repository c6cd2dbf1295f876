// The cuBLAS loader (cublas_loader.h): dlopen on first use, once per process.
#include <cuda_runtime.h>  // CUDART_VERSION: the cuBLAS of this runtime's major version

#include <dlfcn.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "cublas_loader.h"

namespace layerparallel {

namespace {

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

}  // namespace

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

}  // namespace layerparallel
