// The seam between the MGRIT engine and a problem: what the engine needs to
// know about one time-stepping problem (XBraid calls this the "app").
#pragma once

#include <cmath>
#include <cstddef>

#include "layerparallel/state_space.h"

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
      if (rhs && rhs[k]) space().add(outs[k], rhs[k], n);
      prev = outs[k];
    }
  }

  /// Several independent chains of one level at once (the F-intervals of a
  /// sweep): chains[q] is the arguments of one propagate() call; their outputs
  /// never alias each other's inputs. Called only when fuses_chains() is true;
  /// the default runs them one after another. A device backend overrides both
  /// to relax every interval of a level in one launch.
  struct Chain {
    const int* idx;
    int count;
    const double* in;
    double* const* outs;
    const double* const* rhs;
  };
  virtual bool fuses_chains() const { return false; }
  virtual void propagate_chains(int level, const Chain* chains, int n) {
    for (int q = 0; q < n; ++q)
      propagate(level, chains[q].idx, chains[q].count, chains[q].in, chains[q].outs, chains[q].rhs);
  }

  /// The engine brackets the finest level's last F-sweep of a fixed-budget call
  /// with final_sweep(true) / final_sweep(false): every finest step in it has its
  /// final input (each interval's F-points and the prediction of the next C-point,
  /// so every fine step once). A propagator may compute by-products of the final
  /// trajectory there while the states are in cache (the ResNet's act' and
  /// parameter gradient). Default: nothing.
  virtual void final_sweep(bool /*on*/) {}

  /// Where the states live; the engine allocates and combines states through it
  /// (default: host memory).
  virtual StateSpace& space() const { return host_space(); }

  /// Norm used for residuals (default: Euclidean, through space()).
  virtual double norm(const double* v) const { return std::sqrt(space().sum_sq_diff(v, nullptr, state_size())); }

  /// Norm of a - b (a residual) without forming it. The default is consistent
  /// with norm(); override both together.
  virtual double norm_diff(const double* a, const double* b) const {
    return std::sqrt(space().sum_sq_diff(a, b, state_size()));
  }

  /// out[q] = norm_diff(a[q], b[q]) for q < count (host arrays of pointers; the
  /// engine uses it for device states). The default calls norm_diff() for each;
  /// a propagator with the default norm and device states overrides it with
  /// StateSpace::sum_sq_diff_batch (one reduction for all).
  virtual void norm_diff_batch(const double* const* a, const double* const* b, int count, double* out) const {
    for (int q = 0; q < count; ++q) out[q] = norm_diff(a[q], b[q]);
  }
};

}  // namespace layerparallel
