// A Comm over an MPI communicator that the caller already has (from mpi4py),
// without compiling against any MPI: the MPI library the process loaded is
// opened by path and its C functions looked up by name, and the communicator,
// MPI_DOUBLE and MPI_SUM are passed in as the integer handles mpi4py reports
// (Comm.handle, Datatype.handle, Op.handle). Handles are pointers (Open MPI) or
// ints (MPICH); both travel in one integer register on the 64-bit ABIs this
// targets (x86-64, aarch64), so one build serves either library. The engine's
// messages then cost what MPI costs, with no Python in between.
//
// Optional tracing records, per call, the calling thread's CPU time since the
// previous call (CLOCK_THREAD_CPUTIME_ID) and the message, for the scaling
// model (python/layerparallel/scaling.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layerparallel/comm.h"

namespace layerparallel {

struct MpiHandles {
  std::uintptr_t comm = 0;    ///< MPI_Comm
  std::uintptr_t dtype = 0;   ///< MPI_DOUBLE
  std::uintptr_t op_sum = 0;  ///< MPI_SUM
  std::string library;        ///< path of the loaded MPI library (e.g. .../libmpi.so.40)
};

/// One traced call: kind ("send", "recv", "wait", "allreduce", "bcast",
/// "barrier", "end"), CPU nanoseconds since the previous call, and the call's
/// peer / tag / bytes / request id where they apply (-1 otherwise).
struct TraceEvent {
  const char* kind;
  long long span_ns;
  long long peer, tag, bytes, request;
};

class MpiComm final : public Comm {
 public:
  /// Throws std::runtime_error when the library cannot be opened (it must be
  /// loaded already, e.g. by mpi4py) or a function is missing.
  explicit MpiComm(const MpiHandles& h);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(double* data, std::size_t n) override;
  void barrier() override;
  void bcast(double* data, std::size_t n, int root) override;
  int isend(const double* data, std::size_t n, int dest, int tag) override;
  int irecv(double* data, std::size_t n, int src, int tag) override;
  void wait(int request) override;

  void start_trace();
  /// Ends tracing (adds the final "end" span) and returns the events.
  std::vector<TraceEvent> stop_trace();
  bool tracing() const { return tracing_; }
  /// True when the MPI library reports CUDA-aware support (MPIX_Query_cuda_support)
  /// and LP_CUDA_AWARE_MPI is not 0.
  bool accepts_device_memory() const override { return device_aware_; }

 private:
  using fn_rank = int (*)(std::uintptr_t, int*);
  using fn_p2p = int (*)(const void*, int, std::uintptr_t, int, int, std::uintptr_t, void*);
  using fn_wait = int (*)(void*, void*);
  using fn_allreduce = int (*)(const void*, void*, int, std::uintptr_t, std::uintptr_t, std::uintptr_t);
  using fn_bcast = int (*)(void*, int, std::uintptr_t, int, std::uintptr_t);
  using fn_barrier = int (*)(std::uintptr_t);

  void check(int code, const char* what) const;
  int take_slot();
  int count(std::size_t n) const;
  void record(const char* kind, long long peer, long long tag, long long bytes, long long request);
  void done();

  MpiHandles h_;
  void* lib_ = nullptr;
  bool device_aware_ = false;
  fn_p2p isend_ = nullptr, irecv_ = nullptr;
  fn_wait wait_ = nullptr;
  fn_allreduce allreduce_ = nullptr;
  fn_bcast bcast_ = nullptr;
  fn_barrier barrier_ = nullptr;
  int rank_ = 0, size_ = 1;
  // Request slots: an MPI_Request is a pointer or an int; 8 bytes hold either.
  std::vector<std::uint64_t> requests_;
  std::vector<int> free_;
  std::vector<double> scratch_;
  bool tracing_ = false;
  long long mark_ = 0;
  std::vector<TraceEvent> events_;
};

}  // namespace layerparallel
