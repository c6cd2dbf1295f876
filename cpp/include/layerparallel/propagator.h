// The seam between the MGRIT engine and a problem: what the engine needs to
// know about one time-stepping problem (XBraid calls this the "app").
#pragma once

#include <cmath>
#include <cstddef>

namespace layerparallel {

/// One time-stepping problem u_{i+1} = Phi_i(u_i) on the fine grid i = 0..N.
///
/// The engine only ever steps forward in its own index; a problem that runs
/// backwards (the adjoint) maps its indices before implementing this.
/// Implementations must be safe to call concurrently for different (i0, i1)
/// pairs: the engine relaxes independent intervals on several threads.
class Propagator {
 public:
  virtual ~Propagator() = default;

  /// Number of doubles in one state vector.
  virtual std::size_t state_size() const = 0;

  /// out = Phi(in): one step on grid level `level` from fine index i0 to fine
  /// index i1 (> i0). On the finest level i1 = i0 + 1; on coarse levels the
  /// step spans i1 - i0 fine steps (the coarse step size). `in` and `out`
  /// never alias.
  virtual void step(int level, int i0, int i1, const double* in, double* out) = 0;

  /// Norm used for residuals (default: Euclidean).
  virtual double norm(const double* v) const {
    double s = 0.0;
    const std::size_t n = state_size();
    for (std::size_t k = 0; k < n; ++k) s += v[k] * v[k];
    return std::sqrt(s);
  }
};

}  // namespace layerparallel
