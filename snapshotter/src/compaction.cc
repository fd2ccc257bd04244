#include "d4c/snap/compaction.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "d4c/chain.h"
#include "d4c/delta.h"

namespace d4c::snap {
namespace {

std::string Bytes(uint64_t bytes) { return StrCat(bytes, " B"); }

}  // namespace

std::optional<CompactionPlan> PlanCompaction(const std::vector<StoreImage>& store,
                                             const std::map<std::string, int64_t>& served,
                                             const CompactionPolicy& policy, const std::set<std::string>& skip) {
  if (!policy.enabled()) return std::nullopt;
  std::map<std::string, const StoreImage*> by_id;
  for (const auto& i : store) by_id[i.id] = &i;
  // The chain of `id`, itself first, down to its full image; empty when an
  // ancestor is missing or the parents loop (the store's Resolve refuses both).
  auto chain_of = [&](const std::string& id) {
    std::vector<std::string> c;
    std::set<std::string> seen;
    for (std::string cur = id;;) {
      auto it = by_id.find(cur);
      if (it == by_id.end() || !seen.insert(cur).second) return std::vector<std::string>{};
      c.push_back(cur);
      if (it->second->parent.empty()) return c;
      cur = it->second->parent;
    }
  };
  std::map<std::string, std::vector<std::string>> chains;
  for (const auto& [s, loaded] : served) {
    if (auto c = chain_of(s); !c.empty()) chains[s] = std::move(c);
  }
  // The newest served image of each family (chains ending in one full image).
  std::map<std::string, std::string> newest;
  for (const auto& [s, cs] : chains) {
    auto [it, fresh] = newest.try_emplace(cs.back(), s);
    if (!fresh && served.at(s) > served.at(it->second)) it->second = s;
  }
  // Candidates ordered by (depth, waste) descending, then id.
  std::optional<std::tuple<size_t, uint64_t, std::string>> best;
  std::string best_reason;
  for (const auto& [x, cx] : chains) {
    if (cx.size() < 2 || skip.count(x)) continue;  // full already, or failed before
    size_t depth = cx.size() - 1;
    uint64_t full_bytes = by_id.at(cx.back())->bytes;
    // What the served images whose chain does not pass through x keep: after
    // the compaction they still need it. (A chain through x ends at x then.)
    std::set<std::string> kept;
    for (const auto& [s, cs] : chains) {
      if (std::find(cs.begin(), cs.end(), x) == cs.end()) kept.insert(cs.begin(), cs.end());
    }
    uint64_t waste = 0;
    for (size_t i = 1; i < cx.size(); ++i) {
      if (!served.count(cx[i]) && !kept.count(cx[i])) waste += by_id.at(cx[i])->bytes;
    }
    bool deep = policy.max_depth > 0 && depth > static_cast<size_t>(policy.max_depth) && newest.at(cx.back()) == x;
    bool wasteful = policy.max_waste > 0 && static_cast<double>(waste) > policy.max_waste * static_cast<double>(full_bytes);
    if (!deep && !wasteful) continue;
    auto key = std::make_tuple(depth, waste, x);
    bool better = !best || std::get<0>(key) > std::get<0>(*best) ||
                  (std::get<0>(key) == std::get<0>(*best) && std::get<1>(key) > std::get<1>(*best));
    if (!better) continue;
    best = key;
    best_reason = deep ? StrCat("chain of ", depth, " deltas > ", policy.max_depth)
                       : StrCat("images only its chain keeps: ", Bytes(waste), " > ", static_cast<int>(policy.max_waste * 100),
                                "% of its full image's ", Bytes(full_bytes));
  }
  if (!best) return std::nullopt;
  CompactionPlan plan;
  plan.top = std::get<2>(*best);
  plan.reason = best_reason;
  const auto& cx = chains.at(plan.top);
  plan.expected_parents.push_back({plan.top, by_id.at(plan.top)->parent});
  for (size_t i = 1; i < cx.size(); ++i) {
    if (!served.count(cx[i])) continue;
    plan.rebased.push_back(cx[i]);
    plan.expected_parents.push_back({cx[i], by_id.at(cx[i])->parent});
  }
  return plan;
}

absl::StatusOr<std::vector<StoreImage>> ScanStore(const ImageStore& store) {
  std::vector<StoreImage> out;
  for (const auto& id : store.List()) {
    auto parent = store.ParentOf(id);
    if (!parent.ok()) continue;  // unreadable: never planned, its chain neither
    struct stat st;
    if (stat(store.PathFor(id).c_str(), &st) != 0) continue;  // deleted meanwhile
    out.push_back({id, *parent, static_cast<uint64_t>(st.st_size)});
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> BuildCompaction(const ImageStore& store,
                                                                                 const CompactionPlan& plan,
                                                                                 const std::string& work_dir,
                                                                                 const CompactionPolicy& policy) {
  std::vector<std::pair<std::string, std::string>> built;
  auto fail = [&](absl::Status s) {
    for (const auto& [id, f] : built) unlink(f.c_str());
    return s;
  };
  auto check = [&](const std::string& path, const std::string& id, const std::string& parent) -> absl::Status {
    auto h = CdimgImage::ReadHeader(path);
    if (!h.ok()) return h.status();
    std::string got_parent = h->is_delta ? DigestHex(h->parent_id) : "";
    if (DigestHex(h->image_id) != id || got_parent != parent)
      return absl::InternalError(StrCat("compaction wrote ", path, " as image sha256:", DigestHex(h->image_id),
                                        " on \"", got_parent, "\", expected sha256:", id, " on \"", parent, "\""));
    return absl::OkStatus();
  };
  auto top = store.Resolve(plan.top);
  if (!top.ok()) return top.status();
  if (top->paths.size() < 2)
    return absl::FailedPreconditionError(StrCat("image sha256:", plan.top, " is full already"));
  {
    auto base = ImageChain::Open(top->paths[1], {top->paths.begin() + 2, top->paths.end()});
    if (!base.ok()) return base.status();
    std::string out = StrCat(work_dir, "/", plan.top, ".cdimg");
    PatchOptions po;
    po.threads = policy.threads;
    po.zstd_level = policy.zstd_level;
    po.meta_zstd_level = kConvertMetaLevel;  // with the level above: convert's very bytes
    po.memory_budget = 256ull << 20;
    built.push_back({plan.top, out});
    if (auto st = PatchImage(**base, top->paths[0], out, po); !st.ok())
      return fail(Annotate(st.status(), StrCat("compaction of image sha256:", plan.top)));
    if (auto s = check(out, plan.top, ""); !s.ok()) return fail(s);
  }
  // Each rebased image: a delta from the one above it, whose new file is built.
  std::vector<std::string> above = {built.back().second};  // the new chain above, nearest first
  std::string above_id = plan.top;
  for (const auto& id : plan.rebased) {
    auto cur = store.Resolve(id);
    if (!cur.ok()) return fail(cur.status());
    auto now = ImageChain::Open(cur->paths[0], {cur->paths.begin() + 1, cur->paths.end()});
    if (!now.ok()) return fail(now.status());
    auto from = ImageChain::Open(above[0], {above.begin() + 1, above.end()});
    if (!from.ok()) return fail(from.status());
    std::string out = StrCat(work_dir, "/", id, ".cdimg");
    DiffOptions d;
    d.threads = policy.threads;
    d.zstd_level = policy.zstd_level;
    d.memory_budget = 256ull << 20;
    built.push_back({id, out});
    if (auto st = DiffImages(**from, **now, out, d); !st.ok())
      return fail(Annotate(st.status(), StrCat("compaction: reverse delta of image sha256:", id)));
    if (auto s = check(out, id, above_id); !s.ok()) return fail(s);
    above.insert(above.begin(), out);
    above_id = id;
  }
  return built;
}

}  // namespace d4c::snap
