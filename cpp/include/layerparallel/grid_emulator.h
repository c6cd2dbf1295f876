// Runs CUDA kernel bodies (the host/device functions of *_kernels_impl.h) on
// the CPU over their launch grid: a grid block by block, a block phase by
// phase (the code between two __syncthreads()). The C++ harness tests compare
// kernels run this way with the CPU backend, and the "emulator" device
// (EmulatedBackend) runs whole device-resident training through it, so the
// kernels' arithmetic and the device backend's orchestration are tested on
// machines without a GPU.
#pragma once

#include <cstddef>
#include <limits>
#include <vector>

#include "layerparallel/dense_kernels_impl.h"

namespace layerparallel::emu {

using kernels::Idx3;

// run_grid calls block_fn(block, blk) for every block of the grid; inside,
// blk.phase(f) runs f(thread, shared, local) for every thread of the block
// (the code between two __syncthreads()). Shared memory is one vector per
// block; `local` is each thread's private state that lives across phases.
// Threads run in ascending or, with reverse = true, descending order: a body
// whose threads depend on each other within a phase gives different results.
class Block {
 public:
  Block(Idx3 dim, int shared_doubles, int local_doubles, bool reverse)
      : dim_(dim), reverse_(reverse), shared_(shared_doubles, kPoison),
        local_(static_cast<std::size_t>(dim.x) * dim.y * dim.z * local_doubles, kPoison), local_n_(local_doubles) {}

  template <class F>
  void phase(F&& f) {
    const int n = dim_.x * dim_.y * dim_.z;
    for (int q = 0; q < n; ++q) {
      const int t = reverse_ ? n - 1 - q : q;
      const Idx3 thread{t % dim_.x, (t / dim_.x) % dim_.y, t / (dim_.x * dim_.y)};
      f(thread, shared_.data(), local_.data() + static_cast<std::size_t>(t) * local_n_);
    }
  }

 private:
  // Uninitialised shared memory on a GPU holds garbage; NaN makes a read before a write show.
  static constexpr double kPoison = std::numeric_limits<double>::quiet_NaN();
  Idx3 dim_;
  bool reverse_;
  std::vector<double> shared_, local_;
  int local_n_;
};

template <class F>
void run_grid(Idx3 grid, Idx3 block_dim, int shared_doubles, int local_doubles, bool reverse, F&& block_fn) {
  for (int z = 0; z < grid.z; ++z)
    for (int y = 0; y < grid.y; ++y)
      for (int x = 0; x < grid.x; ++x) {
        Block blk(block_dim, shared_doubles, local_doubles, reverse);
        block_fn(Idx3{x, y, z}, blk);
      }
}

}  // namespace layerparallel::emu
