// diff: new image B relative to old image A -> delta cdimg A→B.
#include <algorithm>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "d4c/delta.h"
#include "d4c/base/strcat.h"
#include "delta_internal.h"
#include "delta_stream.h"

namespace d4c {

using namespace delta_internal;  // this file implements part of it

namespace {

constexpr uint64_t kReadTogether = 8 << 20;

// Of the parent's files OldTree::NeighborsFor offers for a new file, the one
// that lacks the fewest of the target's anchors, if it has at least a tenth of
// them (a directory of unrelated files is common: no base is better than a
// wrong one, which would cost a suffix sort for nothing).
absl::StatusOr<std::optional<Base>> PickNeighbor(const ImageChain& old_chain, const std::vector<size_t>& neighbors,
                                                 std::string_view target) {
  const CdimgImage& a = old_chain.top();
  std::optional<Base> best;
  uint64_t best_missing = 0;
  for (size_t j : neighbors) {
    auto content = old_chain.ReadFile(j);
    if (!content.ok()) return content.status();
    Novelty n = MeasureNovelty(*content, target);
    if (n.missing * 10 > n.anchors * 9) continue;  // under a tenth in common (the probe has false hits)
    if (!best || n.missing < best_missing) {
      best = Base{a.DigestAt(j), std::move(*content), true, n};
      best_missing = n.missing;
    }
  }
  return best;
}

// Reads the target and its base (one file of each image at a time) and
// encodes it. `sibling` (OldTree::SiblingFor): A's twin of the target's path,
// offered beside the base by name when it lacks clearly less of the target
// (OfferSibling). `twin` (see Twins): an earlier entry of B itself, offered
// when it lacks less of the target than the first base does (OfferTwin).
// B's own full blob of the target, when it has one, is the `full`
// alternative: compressing the file again at the same level would only
// reproduce it (seconds per MB at level 19). Files that fit a pack member are
// compressed anew, since a full one of them goes into a pack raw.
absl::StatusOr<BlobResult> DiffOne(const ImageChain& old_chain, const ImageChain& new_chain, size_t i,
                                   std::optional<size_t> base, const std::vector<size_t>& neighbors,
                                   std::optional<size_t> sibling, std::optional<size_t> twin,
                                   const DiffOptions& o, Helpers& helpers) {
  const CdimgImage& a = old_chain.top();
  const CdimgImage& b = new_chain.top();
  std::optional<std::string> full;
  absl::StatusOr<std::string> target, content;
  auto read_target = [&] { target = new_chain.ReadFile(i, &full); };
  auto read_base = [&] { content = base ? old_chain.ReadFile(*base) : std::string(); };
  // Big files (decompression and sha256 of tens of MB each) are read side by side.
  if (base && b.SizeAt(i) + a.SizeAt(*base) >= kReadTogether) {
    helpers.Run({read_target, read_base});
  } else {
    read_target();
    read_base();
  }
  if (!target.ok()) return target.status();
  if (!content.ok()) return content.status();
  if (target->size() <= delta_internal::kPackMemberMax && o.pack_small_blobs) full.reset();
  std::vector<Base> bases;
  if (base) bases.push_back({a.DigestAt(*base), std::move(*content), a.PathAt(*base) != b.PathAt(i)});
  if (!base && !neighbors.empty() && target->size() >= o.min_delta_size) {
    auto picked = PickNeighbor(old_chain, neighbors, *target);
    if (!picked.ok()) return picked.status();
    if (*picked) bases.push_back(std::move(**picked));
  }
  if (sibling && !bases.empty() && bases[0].digest != a.DigestAt(*sibling) && target->size() >= o.min_delta_size) {
    auto sibling_content = old_chain.ReadFile(*sibling);
    if (!sibling_content.ok()) return sibling_content.status();
    OfferSibling(&bases, a.DigestAt(*sibling), std::move(*sibling_content), *target);
  }
  if (twin && target->size() >= o.min_delta_size) {
    auto twin_content = new_chain.ReadFile(*twin);
    if (!twin_content.ok()) return twin_content.status();
    OfferTwin(&bases, b.DigestAt(*twin), std::move(*twin_content), *target);
  }
  auto r = delta_internal::EncodeFile(*target, bases, o, std::move(full), helpers);
  if (!r.ok()) return delta_internal::AtEntry(r.status(), b.path(), b.PathAt(i));
  return r;
}

bool StandaloneFull(const CdimgImage& img, size_t i) {
  Recipe r = img.RecipeAt(i);
  return r.kind == Recipe::Kind::kFull && !r.packed;
}

// A file over DiffOptions::max_delta_size: B's stored blob, checked and
// copied into the spool in pieces (never held whole, nor decompressed whole).
absl::StatusOr<BlobResult> CopyFull(const CdimgImage& b, size_t i, Spool& spool) {
  BlobRef ref = spool.Reserve(b.RecipeAt(i).blob.length);
  uint64_t done = 0;
  absl::Status st = CheckFullBlob(b, i, b.SizeAt(i), b.DigestAt(i), [&](std::string_view piece) {
    absl::Status w = spool.WriteAt(ref.offset + done, piece);
    done += piece.size();
    return w;
  });
  if (!st.ok()) return st;
  BlobResult r;
  r.recipe = {Recipe::Kind::kFull, CodecId::kZstd, {}, {}};
  r.spooled = ref;
  return r;
}

// Recipes that need no bytes are decided here; every other file becomes a job.
absl::StatusOr<std::vector<BlobJob>> PlanDiff(const ImageChain& old_chain, const ImageChain& new_chain,
                                              const OldTree& old, const std::vector<Entry>& entries,
                                              const DiffOptions& o, Spool& spool, std::vector<Recipe>* recipes) {
  std::vector<BlobJob> jobs;
  Twins twins(entries, old);
  std::unordered_set<Digest, DigestHash> seen;  // content already placed in B
  recipes->assign(entries.size(), Recipe{});
  // Files to diff, each with its base by name, if any.
  std::vector<std::pair<size_t, std::optional<size_t>>> to_diff;
  std::vector<size_t> orphans;  // no base by name: SimilarBases looks for one by content
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular) continue;
    Recipe& r = (*recipes)[i];
    if (e.size == 0) {
      r.kind = Recipe::Kind::kEmpty;
    } else if (!seen.insert(e.digest).second || old.Has(e.digest)) {
      r.kind = Recipe::Kind::kBase;  // unchanged, moved, or a second copy
    } else if (const CdimgImage& b = new_chain.top(); e.size > o.max_delta_size && StandaloneFull(b, i)) {
      jobs.push_back({i, e.size, CheckFullMemory(e.size), [&b, &spool, i](Helpers&) {
                        return CopyFull(b, i, spool);
                      }});
    } else {
      std::optional<size_t> base = old.BaseFor(e.path, e.size);
      if (!base && e.size >= std::max(kSimilarMinFile, o.min_delta_size) && e.size <= kSimilarScanMax)
        orphans.push_back(i);
      to_diff.emplace_back(i, base);
    }
  }
  auto similar = SimilarBases(old_chain, new_chain, orphans, o.threads);
  if (!similar.ok()) return similar.status();
  for (const auto& planned : to_diff) {
    // Copies, not structured bindings: the job's lambda captures them (clang 14 cannot capture bindings).
    const size_t i = planned.first;
    const std::optional<size_t> base = planned.second;
    const Entry& e = entries[i];
    std::vector<size_t> neighbors;
    if (!base) neighbors = old.NeighborsFor(e.path, e.size, new_chain.top());
    // The file found by content is measured beside the neighbors (PickNeighbor).
    if (auto s = similar->find(i);
        s != similar->end() && std::find(neighbors.begin(), neighbors.end(), s->second) == neighbors.end())
      neighbors.push_back(s->second);
    std::optional<size_t> twin = twins.For(i);
    std::optional<size_t> sibling = base ? old.SiblingFor(e.path, e.size) : std::nullopt;
    uint64_t base_size = base ? old.image().SizeAt(*base) : 0;
    // A neighbor is held while the next one is measured.
    for (size_t j : neighbors) base_size = std::max(base_size, 2 * old.image().SizeAt(j));
    // A sibling's and a twin's contents are held too, and either may be the
    // base the codecs run on.
    uint64_t held = 0;
    for (uint64_t extra : {sibling ? old.image().SizeAt(*sibling) : 0, twin ? entries[*twin].size : 0}) {
      base_size = std::max(base_size, extra);
      held += extra;
    }
    uint64_t memory = delta_internal::EncodeMemory(base_size, e.size) + held;
    jobs.push_back({i, e.size, memory,
                    [&old_chain, &new_chain, &o, i, base, neighbors = std::move(neighbors), sibling, twin](Helpers& h) {
                      return DiffOne(old_chain, new_chain, i, base, neighbors, sibling, twin, o, h);
                    }});
  }
  return jobs;
}

}  // namespace

absl::StatusOr<DeltaStats> DiffImages(const ImageChain& old_chain, const ImageChain& new_chain,
                                      const std::string& out_path, const DiffOptions& options) {
  const CdimgImage& a = old_chain.top();
  const CdimgImage& b = new_chain.top();
  OldTree old(a);
  std::vector<Entry> entries = delta_internal::AllEntries(b);
  std::vector<Recipe> recipes;
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto jobs = PlanDiff(old_chain, new_chain, old, entries, options, **spool, &recipes);
  if (!jobs.ok()) return jobs.status();
  auto blobs = delta_internal::RunJobs(std::move(*jobs), **spool,
                                       RunOptionsOf(options, &entries));
  if (!blobs.ok()) return blobs.status();
  return delta_internal::WriteDelta(out_path, a, b.config(), entries, std::move(recipes), *blobs, **spool,
                                    options.threads);
}

}  // namespace d4c
