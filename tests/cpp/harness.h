// The CPU launcher of the CUDA kernels' bodies (dense_kernels_impl.h,
// conv_kernels_impl.h), shared by the harness tests: a grid runs block by
// block, a block phase by phase (the code between two __syncthreads()).
#pragma once

#include <utility>
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "layerparallel/activation_impl.h"
#include "layerparallel/dense_kernels_impl.h"
#include "layerparallel/grid_emulator.h"

namespace lptest {

using layerparallel::Activation;
using layerparallel::ReluAct;
using layerparallel::SmoothReluAct;
using layerparallel::TanhAct;
using layerparallel::kernels::Idx3;

// The launcher (Block, run_grid) is the library's grid emulator, which also
// backs the "emulator" device.
using layerparallel::emu::Block;
using layerparallel::emu::run_grid;

inline int blocks_for(long long n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

// Activation dispatch: layerparallel::with_activation (activation_impl.h).
template <class F>
void with_act(Activation a, F&& f) {
  layerparallel::with_activation(a, std::forward<F>(f));
}

// |a - b| <= rel (1 + |b|) elementwise, with the first failing index in the message.
inline ::testing::AssertionResult close(const std::vector<double>& a, const std::vector<double>& b, double rel) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (std::size_t k = 0; k < a.size(); ++k)
    if (!(std::fabs(a[k] - b[k]) <= rel * (1.0 + std::fabs(b[k]))))
      return ::testing::AssertionFailure() << "entry " << k << ": " << a[k] << " vs " << b[k];
  return ::testing::AssertionSuccess();
}

}  // namespace lptest
