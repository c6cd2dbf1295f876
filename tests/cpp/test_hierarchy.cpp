// Hierarchy index arithmetic and the ownership split.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "layerparallel/hierarchy.h"

using layerparallel::FInterval;
using layerparallel::Hierarchy;
using layerparallel::Range;
using layerparallel::split;
using layerparallel::split_owner;

namespace {

// Independent expectation: level sizes by the documented coarsening rule.
std::vector<int> expected_sizes(int N, int m_fine, int m, int min_coarse, int max_levels) {
  std::vector<int> out{N};
  while (static_cast<int>(out.size()) < max_levels) {
    const int n = out.back();
    const int f = out.size() == 1 ? m_fine : m;
    if (n <= min_coarse || n / f < 1) break;
    out.push_back(n / f);
  }
  return out;
}

}  // namespace

TEST(Hierarchy, LevelSizesAndFineIndices) {
  for (int N : {16, 30, 64, 1000}) {
    for (int m : {2, 3, 4, 8}) {
      SCOPED_TRACE(::testing::Message() << "N=" << N << " m=" << m);
      const Hierarchy h(N, -1, m, 2, 10);
      const std::vector<int> sizes = expected_sizes(N, m, m, 2, 10);
      ASSERT_EQ(h.num_levels(), static_cast<int>(sizes.size()));
      int stride = 1;
      for (int l = 0; l < h.num_levels(); ++l) {
        EXPECT_EQ(h.n_intervals(l), sizes[l]);
        EXPECT_EQ(h.n_points(l), sizes[l] + 1);
        EXPECT_EQ(h.stride(l), stride);
        for (int j = 0; j <= sizes[l]; ++j) EXPECT_EQ(h.fine_index(l, j), j * stride);
        if (l + 1 < h.num_levels()) {
          EXPECT_EQ(h.cfactor(l), m);
          // Level l+1 consists exactly of level l's C-points.
          EXPECT_EQ(h.n_cpoints(l), h.n_points(l + 1));
          int nc = 0;
          for (int j = 0; j <= sizes[l]; ++j) {
            EXPECT_EQ(h.is_cpoint(l, j), j % m == 0);
            if (j % m == 0) {
              EXPECT_EQ(h.fine_index(l + 1, h.coarse_index(l, j)), h.fine_index(l, j));
              ++nc;
            }
          }
          EXPECT_EQ(nc, h.n_cpoints(l));
          stride *= m;
        } else {
          EXPECT_TRUE(h.is_coarsest(l));
          EXPECT_EQ(h.cfactor(l), 1);
          EXPECT_EQ(h.n_fintervals(l), 0);
        }
      }
    }
  }
}

TEST(Hierarchy, IntervalsCoverEveryPointOnce) {
  for (int N : {16, 30, 64, 1000}) {
    for (int m : {2, 3, 4, 8}) {
      SCOPED_TRACE(::testing::Message() << "N=" << N << " m=" << m);
      const Hierarchy h(N, -1, m, 2, 10);
      for (int l = 0; l + 1 < h.num_levels(); ++l) {
        const int n = h.n_intervals(l);
        std::vector<int> seen(n + 1, 0);
        int nf = 0;
        for (int c = 0; c < h.n_fintervals(l); ++c) {
          const FInterval iv = h.finterval(l, c);
          EXPECT_EQ(iv.cpoint, c * m);
          EXPECT_TRUE(h.is_cpoint(l, iv.cpoint));
          ++seen[iv.cpoint];
          for (int i = iv.f_begin; i < iv.f_end; ++i) {
            EXPECT_FALSE(h.is_cpoint(l, i));
            ++seen[i];
          }
          nf += iv.n_fpoints();
          if (c + 1 < h.n_fintervals(l)) {
            EXPECT_EQ(iv.n_fpoints(), m - 1);
            EXPECT_EQ(iv.next_cpoint, (c + 1) * m);
          } else {
            // The trailing interval: no C-point follows; it holds n % m F-points.
            EXPECT_EQ(iv.next_cpoint, -1);
            EXPECT_EQ(iv.n_fpoints(), n % m);
          }
        }
        for (int j = 0; j <= n; ++j) EXPECT_EQ(seen[j], 1) << "point " << j << " level " << l;
        EXPECT_EQ(nf, h.n_fpoints(l));
      }
    }
  }
}

TEST(Hierarchy, UnevenExample) {
  // N = 30, m = 4: 30 -> 7 -> 1. The last fine point is not a C-point.
  const Hierarchy h(30, -1, 4, 2, 10);
  ASSERT_EQ(h.num_levels(), 3);
  EXPECT_EQ(h.n_intervals(1), 7);
  EXPECT_EQ(h.n_intervals(2), 1);
  EXPECT_FALSE(h.is_cpoint(0, 30));
  EXPECT_EQ(h.fine_index(1, 7), 28);
  EXPECT_EQ(h.fine_index(2, 1), 16);
  const FInterval last0 = h.finterval(0, 7);
  EXPECT_EQ(last0.cpoint, 28);
  EXPECT_EQ(last0.f_begin, 29);
  EXPECT_EQ(last0.f_end, 31);
  EXPECT_EQ(last0.next_cpoint, -1);
  const FInterval last1 = h.finterval(1, 1);  // level-1 points 5, 6, 7 = fine 20, 24, 28
  EXPECT_EQ(last1.cpoint, 4);
  EXPECT_EQ(last1.f_begin, 5);
  EXPECT_EQ(last1.f_end, 8);
  EXPECT_EQ(h.fine_index(1, last1.f_begin), 20);
}

TEST(Hierarchy, DifferentFineFactor) {
  const Hierarchy h(64, 4, 2, 2, 10);  // 64 -> 16 -> 8 -> 4 -> 2
  ASSERT_EQ(h.num_levels(), 5);
  const std::vector<int> want{64, 16, 8, 4, 2};
  for (int l = 0; l < 5; ++l) EXPECT_EQ(h.n_intervals(l), want[l]);
  EXPECT_EQ(h.cfactor(0), 4);
  EXPECT_EQ(h.cfactor(1), 2);
  EXPECT_EQ(h.stride(2), 8);
  EXPECT_EQ(h.fine_index(4, 2), 64);
}

TEST(Hierarchy, MinCoarseAndMaxLevels) {
  {
    const Hierarchy h(64, -1, 2, 10, 10);  // 64, 32, 16, 8 (8 <= 10 stops)
    ASSERT_EQ(h.num_levels(), 4);
    EXPECT_EQ(h.n_intervals(3), 8);
  }
  {
    const Hierarchy h(64, -1, 2, 2, 2);
    ASSERT_EQ(h.num_levels(), 2);
    EXPECT_EQ(h.n_intervals(1), 32);
  }
  {
    const Hierarchy h(64, -1, 2, 2, 1);
    EXPECT_EQ(h.num_levels(), 1);
    EXPECT_EQ(h.n_fintervals(0), 0);
  }
  {
    // min_coarse reached exactly: 16 -> 8 -> 4 -> 2, not further.
    const Hierarchy h(16, -1, 2, 2, 10);
    ASSERT_EQ(h.num_levels(), 4);
    EXPECT_EQ(h.n_intervals(3), 2);
  }
  {
    // Fewer intervals than the factor: no coarse grid with >= 1 interval.
    const Hierarchy h(3, -1, 4, 1, 10);
    EXPECT_EQ(h.num_levels(), 1);
  }
  {
    // 9 -> 2 (m = 4) even though 2 > min_coarse = 1: next would be 0 intervals.
    const Hierarchy h(9, -1, 4, 1, 10);
    ASSERT_EQ(h.num_levels(), 2);
    EXPECT_EQ(h.n_intervals(1), 2);
  }
}

TEST(Hierarchy, InvalidArguments) {
  EXPECT_THROW(Hierarchy(0, -1, 2, 2, 10), std::invalid_argument);
  EXPECT_THROW(Hierarchy(16, -1, 1, 2, 10), std::invalid_argument);
  EXPECT_THROW(Hierarchy(16, 1, 2, 2, 10), std::invalid_argument);
  EXPECT_THROW(Hierarchy(16, -1, 2, 0, 10), std::invalid_argument);
  EXPECT_THROW(Hierarchy(16, -1, 2, 2, 0), std::invalid_argument);
  const Hierarchy h(16, -1, 2, 2, 10);
  EXPECT_THROW(h.fine_index(0, 17), std::invalid_argument);
  EXPECT_THROW(h.n_intervals(h.num_levels()), std::invalid_argument);
  EXPECT_THROW(h.coarse_index(0, 3), std::invalid_argument);
}

TEST(Split, EvenUnevenAndEmpty) {
  for (long n : {0L, 1L, 5L, 7L, 16L, 31L, 1000L}) {
    for (int p : {1, 2, 3, 4, 7, 8, 40}) {
      long next = 0;
      long minsz = n + 1, maxsz = -1;
      for (int k = 0; k < p; ++k) {
        const Range r = split(n, p, k);
        EXPECT_EQ(r.begin, next) << "n=" << n << " p=" << p << " k=" << k;
        EXPECT_GE(r.size(), 0);
        next = r.end;
        minsz = std::min(minsz, r.size());
        maxsz = std::max(maxsz, r.size());
        for (long i = r.begin; i < r.end; ++i) EXPECT_EQ(split_owner(n, p, i), k);
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(maxsz - minsz, 1);  // balanced
    }
  }
  // Uneven: 10 over 4 -> 3, 3, 2, 2.
  EXPECT_EQ(split(10, 4, 0).size(), 3);
  EXPECT_EQ(split(10, 4, 1).begin, 3);
  EXPECT_EQ(split(10, 4, 3).begin, 8);
  EXPECT_EQ(split(10, 4, 3).end, 10);
  // More parts than items: the last parts are empty.
  EXPECT_TRUE(split(3, 5, 3).empty());
  EXPECT_TRUE(split(3, 5, 4).empty());
  EXPECT_EQ(split(3, 5, 2).begin, 2);
  EXPECT_THROW(split(3, 0, 0), std::invalid_argument);
  EXPECT_THROW(split(3, 2, 2), std::invalid_argument);
  EXPECT_THROW(split(-1, 2, 0), std::invalid_argument);
}

TEST(Hierarchy, PointsInBlockMayHoldNoCoarsePoint) {
  const Hierarchy h(30, -1, 4, 2, 10);  // strides 1, 4, 16
  // Fine points 0..30 over 4 processes: 8, 8, 8, 7 points.
  long total1 = 0;
  for (int p = 0; p < 4; ++p) {
    const Range fr = split(31, 4, p);
    const Range r0 = h.points_in(0, fr.begin, fr.end);
    EXPECT_EQ(r0.begin, fr.begin);
    EXPECT_EQ(r0.end, fr.end);
    total1 += h.points_in(1, fr.begin, fr.end).size();
  }
  EXPECT_EQ(total1, 8);  // level-1 points 0..7, each owned once
  // Block [9, 12) holds no level-1 point (level-1 points are multiples of 4).
  EXPECT_TRUE(h.points_in(1, 9, 12).empty());
  // Block [17, 31) holds no level-2 point (0 and 16 only).
  EXPECT_TRUE(h.points_in(2, 17, 31).empty());
  const Range r = h.points_in(1, 8, 24);  // fine 8, 12, 16, 20
  EXPECT_EQ(r.begin, 2);
  EXPECT_EQ(r.end, 6);
}
