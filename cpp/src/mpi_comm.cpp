// MpiComm: MPI through the functions of the already loaded library (see mpi_comm.h).
#include "layerparallel/mpi_comm.h"

#include <dlfcn.h>

#include <cstdlib>
#include <time.h>

#include <climits>
#include <cstring>
#include <stdexcept>

#include "layerparallel/macros.h"

namespace layerparallel {

namespace {

long long thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

template <class F>
F lookup(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (!p) throw std::runtime_error(std::string("MpiComm: the MPI library has no function ") + name);
  return reinterpret_cast<F>(p);
}

// Big enough for MPI_Status of Open MPI (24 bytes) and MPICH (20 bytes).
struct StatusBuffer {
  alignas(8) unsigned char bytes[64];
};

}  // namespace

MpiComm::MpiComm(const MpiHandles& h) : h_(h) {
  LP_REQUIRE(!h.library.empty(), "MpiComm: the MPI library path is empty");
  LP_REQUIRE(h.comm != 0 && h.dtype != 0 && h.op_sum != 0, "MpiComm: the MPI handles must be non-zero");
  // RTLD_NOLOAD: only an MPI that this process already loaded (and initialised) is used.
  lib_ = dlopen(h.library.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!lib_)
    throw std::runtime_error("MpiComm: the MPI library " + h.library + " is not loaded in this process");
  isend_ = lookup<fn_p2p>(lib_, "MPI_Isend");
  irecv_ = lookup<fn_p2p>(lib_, "MPI_Irecv");
  wait_ = lookup<fn_wait>(lib_, "MPI_Wait");
  allreduce_ = lookup<fn_allreduce>(lib_, "MPI_Allreduce");
  bcast_ = lookup<fn_bcast>(lib_, "MPI_Bcast");
  barrier_ = lookup<fn_barrier>(lib_, "MPI_Barrier");
  check(lookup<fn_rank>(lib_, "MPI_Comm_rank")(h.comm, &rank_), "MPI_Comm_rank");
  check(lookup<fn_rank>(lib_, "MPI_Comm_size")(h.comm, &size_), "MPI_Comm_size");
  // Device buffers go to MPI directly only when the library says it takes them
  // (Open MPI's and MPICH's MPIX_Query_cuda_support() == 1) and the user did not
  // turn it off (LP_CUDA_AWARE_MPI=0); otherwise the solvers stage through host copies.
  if (void* q = dlsym(lib_, "MPIX_Query_cuda_support")) {
    const char* env = std::getenv("LP_CUDA_AWARE_MPI");
    device_aware_ = reinterpret_cast<int (*)()>(q)() == 1 && !(env && std::string(env) == "0");
  }
}

MpiComm::~MpiComm() {
  if (lib_) dlclose(lib_);  // drops the reference RTLD_NOLOAD took; the library stays loaded
}

void MpiComm::check(int code, const char* what) const {
  if (code != 0) throw std::runtime_error(std::string("MpiComm: ") + what + " failed with MPI error " + std::to_string(code));
}

int MpiComm::count(std::size_t n) const {
  LP_REQUIRE(n <= static_cast<std::size_t>(INT_MAX), "MpiComm: a message of " << n << " doubles is too long for MPI");
  return static_cast<int>(n);
}

void MpiComm::record(const char* kind, long long peer, long long tag, long long bytes, long long request) {
  if (!tracing_) return;
  events_.push_back(TraceEvent{kind, thread_cpu_ns() - mark_, peer, tag, bytes, request});
}

void MpiComm::done() {
  if (tracing_) mark_ = thread_cpu_ns();
}

void MpiComm::allreduce_sum(double* data, std::size_t n) {
  record("allreduce", -1, -1, static_cast<long long>(n * sizeof(double)), -1);
  // A copy instead of MPI_IN_PLACE, whose value differs between MPI libraries.
  scratch_.assign(data, data + n);
  check(allreduce_(scratch_.data(), data, count(n), h_.dtype, h_.op_sum, h_.comm), "MPI_Allreduce");
  done();
}

void MpiComm::barrier() {
  record("barrier", -1, -1, 0, -1);
  check(barrier_(h_.comm), "MPI_Barrier");
  done();
}

void MpiComm::bcast(double* data, std::size_t n, int root) {
  record("bcast", root, -1, static_cast<long long>(n * sizeof(double)), -1);
  check(bcast_(data, count(n), h_.dtype, root, h_.comm), "MPI_Bcast");
  done();
}

int MpiComm::take_slot() {
  if (!free_.empty()) {
    const int id = free_.back();
    free_.pop_back();
    return id;
  }
  requests_.push_back(0);
  return static_cast<int>(requests_.size()) - 1;
}

int MpiComm::isend(const double* data, std::size_t n, int dest, int tag) {
  const int id = take_slot();
  record("send", dest, tag, static_cast<long long>(n * sizeof(double)), id);
  check(isend_(data, count(n), h_.dtype, dest, tag, h_.comm, &requests_[id]), "MPI_Isend");
  done();
  return id;
}

int MpiComm::irecv(double* data, std::size_t n, int src, int tag) {
  const int id = take_slot();
  record("recv", src, tag, static_cast<long long>(n * sizeof(double)), id);
  check(irecv_(data, count(n), h_.dtype, src, tag, h_.comm, &requests_[id]), "MPI_Irecv");
  done();
  return id;
}

void MpiComm::wait(int request) {
  LP_REQUIRE(request >= 0 && static_cast<std::size_t>(request) < requests_.size(),
             "MpiComm: unknown request " << request);
  record("wait", -1, -1, -1, request);
  StatusBuffer status;
  check(wait_(&requests_[request], &status), "MPI_Wait");
  free_.push_back(request);
  done();
}

void MpiComm::start_trace() {
  events_.clear();
  tracing_ = true;
  mark_ = thread_cpu_ns();
}

std::vector<TraceEvent> MpiComm::stop_trace() {
  if (tracing_) events_.push_back(TraceEvent{"end", thread_cpu_ns() - mark_, -1, -1, -1, -1});
  tracing_ = false;
  std::vector<TraceEvent> out;
  out.swap(events_);
  return out;
}

}  // namespace layerparallel
