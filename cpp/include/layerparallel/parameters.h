// The flat parameter vector of a residual network, described once: its named
// blocks in order, and the regularisers of the objective over them
// (docs/algorithm.md section 1). Every network (dense, convolutional) lists its
// blocks through ResidualNetwork::parameter_blocks(); the bindings, the Python
// layer sharding and the regulariser read that list instead of spelling out a
// layout of their own.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace layerparallel {

/// Weights of the three regularisers of the objective.
struct Regularization {
  double tikhonov = 0.0;    ///< (g/2)|theta|^2 on the opening and the hidden layers
  double classifier = 0.0;  ///< (g/2)|theta|^2 on the classifier
  double ddt = 0.0;         ///< (g/2) sum_n |(theta_n - theta_{n-1}) / h|^2 over the layer index
  void validate() const;
};

/// One named block of the flat parameter vector.
struct ParameterBlock {
  std::string name;          ///< opening_weight, opening_bias, weights, biases, classifier_weight, classifier_bias
  std::size_t offset = 0;    ///< first entry in the flat vector
  std::vector<int> shape;    ///< row-major; a per-layer block has the layer count first
  bool per_layer = false;    ///< one row of shape[1:] per hidden layer
  bool classifier = false;   ///< regularised by the classifier weight (else by Tikhonov)
  std::size_t size() const;
  /// Entries per layer of a per-layer block (size() / layers), else size().
  std::size_t row() const;
};

/// The blocks of a network's parameter vector in flat order (no gaps).
struct ParameterLayout {
  std::vector<ParameterBlock> blocks;
  int layers = 0;
  std::size_t size() const;
  /// The slots of the reproducible reductions: one per block, except per-layer
  /// blocks, which have one per layer (layer n of block b at slot(b) + n).
  std::size_t slots() const;
  std::size_t slot(std::size_t block) const;
  /// Throws std::logic_error unless the blocks tile [0, size()) in order.
  void check() const;
};

/// The regularisers on the entries a process owns: layers [a, b) of every
/// per-layer block, the other hidden blocks (the opening) when `first`, the
/// classifier blocks when `last`.
///
/// values receives, in this order, the Tikhonov value of every slot, the
/// classifier value of every slot, and (when reg.ddt > 0 and there is more than
/// one layer) for each per-layer block one smoothness value per layer (layer n
/// holds the term of theta_n - theta_{n-1}, counted by the owner of layer n):
/// 2 slots() + (ddt terms ? per-layer blocks x layers : 0) values, zero where
/// another process owns the slot. Summed left to right after an exact sum over
/// processes (each value has one owner), this gives the same rounding on any
/// number of processes.
///
/// theta is the full vector; besides the owned entries it must hold the rows
/// of layers a - 1 and b of the per-layer blocks when they exist and ddt > 0.
/// grad (full length, may be null) is overwritten on the owned entries with the
/// regularisers' gradient and left alone elsewhere.
void regularization_values(const ParameterLayout& layout, double h, const Regularization& reg,
                           const double* theta, int a, int b, bool first, bool last, std::vector<double>& values,
                           double* grad);

/// Left-to-right sum (the rounding of every reproducible reduction).
double ordered_sum(const double* values, std::size_t n);

/// The regularisers on the whole vector: regularization_values over every entry,
/// summed left to right. grad (may be null): the gradient is added.
double regularization(const ParameterLayout& layout, double h, const Regularization& reg, const double* theta,
                      double* grad);

}  // namespace layerparallel
