// Private to the MGRIT engine's source files (mgrit*.cpp): the small helpers
// and constants they share. Not installed, not part of the public API.
//
// The engine (class Mgrit, layerparallel/mgrit.h) is split the way XBraid
// splits its source:
//   mgrit.cpp          the driver: iterate / solve, V- and F-cycles, nested
//                      iteration, the coarsest and serial solves, convergence
//   mgrit_relax.cpp    F- and C-relaxation: the F-sweep's chain planning, the
//                      forward substitution, threads over the intervals
//   mgrit_fas.cpp      FAS restriction (coarse right-hand sides), correction,
//                      the finest C-point residual norm
//   mgrit_comm.cpp     messages between processes (device states staged
//                      through host copies)
//   mgrit_storage.cpp  where the values live: ownership per level, buffers and
//                      accessors, the store policy, the iterate's lifecycle
//                      and the finalized trajectory
//   mgrit_options.cpp  MgritOptions, relaxation strings and Partition checked
#pragma once

#include <cctype>
#include <limits>
#include <string>

namespace layerparallel::mgrit_detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

inline int ceil_div(int a, int b) { return a <= 0 ? 0 : (a + b - 1) / b; }

// Message kinds (tag = base + 4 level + kind, Mgrit::tag).
inline constexpr int kSweepTag = 0, kRestrictTag = 1, kChainTag = 2;

}  // namespace layerparallel::mgrit_detail
