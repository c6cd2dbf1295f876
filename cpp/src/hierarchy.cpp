// Grid hierarchy index arithmetic (see hierarchy.h for the conventions).
#include "layerparallel/hierarchy.h"

#include <algorithm>
#include <sstream>

#include "layerparallel/macros.h"

namespace layerparallel {

Range split(long n_items, int parts, int part) {
  LP_REQUIRE(n_items >= 0, "split: n_items must be >= 0, got " << n_items);
  LP_REQUIRE(parts >= 1, "split: parts must be >= 1, got " << parts);
  LP_REQUIRE(part >= 0 && part < parts, "split: part must be in [0, " << parts << "), got " << part);
  const long q = n_items / parts;
  const long r = n_items % parts;
  Range out;
  out.begin = part * q + std::min<long>(part, r);
  out.end = out.begin + q + (part < r ? 1 : 0);
  return out;
}

int split_owner(long n_items, int parts, long item) {
  LP_REQUIRE(parts >= 1, "split_owner: parts must be >= 1, got " << parts);
  LP_REQUIRE(item >= 0 && item < n_items,
             "split_owner: item must be in [0, " << n_items << "), got " << item);
  const long q = n_items / parts;
  const long r = n_items % parts;
  // The first r parts hold q + 1 items each.
  const long big = r * (q + 1);
  if (item < big) return static_cast<int>(item / (q + 1));
  return static_cast<int>(r + (item - big) / q);
}

Hierarchy::Hierarchy(int n_steps, int cfactor_fine, int cfactor, int min_coarse, int max_levels) {
  LP_REQUIRE(n_steps >= 1, "n_steps must be >= 1, got " << n_steps);
  LP_REQUIRE(cfactor >= 2, "cfactor must be >= 2, got " << cfactor);
  LP_REQUIRE(cfactor_fine == -1 || cfactor_fine >= 2,
             "cfactor_fine must be -1 (same as cfactor) or >= 2, got " << cfactor_fine);
  LP_REQUIRE(min_coarse >= 1, "min_coarse must be >= 1, got " << min_coarse);
  LP_REQUIRE(max_levels >= 1, "max_levels must be >= 1, got " << max_levels);
  const int m_fine = cfactor_fine == -1 ? cfactor : cfactor_fine;

  int n = n_steps;
  int stride = 1;
  for (;;) {
    const int level = static_cast<int>(n_.size());
    const int m = level == 0 ? m_fine : cfactor;
    n_.push_back(n);
    stride_.push_back(stride);
    const bool coarsen = level + 1 < max_levels && n > min_coarse && n / m >= 1;
    if (!coarsen) {
      m_.push_back(1);
      break;
    }
    m_.push_back(m);
    n /= m;
    stride *= m;
  }
}

void Hierarchy::check_level(int level) const {
  LP_REQUIRE(level >= 0 && level < num_levels(),
             "level must be in [0, " << num_levels() << "), got " << level);
}

int Hierarchy::n_intervals(int level) const {
  check_level(level);
  return n_[level];
}

int Hierarchy::cfactor(int level) const {
  check_level(level);
  return m_[level];
}

int Hierarchy::stride(int level) const {
  check_level(level);
  return stride_[level];
}

int Hierarchy::fine_index(int level, int j) const {
  check_level(level);
  LP_REQUIRE(j >= 0 && j <= n_[level],
             "point index must be in [0, " << n_[level] << "] on level " << level << ", got " << j);
  return j * stride_[level];
}

bool Hierarchy::is_cpoint(int level, int j) const {
  check_level(level);
  LP_REQUIRE(j >= 0 && j <= n_[level],
             "point index must be in [0, " << n_[level] << "] on level " << level << ", got " << j);
  return j % m_[level] == 0;
}

int Hierarchy::n_cpoints(int level) const {
  check_level(level);
  return n_[level] / m_[level] + 1;
}

int Hierarchy::coarse_index(int level, int j) const {
  LP_REQUIRE(is_cpoint(level, j), "point " << j << " of level " << level << " is not a C-point");
  return j / m_[level];
}

int Hierarchy::n_fintervals(int level) const {
  check_level(level);
  return is_coarsest(level) ? 0 : n_cpoints(level);
}

FInterval Hierarchy::finterval(int level, int c) const {
  LP_REQUIRE(c >= 0 && c < n_fintervals(level),
             "F-interval index must be in [0, " << n_fintervals(level) << ") on level " << level
                                                 << ", got " << c);
  const int m = m_[level];
  const int n = n_[level];
  FInterval iv;
  iv.cpoint = c * m;
  iv.f_begin = iv.cpoint + 1;
  iv.f_end = std::min(iv.cpoint + m, n + 1);
  iv.next_cpoint = iv.cpoint + m <= n ? iv.cpoint + m : -1;
  return iv;
}

int Hierarchy::n_fpoints(int level) const {
  check_level(level);
  return n_[level] + 1 - n_cpoints(level);
}

Range Hierarchy::points_in(int level, long fine_begin, long fine_end) const {
  check_level(level);
  const long s = stride_[level];
  const long last = n_[level];
  auto ceil_div = [s](long a) { return a <= 0 ? 0 : (a + s - 1) / s; };
  Range r;
  r.begin = std::min(ceil_div(fine_begin), last + 1);
  r.end = std::min(ceil_div(fine_end), last + 1);
  if (r.end < r.begin) r.end = r.begin;
  return r;
}

std::string Hierarchy::describe() const {
  std::ostringstream os;
  for (int l = 0; l < num_levels(); ++l) {
    os << "level " << l << ": " << n_[l] << " intervals, stride " << stride_[l];
    if (!is_coarsest(l))
      os << ", cfactor " << m_[l];
    else
      os << " (coarsest, serial)";
    os << "\n";
  }
  return os.str();
}

}  // namespace layerparallel
