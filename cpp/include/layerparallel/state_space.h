// Where a problem's state vectors live and the arithmetic the MGRIT engine does
// on them. The engine allocates every state it keeps through a StateSpace and
// touches state memory only through it (and through the Propagator), so the
// same engine runs on host memory (HostSpace, the default) and on device
// memory (a backend's space: cudaMalloc'd states, elementwise kernels). The
// Comm only ever sees host memory: with a non-host space the engine stages
// every message through a host copy.
#pragma once

#include <cstddef>
#include <utility>

namespace layerparallel {

class StateSpace {
 public:
  virtual ~StateSpace() = default;

  /// True when the states are host memory a Comm can send from directly.
  virtual bool host() const { return true; }

  /// n doubles, zero-filled; release() frees them. Throws on failure.
  virtual double* allocate(std::size_t n);
  virtual void release(double* p) noexcept;

  /// dst = src (n doubles, both in this space; src == dst is allowed).
  virtual void copy(double* dst, const double* src, std::size_t n);
  /// dst = 0.
  virtual void zero(double* dst, std::size_t n);
  /// dst += a.
  virtual void add(double* dst, const double* a, std::size_t n);
  /// dst = a + b.
  virtual void sum(double* dst, const double* a, const double* b, std::size_t n);
  /// The FAS right-hand side: g = gf + p - g (gf == nullptr: g = p - g).
  virtual void fas(double* g, const double* gf, const double* p, std::size_t n);
  /// Many operations of one kind at once (host arrays of `count` pointers into this
  /// space, n doubles each): dst[q] = a[q] + b[q], or a copy of a[q] where b[q] is
  /// null. The default runs them one by one; a device space does them in one launch.
  virtual void sum_batch(double* const* dst, const double* const* a, const double* const* b, int count,
                         std::size_t n);
  /// g[q] = gf[q] + p[q] - g[q] (gf[q] may be null) for q < count.
  virtual void fas_batch(double* const* g, const double* const* gf, const double* const* p, int count,
                         std::size_t n);
  /// sum_k (a_k - b_k)^2 (b may be nullptr), in a fixed order.
  virtual double sum_sq_diff(const double* a, const double* b, std::size_t n) const;
  /// out[q] = sum_sq_diff(a[q], b[q], n) for q < count (host arrays of pointers,
  /// out host memory). The default calls sum_sq_diff for each; a device space
  /// reduces all of them in one launch and one download.
  virtual void sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                                 double* out) const;

  /// Waits until every operation on this space's memory has finished (before a
  /// device-aware Comm reads it). No-op for host memory.
  virtual void synchronize() {}

  /// Host memory to this space and back (n doubles).
  virtual void upload(double* dst, const double* host_src, std::size_t n);
  virtual void download(double* host_dst, const double* src, std::size_t n) const;
};

/// The process-wide host space (plain memory, the CPU backend's arithmetic).
StateSpace& host_space();

/// An owning array of doubles in a StateSpace (move-only).
class StateBuffer {
 public:
  StateBuffer() = default;
  StateBuffer(StateSpace& space, std::size_t n) : sp_(&space), n_(n), p_(n > 0 ? space.allocate(n) : nullptr) {}
  ~StateBuffer() {
    if (p_) sp_->release(p_);
  }
  StateBuffer(const StateBuffer&) = delete;
  StateBuffer& operator=(const StateBuffer&) = delete;
  StateBuffer(StateBuffer&& o) noexcept
      : sp_(o.sp_), n_(std::exchange(o.n_, 0)), p_(std::exchange(o.p_, nullptr)) {}
  StateBuffer& operator=(StateBuffer&& o) noexcept {
    if (this != &o) {
      if (p_) sp_->release(p_);
      sp_ = o.sp_;
      n_ = std::exchange(o.n_, 0);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }

  double* data() { return p_; }
  const double* data() const { return p_; }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  StateSpace* sp_ = nullptr;
  std::size_t n_ = 0;
  double* p_ = nullptr;
};

}  // namespace layerparallel
