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

  /// Chains `count` steps on `level` through the fine indices idx[0] -> idx[1] ->
  /// ... -> idx[count]: outs[k] = Phi(outs[k-1]) + rhs[k] with outs[-1] = in (the
  /// F-sweep of one interval; rhs == nullptr or rhs[k] == nullptr means no
  /// right-hand side, as on the finest level). The default calls step() in a
  /// loop; a problem whose state splits into independent parts (a batch of
  /// examples) overrides it to carry each part through all the steps while it
  /// sits in cache. Must produce exactly what the loop produces.
  virtual void propagate(int level, const int* idx, int count, const double* in, double* const* outs,
                         const double* const* rhs = nullptr) {
    const double* prev = in;
    const std::size_t n = state_size();
    for (int k = 0; k < count; ++k) {
      step(level, idx[k], idx[k + 1], prev, outs[k]);
      if (rhs && rhs[k])
        for (std::size_t i = 0; i < n; ++i) outs[k][i] += rhs[k][i];
      prev = outs[k];
    }
  }

  /// Norm used for residuals (default: Euclidean).
  virtual double norm(const double* v) const { return std::sqrt(sum_sq_diff(v, nullptr, state_size())); }

  /// Norm of a - b (a residual) without forming it. The default is consistent
  /// with norm(); override both together.
  virtual double norm_diff(const double* a, const double* b) const {
    return std::sqrt(sum_sq_diff(a, b, state_size()));
  }

 protected:
  /// sum_k (a_k - b_k)^2 (b may be nullptr) with eight independent partial sums:
  /// one running sum would serialise on the add latency and cost more than a step.
  static double sum_sq_diff(const double* a, const double* b, std::size_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t k = 0;
    if (b) {
      for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; ++j) acc[j] += (a[k + j] - b[k + j]) * (a[k + j] - b[k + j]);
      for (; k < n; ++k) acc[0] += (a[k] - b[k]) * (a[k] - b[k]);
    } else {
      for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * a[k + j];
      for (; k < n; ++k) acc[0] += a[k] * a[k];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
};

}  // namespace layerparallel
