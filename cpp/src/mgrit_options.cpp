// The MGRIT engine's inputs checked: MgritOptions (validate, the relaxation of
// each level), relaxation strings F(CF)^k (parse_relax) and Partition (the
// contiguous split of the time axis and its checks). The engine's file layout
// is listed in mgrit_internal.h.
#include "layerparallel/mgrit.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "layerparallel/macros.h"
#include "layerparallel/threading.h"
#include "mgrit_internal.h"

namespace layerparallel {

using mgrit_detail::upper;

int parse_relax(const std::string& s) {
  const std::string u = upper(s);
  bool ok = !u.empty() && u[0] == 'F' && (u.size() % 2 == 1);
  for (std::size_t i = 1; ok && i < u.size(); i += 2) ok = u[i] == 'C' && u[i + 1] == 'F';
  LP_REQUIRE(ok, "relaxation must be F, FCF, FCFCF, ... (F(CF)^k), got '" << s << "'");
  return static_cast<int>(u.size() / 2);
}

void MgritOptions::validate() const {
  LP_REQUIRE(max_levels >= 1, "MgritOptions.max_levels must be >= 1, got " << max_levels);
  LP_REQUIRE(cfactor >= 2, "MgritOptions.cfactor must be >= 2, got " << cfactor);
  LP_REQUIRE(cfactor_fine == -1 || cfactor_fine >= 2,
             "MgritOptions.cfactor_fine must be -1 (same as cfactor) or >= 2, got " << cfactor_fine);
  LP_REQUIRE(min_coarse >= 1, "MgritOptions.min_coarse must be >= 1, got " << min_coarse);
  for (std::size_t i = 0; i < relax.size(); ++i) {
    try {
      parse_relax(relax[i]);
    } catch (const std::invalid_argument&) {
      LP_REQUIRE(false, "MgritOptions.relax[" << i << "] must be F, FCF, FCFCF, ... (F(CF)^k), got '"
                                              << relax[i] << "'");
    }
  }
  const std::string c = upper(cycle);
  LP_REQUIRE(c == "V" || c == "F", "MgritOptions.cycle must be \"V\" or \"F\", got \"" << cycle << "\"");
  LP_REQUIRE(std::isfinite(tol) && tol >= 0.0, "MgritOptions.tol must be finite and >= 0, got " << tol);
  LP_REQUIRE(std::isfinite(rtol) && rtol >= 0.0, "MgritOptions.rtol must be finite and >= 0, got " << rtol);
  LP_REQUIRE(max_iter >= 0, "MgritOptions.max_iter must be >= 0, got " << max_iter);
  const std::string st = upper(store);
  LP_REQUIRE(st == "ALL" || st == "CPOINTS",
             "MgritOptions.store must be \"all\" or \"cpoints\", got \"" << store << "\"");
  LP_REQUIRE(threads >= 0 && threads <= thread_limit(), "MgritOptions.threads must be between 0 (OpenMP default) and "
                                                           << thread_limit() << " (64 per core), got " << threads);
}

int MgritOptions::relax_cf_pairs(int level) const {
  if (relax.empty()) return level == 0 ? 0 : 1;
  const std::size_t i = std::min<std::size_t>(static_cast<std::size_t>(level), relax.size() - 1);
  return parse_relax(relax[i]);
}

Partition Partition::contiguous(int n_steps, int parts, bool reversed, int tag) {
  LP_REQUIRE(n_steps >= 1, "Partition: n_steps must be >= 1, got " << n_steps);
  LP_REQUIRE(parts >= 1, "Partition: parts must be >= 1, got " << parts);
  Partition p;
  p.tag = tag;
  p.step_bounds.assign(static_cast<std::size_t>(parts) + 1, 0);
  p.ranks.assign(static_cast<std::size_t>(parts), 0);
  for (int q = 0; q < parts; ++q) {
    const int r = reversed ? parts - 1 - q : q;
    const Range b = split(n_steps, parts, r);
    p.ranks[q] = r;
    p.step_bounds[q + 1] = static_cast<int>(reversed ? n_steps - b.begin : b.end);
  }
  return p;
}

void Partition::validate(int n_steps, int comm_size) const {
  if (empty()) return;
  const std::size_t P = ranks.size();
  LP_REQUIRE(step_bounds.size() == P + 1,
             "Partition: step_bounds needs " << P + 1 << " entries for " << P << " ranks, got " << step_bounds.size());
  LP_REQUIRE(step_bounds.front() == 0 && step_bounds.back() == n_steps,
             "Partition: step_bounds must run from 0 to " << n_steps);
  for (std::size_t q = 0; q < P; ++q) {
    LP_REQUIRE(step_bounds[q] <= step_bounds[q + 1], "Partition: step_bounds must not decrease");
    LP_REQUIRE(ranks[q] >= 0 && ranks[q] < comm_size,
               "Partition: rank " << ranks[q] << " is outside the communicator of " << comm_size << " processes");
    for (std::size_t r = 0; r < q; ++r) LP_REQUIRE(ranks[r] != ranks[q], "Partition: rank " << ranks[q] << " appears twice");
  }
  LP_REQUIRE(tag >= 0, "Partition: tag must be >= 0, got " << tag);
}

}  // namespace layerparallel
