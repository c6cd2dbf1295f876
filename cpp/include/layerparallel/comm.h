// Communicator seam: the engine and the solvers talk to other processes only
// through this interface. The serial implementation lives here; the MPI one is
// an mpi4py communicator behind the same interface (python/bindings), and the
// C++ tests run several engines on threads through an in-process one.
#pragma once

#include <cstddef>
#include <stdexcept>

namespace layerparallel {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// In-place element-wise sum over all processes.
  virtual void allreduce_sum(double* data, std::size_t n) = 0;
  virtual void barrier() = 0;
  /// In-place broadcast of `n` doubles from `root`.
  virtual void bcast(double* data, std::size_t n, int root) = 0;
  /// Non-blocking send of n doubles to `dest` with `tag`; returns a request id
  /// for wait(). The buffer must not change until the request completed.
  virtual int isend(const double* data, std::size_t n, int dest, int tag) = 0;
  /// Non-blocking receive of n doubles from `src` with `tag` into `data`.
  virtual int irecv(double* data, std::size_t n, int src, int tag) = 0;
  /// Completes a request returned by isend or irecv.
  virtual void wait(int request) = 0;
  /// True when isend / irecv / bcast accept device memory (a CUDA-aware MPI that
  /// says so); otherwise the solvers stage device states through host copies.
  virtual bool accepts_device_memory() const { return false; }
};

/// The one-process communicator: every collective is the identity and there is
/// no other process to send to.
class SerialComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(double*, std::size_t) override {}
  void barrier() override {}
  void bcast(double*, std::size_t, int) override {}
  int isend(const double*, std::size_t, int, int) override { throw std::logic_error("SerialComm: no peer to send to"); }
  int irecv(double*, std::size_t, int, int) override { throw std::logic_error("SerialComm: no peer to receive from"); }
  void wait(int) override {}
};

}  // namespace layerparallel
