// A random dense-network problem shared by the network tests.
#pragma once

#include <cstdint>
#include <vector>

#include "layerparallel/network.h"
#include "reference.h"

namespace lptest {

struct DenseProblem {
  layerparallel::NetworkSpec spec;
  std::vector<double> theta, X;
  std::vector<std::int64_t> y;
  int s = 0;
};

/// Parameters uniform in +-theta_scale, features in +-2, labels (5 i + 1) mod classes.
inline DenseProblem dense_problem(const layerparallel::NetworkSpec& spec, int s, unsigned seed, double theta_scale) {
  DenseProblem p;
  p.spec = spec;
  p.s = s;
  const layerparallel::DenseResNet net(spec);
  p.theta = random_vector(net.layout().size, -theta_scale, theta_scale, seed);
  p.X = random_vector(static_cast<std::size_t>(s) * spec.n_features, -2, 2, seed + 1);
  p.y.resize(static_cast<std::size_t>(s));
  for (int i = 0; i < s; ++i) p.y[i] = (i * 5 + 1) % spec.n_classes;
  return p;
}

}  // namespace lptest
