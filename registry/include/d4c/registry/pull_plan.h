// Cheapest download: from the images a client already has to the one it
// wants, by bytes, over the full images and deltas (incl. merged skip-deltas)
// a registry catalog lists.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/registry/catalog.h"

namespace d4c::registry {

struct PullPlan {
  std::string from;              // a local image id the chain starts at, empty = a full image
  std::vector<Artifact> steps;   // in apply order; empty if `want` is local
  uint64_t bytes = 0;            // sum of step sizes
};

// Dijkstra over image ids: local ids cost 0, a full artifact costs its size,
// a delta costs its parent's cost plus its size. Ties go to fewer steps.
// NotFound when no full image and no chain from a local image reaches `want`.
absl::StatusOr<PullPlan> PlanPull(const Catalog& catalog, const std::set<std::string>& local_ids,
                                  const std::string& want);

}  // namespace d4c::registry
