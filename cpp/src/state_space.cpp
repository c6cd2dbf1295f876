// The host StateSpace: plain memory and the CPU arithmetic the engine always did.
#include "layerparallel/state_space.h"

#include <cstring>
#include <new>

namespace layerparallel {

double* StateSpace::allocate(std::size_t n) {
  double* p = new double[n];
  std::memset(p, 0, n * sizeof(double));
  return p;
}

void StateSpace::release(double* p) noexcept { delete[] p; }

void StateSpace::copy(double* dst, const double* src, std::size_t n) {
  if (src != dst && n > 0) std::memcpy(dst, src, n * sizeof(double));
}

void StateSpace::zero(double* dst, std::size_t n) {
  if (n > 0) std::memset(dst, 0, n * sizeof(double));
}

void StateSpace::add(double* dst, const double* a, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) dst[k] += a[k];
}

void StateSpace::sum(double* dst, const double* a, const double* b, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) dst[k] = a[k] + b[k];
}

void StateSpace::fas(double* g, const double* gf, const double* p, std::size_t n) {
  if (gf)
    for (std::size_t k = 0; k < n; ++k) g[k] = gf[k] + p[k] - g[k];
  else
    for (std::size_t k = 0; k < n; ++k) g[k] = p[k] - g[k];
}

void StateSpace::sum_batch(double* const* dst, const double* const* a, const double* const* b, int count,
                           std::size_t n) {
  for (int q = 0; q < count; ++q) {
    if (b[q])
      sum(dst[q], a[q], b[q], n);
    else
      copy(dst[q], a[q], n);
  }
}

void StateSpace::fas_batch(double* const* g, const double* const* gf, const double* const* p, int count,
                           std::size_t n) {
  for (int q = 0; q < count; ++q) fas(g[q], gf[q], p[q], n);
}

// Eight independent partial sums: one running sum would serialise on the add
// latency and cost more than a step. The device spaces use the same grouping
// per thread, not the same rounding.
double StateSpace::sum_sq_diff(const double* a, const double* b, std::size_t n) const {
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

void StateSpace::sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                                   double* out) const {
  for (int q = 0; q < count; ++q) out[q] = sum_sq_diff(a[q], b[q], n);
}

void StateSpace::upload(double* dst, const double* host_src, std::size_t n) { copy(dst, host_src, n); }

void StateSpace::download(double* host_dst, const double* src, std::size_t n) const {
  if (src != host_dst && n > 0) std::memcpy(host_dst, src, n * sizeof(double));
}

StateSpace& host_space() {
  static StateSpace s;
  return s;
}

}  // namespace layerparallel
