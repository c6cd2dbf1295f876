// The parameter layout and the regularisers (parameters.h).
#include "layerparallel/parameters.h"

#include <cmath>
#include <stdexcept>

#include "layerparallel/macros.h"

namespace layerparallel {

void Regularization::validate() const {
  LP_REQUIRE(std::isfinite(tikhonov) && tikhonov >= 0.0, "regularization.tikhonov must be >= 0, got " << tikhonov);
  LP_REQUIRE(std::isfinite(classifier) && classifier >= 0.0,
             "regularization.classifier must be >= 0, got " << classifier);
  LP_REQUIRE(std::isfinite(ddt) && ddt >= 0.0, "regularization.ddt must be >= 0, got " << ddt);
}

std::size_t ParameterBlock::size() const {
  std::size_t n = 1;
  for (int d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::size_t ParameterBlock::row() const {
  if (!per_layer) return size();
  return shape.empty() || shape[0] == 0 ? 0 : size() / static_cast<std::size_t>(shape[0]);
}

std::size_t ParameterLayout::size() const {
  std::size_t n = 0;
  for (const auto& b : blocks) n += b.size();
  return n;
}

std::size_t ParameterLayout::slot(std::size_t block) const {
  std::size_t s = 0;
  for (std::size_t k = 0; k < block; ++k) s += blocks[k].per_layer ? static_cast<std::size_t>(layers) : 1;
  return s;
}

std::size_t ParameterLayout::slots() const { return slot(blocks.size()); }

void ParameterLayout::check() const {
  std::size_t at = 0;
  for (const auto& b : blocks) {
    if (b.offset != at) throw std::logic_error("parameter block " + b.name + " does not follow the previous one");
    if (b.per_layer && (b.shape.empty() || b.shape[0] != layers))
      throw std::logic_error("per-layer parameter block " + b.name + " does not start with the layer count");
    at += b.size();
  }
}

double ordered_sum(const double* values, std::size_t n) {
  double acc = 0.0;
  for (std::size_t k = 0; k < n; ++k) acc += values[k];
  return acc;
}

namespace {
double dot(const double* x, const double* y, std::size_t n) {
  double acc = 0.0;
  for (std::size_t k = 0; k < n; ++k) acc += x[k] * y[k];
  return acc;
}
}  // namespace

// The arithmetic is written operation by operation, and this file is compiled
// without floating-point contraction (no FMA; CMakeLists.txt), so that every
// process and every machine forms the same bits for the slots it owns: (0.5 g) |x|^2 per slot, g x for the
// Tikhonov gradients, and for the smoothness term d_n = theta_n - theta_{n-1},
// the value (0.5 g') |d_n|^2 and the gradient + g' d_n - g' d_{n+1} (g' = ddt / h^2).
void regularization_values(const ParameterLayout& L, double h, const Regularization& reg, const double* theta,
                           int a, int b, bool first, bool last, std::vector<double>& values, double* grad) {
  const int N = L.layers;
  LP_REQUIRE(0 <= a && a <= b && b <= N, "regularization: owned layers [" << a << ", " << b << ") outside [0, " << N << ")");
  const std::size_t S = L.slots();
  const bool smooth = reg.ddt > 0.0 && N > 1;
  std::size_t n_per_layer = 0;
  for (const auto& blk : L.blocks) n_per_layer += blk.per_layer ? 1 : 0;
  values.assign(2 * S + (smooth ? n_per_layer * static_cast<std::size_t>(N) : 0), 0.0);
  const double tik = 0.5 * reg.tikhonov, cls = 0.5 * reg.classifier;
  std::size_t slot = 0, smooth_at = 2 * S;
  const double g = smooth ? reg.ddt / (h * h) : 0.0, half_g = 0.5 * g;
  for (const auto& blk : L.blocks) {
    const double weight = blk.classifier ? reg.classifier : reg.tikhonov;
    const double half = blk.classifier ? cls : tik;
    const std::size_t group = blk.classifier ? S : 0;  // where this block's values go
    if (!blk.per_layer) {
      const bool owned = blk.classifier ? last : first;
      if (owned) {
        const double* x = theta + blk.offset;
        const std::size_t n = blk.size();
        if (weight > 0.0) values[group + slot] = half * dot(x, x, n);
        if (grad)
          for (std::size_t k = 0; k < n; ++k) grad[blk.offset + k] = weight > 0.0 ? 0.0 + weight * x[k] : 0.0;
      }
      ++slot;
      continue;
    }
    const std::size_t row = blk.row();
    for (int n = a; n < b; ++n) {
      const double* x = theta + blk.offset + static_cast<std::size_t>(n) * row;
      if (weight > 0.0) values[group + slot + n] = half * dot(x, x, row);
      if (grad) {
        double* gx = grad + blk.offset + static_cast<std::size_t>(n) * row;
        for (std::size_t k = 0; k < row; ++k) gx[k] = weight > 0.0 ? 0.0 + weight * x[k] : 0.0;
      }
    }
    if (smooth) {
      std::vector<double> d(row);
      for (int n = a; n < b; ++n) {
        const double* x = theta + blk.offset + static_cast<std::size_t>(n) * row;
        double* gx = grad ? grad + blk.offset + static_cast<std::size_t>(n) * row : nullptr;
        if (n >= 1) {  // the term of theta_n - theta_{n-1}: this process owns it
          const double* prev = x - row;
          for (std::size_t k = 0; k < row; ++k) d[k] = x[k] - prev[k];
          values[smooth_at + n] = half_g * dot(d.data(), d.data(), row);
          if (gx)
            for (std::size_t k = 0; k < row; ++k) gx[k] += g * d[k];
        }
      }
      if (grad)
        for (int n = a; n < b && n + 1 <= N - 1; ++n) {  // the term of theta_{n+1} - theta_n
          const double* x = theta + blk.offset + static_cast<std::size_t>(n) * row;
          double* gx = grad + blk.offset + static_cast<std::size_t>(n) * row;
          for (std::size_t k = 0; k < row; ++k) gx[k] -= g * (x[k + row] - x[k]);
        }
      smooth_at += static_cast<std::size_t>(N);
    }
    slot += static_cast<std::size_t>(N);
  }
}

double regularization(const ParameterLayout& L, double h, const Regularization& reg, const double* theta,
                      double* grad) {
  std::vector<double> values;
  std::vector<double> g(grad ? L.size() : 0);
  regularization_values(L, h, reg, theta, 0, L.layers, true, true, values, grad ? g.data() : nullptr);
  if (grad)
    for (std::size_t k = 0; k < g.size(); ++k) grad[k] += g[k];
  return ordered_sum(values.data(), values.size());
}

}  // namespace layerparallel
