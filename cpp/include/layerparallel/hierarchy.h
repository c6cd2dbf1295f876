// The MGRIT grid hierarchy over the layer index: which points exist on each
// level, which are C- or F-points, which F-points an interval owns, and the
// contiguous ownership split used for processes and threads. Pure index
// arithmetic: no states, no propagator.
#pragma once

#include <string>
#include <vector>

namespace layerparallel {

/// Half-open index range [begin, end).
struct Range {
  long begin = 0;
  long end = 0;
  long size() const { return end - begin; }
  bool empty() const { return end <= begin; }
};

/// Contiguous block `part` of `n_items` items split over `parts` owners. The
/// first n_items % parts owners get one item more; no divisibility is needed and
/// owners past the items get an empty range (begin == end).
Range split(long n_items, int parts, int part);

/// The part that owns `item` under split(n_items, parts, .).
int split_owner(long n_items, int parts, long item);

/// One F-interval of a level: C-point `cpoint` followed by its F-points
/// [f_begin, f_end) (level indices). `next_cpoint` is the C-point that follows
/// the interval, or -1 for the trailing interval after the last C-point (which
/// exists when the level's interval count is not divisible by its factor; it is
/// F-relaxed but feeds no C-point).
struct FInterval {
  int cpoint = 0;
  int f_begin = 0;
  int f_end = 0;
  int next_cpoint = -1;
  int n_fpoints() const { return f_end - f_begin; }
};

/// Grid levels 0..L-1. Level 0 has the fine points 0..N. Level l has points
/// 0..N_l; with coarsening factor m_l (cfactor_fine on level 0, cfactor on the
/// others) its C-points are the level indices 0, m_l, 2 m_l, ..., i.e.
/// floor(N_l / m_l) + 1 points, and level l+1 consists of exactly these points,
/// so N_{l+1} = floor(N_l / m_l). The last point N_l is a C-point only if m_l
/// divides N_l. Point j of level l is fine point j * stride(l) with
/// stride(l) = m_0 m_1 ... m_{l-1}.
///
/// Coarsening rule: level l is coarsened (gets a level below it) while
///   L < max_levels, N_l > min_coarse and floor(N_l / m_l) >= 1
/// (a coarse grid without a single interval would be a lone point: nothing to
/// solve). The last level is the coarsest; it is solved serially and has no
/// C/F split (every point counts as a C-point, cfactor() returns 1).
class Hierarchy {
 public:
  /// Throws std::invalid_argument for n_steps < 1, factors < 2 (cfactor_fine
  /// = -1 means "same as cfactor"), min_coarse < 1 or max_levels < 1.
  Hierarchy(int n_steps, int cfactor_fine, int cfactor, int min_coarse, int max_levels);

  int num_levels() const { return static_cast<int>(n_.size()); }
  /// Number of intervals N_l of level l (points are 0..N_l).
  int n_intervals(int level) const;
  int n_points(int level) const { return n_intervals(level) + 1; }
  /// Coarsening factor m_l used to build level l+1; 1 on the coarsest level.
  int cfactor(int level) const;
  /// Fine-grid distance between neighbouring points of level l.
  int stride(int level) const;
  bool is_coarsest(int level) const { return level == num_levels() - 1; }

  /// Fine index of point j of level l.
  int fine_index(int level, int j) const;
  bool is_cpoint(int level, int j) const;
  /// Number of C-points of level l (= n_points(l + 1); n_points(l) on the coarsest).
  int n_cpoints(int level) const;
  /// Index on level l+1 of C-point j of level l (j must be a C-point).
  int coarse_index(int level, int j) const;

  /// Number of F-intervals of level l: one per C-point, the last possibly
  /// empty. The coarsest level has none.
  int n_fintervals(int level) const;
  /// F-interval c (0 <= c < n_fintervals): C-point c m_l and its F-points.
  FInterval finterval(int level, int c) const;
  /// Total number of F-points of level l.
  int n_fpoints(int level) const;

  /// Level-l points whose fine index lies in [fine_begin, fine_end): used to
  /// map a process's contiguous block of fine points to its points per level
  /// (the range may be empty: a process may own no point of a coarse level).
  Range points_in(int level, long fine_begin, long fine_end) const;

  /// One line per level: intervals, factor, stride.
  std::string describe() const;

 private:
  void check_level(int level) const;
  std::vector<int> n_;       // intervals per level
  std::vector<int> m_;       // factor per level (1 on the coarsest)
  std::vector<int> stride_;  // fine distance of neighbouring points
};

}  // namespace layerparallel
