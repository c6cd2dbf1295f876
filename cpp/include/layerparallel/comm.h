// Communicator seam: the engine and the optimiser talk to other processes only
// through this interface. The serial implementation lives here; the MPI one
// (built from an mpi4py communicator) plugs in behind the same interface.
#pragma once

#include <cstddef>

namespace layerparallel {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// In-place element-wise sum over all processes.
  virtual void allreduce_sum(double* data, std::size_t n) = 0;
  virtual void barrier() = 0;
};

/// The one-process communicator: every collective is the identity.
class SerialComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(double*, std::size_t) override {}
  void barrier() override {}
};

}  // namespace layerparallel
