// What the kernel files share: the CUDA launch indices as the bodies'
// kernels::Idx3, and a checked launch of one kernels::Launch of a plan
// (launch_plan.h), so every launch's grid, block and shared memory come from
// the plan the emulator runs too.
#pragma once

#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "layerparallel/launch_plan.h"

namespace layerparallel {

LP_DEVICE inline kernels::Idx3 idx3(const uint3& v) {
  return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)};
}
LP_DEVICE inline kernels::Idx3 idx3(const dim3& v) {
  return {static_cast<int>(v.x), static_cast<int>(v.y), static_cast<int>(v.z)};
}

inline dim3 cuda_dim3(const kernels::Idx3& v) {
  return dim3(static_cast<unsigned>(v.x), static_cast<unsigned>(v.y), static_cast<unsigned>(v.z));
}

}  // namespace layerparallel

/// The launch indices of a kernel as Idx3 (blk, thr, bdim), each possibly unused.
#define LP_KERNEL_INDICES                                                      \
  const ::layerparallel::kernels::Idx3 blk = ::layerparallel::idx3(blockIdx);  \
  const ::layerparallel::kernels::Idx3 thr = ::layerparallel::idx3(threadIdx); \
  const ::layerparallel::kernels::Idx3 bdim = ::layerparallel::idx3(blockDim); \
  (void)blk;                                                                   \
  (void)thr;                                                                   \
  (void)bdim

/// Launches `kernel` over one kernels::Launch (grid, block, dynamic shared memory) and checks the launch.
#define LP_CUDA_LAUNCH_AT(kernel, launch, ...)                                                 \
  LP_CUDA_LAUNCH(kernel, ::layerparallel::cuda_dim3((launch).grid),                           \
                 ::layerparallel::cuda_dim3((launch).block), (launch).shared_bytes(), __VA_ARGS__)
