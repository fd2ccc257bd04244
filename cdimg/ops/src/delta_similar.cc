// Bases found by content for new files that no name leads to (SimilarBases).
#include <algorithm>
#include <new>
#include <unordered_set>

#include "delta_internal.h"
#include "thread_pool.h"

namespace d4c::delta_internal {

namespace {

// The sizes a base may have for a target of `size` bytes: a base much
// smaller lacks most of it, a much bigger one costs its suffix sort.
uint64_t MinBaseFor(uint64_t size) { return size / 8; }
uint64_t MaxBaseFor(uint64_t size) { return std::max<uint64_t>(8 * size, 1 << 20); }
bool SizeFits(uint64_t base, uint64_t size) { return base >= MinBaseFor(size) && base <= MaxBaseFor(size); }

// f(k) for every k on `threads` threads (ParallelFor); out of memory in a
// read or a sample is that file's error, naming it.
absl::Status ForEachFile(size_t n, int threads, const CdimgImage& img, const std::vector<size_t>& entries,
                         const std::function<absl::Status(size_t)>& f) {
  return internal::ParallelFor(n, threads, [&](size_t k) {
    try {
      return f(k);
    } catch (const std::bad_alloc&) {
      return AtEntry(absl::ResourceExhaustedError("out of memory sampling the file; free memory or use fewer threads"),
                     img.path(), img.PathAt(entries[k]));
    }
  });
}

}  // namespace

absl::StatusOr<std::unordered_map<size_t, size_t>> SimilarBases(const ImageChain& old_chain,
                                                                const ImageChain& new_chain,
                                                                const std::vector<size_t>& orphans, int threads) {
  std::unordered_map<size_t, size_t> out;
  if (orphans.empty()) return out;
  const CdimgImage& a = old_chain.top();
  const CdimgImage& b = new_chain.top();
  uint64_t smallest = UINT64_MAX, largest = 0;
  for (size_t i : orphans) {
    smallest = std::min(smallest, b.SizeAt(i));
    largest = std::max(largest, b.SizeAt(i));
  }
  // The candidates: each content of the parent once, those with an
  // orphan's extension first, each group in entry order, within the budget.
  std::unordered_set<std::string_view> extensions;
  uint64_t orphan_bytes = 0;
  for (size_t i : orphans) {
    extensions.insert(Extension(BaseName(b.PathAt(i))));
    orphan_bytes += b.SizeAt(i);
  }
  const uint64_t budget = std::min(kSimilarScanMax, std::max(kSimilarScanFloor, kSimilarScanPerByte * orphan_bytes));
  std::vector<size_t> cand;
  std::unordered_set<Digest, DigestHash> seen;
  uint64_t scanned = 0;
  for (bool same_extension : {true, false}) {
    for (size_t j = 0; j < a.size(); ++j) {
      uint64_t size = a.SizeAt(j);
      if (a.TypeAt(j) != EntryType::kRegular || size < kSimilarMinFile) continue;
      if (size < MinBaseFor(smallest) || size > MaxBaseFor(largest)) continue;
      if (extensions.count(Extension(BaseName(a.PathAt(j)))) != static_cast<size_t>(same_extension)) continue;
      if (scanned + size > budget || !seen.insert(a.DigestAt(j)).second) continue;
      cand.push_back(j);
      scanned += size;
    }
  }
  if (cand.empty()) return out;
  std::vector<std::vector<uint64_t>> cand_anchors(cand.size());
  absl::Status st = ForEachFile(cand.size(), threads, a, cand, [&](size_t k) -> absl::Status {
    auto content = old_chain.ReadFile(cand[k]);
    if (!content.ok()) return AtEntry(content.status(), a.path(), a.PathAt(cand[k]));
    cand_anchors[k] = SampleAnchors(*content);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  // anchor -> candidates having it, as one sorted list.
  std::vector<std::pair<uint64_t, uint32_t>> where;
  for (size_t k = 0; k < cand.size(); ++k) {
    for (uint64_t h : cand_anchors[k]) where.emplace_back(h, static_cast<uint32_t>(k));
    cand_anchors[k] = std::vector<uint64_t>();
  }
  std::sort(where.begin(), where.end());
  std::vector<std::optional<size_t>> picked(orphans.size());
  st = ForEachFile(orphans.size(), threads, b, orphans, [&](size_t o) -> absl::Status {
    size_t i = orphans[o];
    auto content = new_chain.ReadFile(i);
    if (!content.ok()) return AtEntry(content.status(), b.path(), b.PathAt(i));
    std::vector<uint64_t> anchors = SampleAnchors(*content);
    std::vector<uint32_t> votes(cand.size());
    for (uint64_t h : anchors) {
      auto lo = std::lower_bound(where.begin(), where.end(), std::make_pair(h, uint32_t{0}));
      auto hi = lo;
      while (hi != where.end() && hi->first == h) ++hi;
      if (hi - lo > static_cast<ptrdiff_t>(kSimilarCommonAnchor)) continue;
      for (auto it = lo; it != hi; ++it) ++votes[it->second];
    }
    // Most votes; ties to the size nearest the target's, then the first candidate.
    uint64_t size = content->size();
    auto gap = [&](size_t k) {
      uint64_t s = a.SizeAt(cand[k]);
      return s > size ? s - size : size - s;
    };
    std::optional<size_t> best;
    for (size_t k = 0; k < cand.size(); ++k) {
      if (votes[k] == 0 || !SizeFits(a.SizeAt(cand[k]), size)) continue;
      if (!best || votes[k] > votes[*best] || (votes[k] == votes[*best] && gap(k) < gap(*best))) best = k;
    }
    if (best && votes[*best] * 10 >= anchors.size()) picked[o] = cand[*best];
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  for (size_t o = 0; o < orphans.size(); ++o)
    if (picked[o]) out.emplace(orphans[o], *picked[o]);
  return out;
}

}  // namespace d4c::delta_internal
