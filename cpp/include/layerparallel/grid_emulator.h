// Runs CUDA kernel bodies (the host/device functions of *_kernels_impl.h) on
// the CPU over their launch grid: a grid block by block, a block phase by
// phase (the code between two __syncthreads()). The C++ harness tests compare
// kernels run this way with the CPU backend, and the "emulator" device
// (EmulatedBackend) runs whole device-resident training through it, so the
// kernels' arithmetic and the device backend's orchestration are tested on
// machines without a GPU. A grid CUDA would refuse (launch_plan.h's limits) is
// refused here too, so a launch that only works on the emulator cannot pass.
#pragma once

#include <cstddef>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "layerparallel/launch_plan.h"
#include "layerparallel/macros.h"

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

/// Throws std::runtime_error, as CUDA fails the launch (invalid configuration),
/// for an empty grid or block, or one past CUDA's limits.
inline void require_valid_launch(Idx3 grid, Idx3 block_dim, int shared_doubles) {
  const long long threads = static_cast<long long>(block_dim.x) * block_dim.y * block_dim.z;
  const long long shared = static_cast<long long>(shared_doubles) * static_cast<long long>(sizeof(double));
  const bool ok = grid.x >= 1 && grid.x <= kernels::kMaxGridBlocks && grid.y >= 1 &&
                  grid.y <= kernels::kMaxGridRows && grid.z >= 1 && grid.z <= kernels::kMaxGridRows &&
                  block_dim.x >= 1 && block_dim.y >= 1 && block_dim.z >= 1 && threads <= kernels::kMaxBlockThreads &&
                  shared >= 0 && shared <= kernels::kMaxSharedBytes;
  if (!ok) {
    std::ostringstream os;
    os << "a launch CUDA refuses (invalid configuration): grid (" << grid.x << ", " << grid.y << ", " << grid.z
       << "), block (" << block_dim.x << ", " << block_dim.y << ", " << block_dim.z << "), " << shared
       << " bytes of shared memory";
    detail::throw_runtime(__FILE__, __LINE__, os.str());
  }
}

template <class F>
void run_grid(Idx3 grid, Idx3 block_dim, int shared_doubles, int local_doubles, bool reverse, F&& block_fn) {
  require_valid_launch(grid, block_dim, shared_doubles);
  for (int z = 0; z < grid.z; ++z)
    for (int y = 0; y < grid.y; ++y)
      for (int x = 0; x < grid.x; ++x) {
        Block blk(block_dim, shared_doubles, local_doubles, reverse);
        block_fn(Idx3{x, y, z}, blk);
      }
}

/// One launch of a plan (launch_plan.h): block_fn(block, blk) over its grid, threads in ascending order.
template <class F>
void run_launch(const kernels::Launch& l, int local_doubles, F&& block_fn) {
  run_grid(l.grid, l.block, l.shared_doubles, local_doubles, false, std::forward<F>(block_fn));
}

}  // namespace layerparallel::emu
