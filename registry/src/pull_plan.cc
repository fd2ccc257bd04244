#include "d4c/registry/pull_plan.h"

#include <map>
#include <queue>
#include <tuple>

#include "d4c/base/strcat.h"

namespace d4c::registry {
namespace {

// Cost of reaching an image: bytes first, then number of downloads.
struct Cost {
  uint64_t bytes = 0;
  size_t steps = 0;
  auto operator<=>(const Cost&) const = default;
};

struct Best {
  Cost cost;
  const Artifact* via = nullptr;  // null: local
};

}  // namespace

absl::StatusOr<PullPlan> PlanPull(const Catalog& catalog, const std::set<std::string>& local_ids,
                                  const std::string& want) {
  std::map<std::string, Best> best;
  using Item = std::tuple<Cost, std::string>;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> queue;
  auto relax = [&](const std::string& id, Cost c, const Artifact* via) {
    auto it = best.find(id);
    if (it != best.end() && !(c < it->second.cost)) return;
    best[id] = Best{c, via};
    queue.emplace(c, id);
  };
  for (const auto& id : local_ids) relax(id, Cost{}, nullptr);
  for (const auto& a : catalog.artifacts)
    if (!a.is_delta()) relax(a.image_id, Cost{a.size, 1}, &a);
  std::multimap<std::string, const Artifact*> deltas_from;
  for (const auto& a : catalog.artifacts)
    if (a.is_delta()) deltas_from.emplace(a.parent_id, &a);
  while (!queue.empty()) {
    auto [cost, id] = queue.top();
    queue.pop();
    if (best[id].cost < cost) continue;  // stale entry
    if (id == want) break;
    auto [lo, hi] = deltas_from.equal_range(id);
    for (auto it = lo; it != hi; ++it)
      relax(it->second->image_id, Cost{cost.bytes + it->second->size, cost.steps + 1}, it->second);
  }
  auto it = best.find(want);
  if (it == best.end())
    return absl::NotFoundError(StrCat("no way to image ", want, ": the registry has no full image of it and no delta chain from any of the ",
                                      local_ids.size(), " images here"));
  PullPlan plan;
  plan.bytes = it->second.cost.bytes;
  for (const Artifact* a = it->second.via; a; a = best[a->parent_id].via) {
    plan.steps.insert(plan.steps.begin(), *a);
    if (!a->is_delta()) break;
    if (!best[a->parent_id].via) {
      plan.from = a->parent_id;
      break;
    }
  }
  if (plan.steps.empty()) plan.from = want;
  return plan;
}

}  // namespace d4c::registry
