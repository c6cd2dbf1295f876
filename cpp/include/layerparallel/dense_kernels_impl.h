// Bodies of the CUDA kernels of the dense residual layer, as host/device inline
// functions of explicit launch indices. cuda/dense_kernels.cu calls them with
// blockIdx/threadIdx/blockDim/gridDim and a __syncthreads() between phases;
// tests/cpp/test_kernel_harness.cpp runs the very same bodies over the launch
// grid on the CPU (every thread of a block through phase 1, then phase 2, ...),
// which is how the kernels' arithmetic is tested on machines without a GPU.
//
// Conventions shared by all bodies:
// - A kernel with barriers is split into phase functions. Between two phases
//   the caller synchronises the block; inside a phase a thread touches only its
//   own outputs, so the threads of a phase may run in any order.
// - Every thread of a block runs every phase (threads past the last example
//   still help to load shared memory and reach every barrier).
// - Shared memory is passed in explicitly (`sh`, doubles); thread-local state
//   that lives across phases (`cur`) too, so the CPU harness can keep it.
// - The per-example math is that of dense_impl.h, never a copy of it.
//
// The bodies live in three headers (this one includes them all):
// - kernel_base_impl.h: launch indices, block sizes, compile-time widths;
// - narrow_kernels_impl.h: the narrow layer's kernels (w <= kMaxWidth);
// - state_kernels_impl.h: elementwise state arithmetic, fixed-order reductions
//   and the wide layers' epilogues.
// Their launch grids, block sizes and shared memory: launch_plan.h.
#pragma once

#include "layerparallel/kernel_base_impl.h"
#include "layerparallel/narrow_kernels_impl.h"
#include "layerparallel/state_kernels_impl.h"
