// merge: D1 = A→B and D2 = B→C -> D = A→C.
//
// Per file of C (first of its content): content A has -> base; else the blob
// that produced it is copied when it still decodes against A alone (a full
// blob, or a delta whose base A has), from D2 first, else from D1 (file
// unchanged since B). Only files whose D2 delta needs B's version (changed
// twice) are re-encoded against A, and keep the smaller of delta and full.
// Every copied blob is decoded and checked against its digest first.
#include <unordered_map>
#include <unordered_set>

#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/base/strcat.h"
#include "delta_internal.h"

namespace d4c {

using namespace delta_internal;  // this file implements part of it

namespace {

absl::Status CheckHeaders(const CdimgImage& a, const std::string& d1, const std::string& d2) {
  auto h1 = CdimgImage::ReadHeader(d1);
  if (!h1.ok()) return h1.status();
  auto h2 = CdimgImage::ReadHeader(d2);
  if (!h2.ok()) return h2.status();
  if (!h1->is_delta) return absl::InvalidArgumentError(StrCat(d1, ": is a full image, not a delta"));
  if (!h2->is_delta) return absl::InvalidArgumentError(StrCat(d2, ": is a full image, not a delta"));
  if (h1->parent_id != a.header().image_id)
    return absl::FailedPreconditionError(StrCat(d1, ": wrong base: this delta applies to image ",
                                                DigestString(h1->parent_id), ", but ", a.path(), " is image ",
                                                DigestString(a.header().image_id)));
  if (h2->parent_id != h1->image_id)
    return absl::FailedPreconditionError(StrCat(d2, ": applies to image ", DigestString(h2->parent_id), ", but ",
                                                d1, " produces image ", DigestString(h1->image_id),
                                                " (is the order of the deltas right?)"));
  return absl::OkStatus();
}

// Content digest -> an entry of `img` carrying a blob for it.
using BlobIndex = std::unordered_map<Digest, size_t, DigestHash>;
BlobIndex IndexBlobs(const CdimgImage& img) {
  BlobIndex out;
  for (size_t i = 0; i < img.size(); ++i) {
    Recipe::Kind k = img.RecipeAt(i).kind;
    if (k == Recipe::Kind::kFull || k == Recipe::Kind::kDelta) out.emplace(img.DigestAt(i), i);
  }
  return out;
}

struct MergeContext {
  const ImageChain& a_chain;  // ends in A
  const ImageChain& chain;    // A's chain + D1 + D2: top is C
  const CdimgImage& d1;
  const CdimgImage& d2;
  const OldTree& old;
  BlobIndex blobs1, blobs2;
  const DiffOptions& options;
};

// A blob of `img` entry j that decodes against A alone, checked.
absl::StatusOr<BlobResult> CopyBlob(const MergeContext& m, const CdimgImage& img, size_t j) {
  Recipe r = img.RecipeAt(j);
  auto blob = img.ReadPayload(r);  // packed: the member, kept packed in the output
  if (!blob.ok()) return delta_internal::AtEntry(blob.status(), img.path(), img.PathAt(j));
  absl::StatusOr<std::string> content;
  if (r.kind == Recipe::Kind::kFull) {
    content = r.packed ? *blob : DecompressFullBlob(*blob, img.SizeAt(j));
  } else {
    auto base = m.a_chain.ReadByDigest(r.base);
    if (!base.ok()) return delta_internal::AtEntry(base.status(), img.path(), img.PathAt(j));
    content = GetCodec(r.codec).DecodeForm(*base, *blob, img.SizeAt(j), r.packed);
  }
  if (!content.ok()) return delta_internal::AtEntry(content.status(), img.path(), img.PathAt(j));
  if (Sha256(*content) != img.DigestAt(j))
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(j),
                                      ": rebuilt content does not match its sha256 (corrupt image)"));
  BlobResult out;
  out.recipe = r;
  out.blob = std::move(*blob);
  return out;
}

// Bases in A for re-encoding C's entry i: the file at the same path (or a
// rename), and the A file D1 diffed this file's B version against.
std::vector<size_t> BasesInA(const MergeContext& m, size_t i) {
  std::vector<size_t> out;
  const CdimgImage& c = m.d2;
  if (auto j = m.old.BaseFor(c.PathAt(i), c.SizeAt(i))) out.push_back(*j);
  Recipe r2 = c.RecipeAt(i);
  if (r2.kind != Recipe::Kind::kDelta) return out;
  auto it = m.blobs1.find(r2.base);
  if (it == m.blobs1.end()) return out;
  Recipe r1 = m.d1.RecipeAt(it->second);
  if (r1.kind != Recipe::Kind::kDelta) return out;
  std::optional<size_t> j = m.old.Find(r1.base);
  if (j && (out.empty() || m.old.image().DigestAt(out[0]) != r1.base)) out.push_back(*j);
  return out;
}

// Builds C's entry i anew against A. `ready_full` is D2's full blob if it has one.
absl::StatusOr<BlobResult> Reencode(const MergeContext& m, size_t i, std::optional<std::string> ready_full,
                                    Helpers& helpers) {
  const CdimgImage& c = m.d2;
  auto target = m.chain.ReadFile(i);
  if (!target.ok()) return target.status();
  std::vector<Base> bases;
  for (size_t j : BasesInA(m, i)) {
    auto content = m.a_chain.ReadFile(j);
    if (!content.ok()) return content.status();
    bases.push_back({m.old.image().DigestAt(j), std::move(*content), m.old.image().PathAt(j) != c.PathAt(i)});
  }
  auto r = delta_internal::EncodeFile(*target, bases, m.options, std::move(ready_full), helpers);
  if (!r.ok()) return delta_internal::AtEntry(r.status(), c.path(), c.PathAt(i));
  r->reencoded = true;
  return r;
}

bool DecodesAgainstA(const MergeContext& m, const Recipe& r) {
  return r.kind == Recipe::Kind::kFull || (r.kind == Recipe::Kind::kDelta && m.old.Has(r.base));
}

// One file of C that A does not have.
absl::StatusOr<BlobResult> MergeOne(const MergeContext& m, size_t i, Helpers& helpers) {
  Digest d = m.d2.DigestAt(i);
  if (auto it = m.blobs2.find(d); it != m.blobs2.end()) {
    Recipe r2 = m.d2.RecipeAt(it->second);
    if (r2.kind == Recipe::Kind::kFull) {
      // New since B; A may still hold a good base (e.g. a file that B lacked).
      if (!m.old.BaseFor(m.d2.PathAt(i), m.d2.SizeAt(i))) return CopyBlob(m, m.d2, it->second);
      auto copied = CopyBlob(m, m.d2, it->second);
      if (!copied.ok()) return copied.status();
      // A packed member is raw content, not a ready zstd frame.
      auto r = Reencode(m, i, copied->recipe.packed ? std::nullopt : std::optional<std::string>(std::move(copied->blob)),
                        helpers);
      if (r.ok() && r->recipe.kind == Recipe::Kind::kFull) r->reencoded = false;  // D2's blob kept
      return r;
    }
    if (DecodesAgainstA(m, r2)) return CopyBlob(m, m.d2, it->second);
    return Reencode(m, i, std::nullopt, helpers);  // changed in both deltas
  }
  if (auto it = m.blobs1.find(d); it != m.blobs1.end() && DecodesAgainstA(m, m.d1.RecipeAt(it->second)))
    return CopyBlob(m, m.d1, it->second);  // changed A→B only
  return Reencode(m, i, std::nullopt, helpers);
}

uint64_t MergeMemory(const MergeContext& m, size_t i) {
  uint64_t base = 0;
  if (auto j = m.old.BaseFor(m.d2.PathAt(i), m.d2.SizeAt(i))) base = m.old.image().SizeAt(*j);
  return delta_internal::EncodeMemory(2 * base, m.d2.SizeAt(i));
}

std::vector<BlobJob> PlanMerge(const MergeContext& m, const std::vector<Entry>& entries,
                               std::vector<Recipe>* recipes) {
  std::vector<BlobJob> jobs;
  std::unordered_set<Digest, DigestHash> seen;
  recipes->assign(entries.size(), Recipe{});
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular) continue;
    Recipe& r = (*recipes)[i];
    if (e.size == 0) r.kind = Recipe::Kind::kEmpty;
    else if (!seen.insert(e.digest).second || m.old.Has(e.digest)) r.kind = Recipe::Kind::kBase;
    else jobs.push_back({i, e.size, MergeMemory(m, i), [&m, i](Helpers& h) { return MergeOne(m, i, h); }});
  }
  return jobs;
}

std::vector<std::string> ChainPaths(const ImageChain& chain) {
  std::vector<std::string> out;
  for (size_t l = 0; l < chain.depth(); ++l) out.push_back(chain.image(l).path());
  return out;
}

}  // namespace

absl::StatusOr<DeltaStats> MergeDeltas(const ImageChain& base_chain, const std::string& d1_path,
                                       const std::string& d2_path, const std::string& out_path,
                                       const DiffOptions& options) {
  const CdimgImage& a = base_chain.top();
  if (auto s = CheckHeaders(a, d1_path, d2_path); !s.ok()) return s;
  std::vector<std::string> paths = ChainPaths(base_chain);
  paths.push_back(d1_path);
  auto chain = ImageChain::Open(d2_path, paths);
  if (!chain.ok()) return chain.status();
  const ImageChain& c = **chain;
  OldTree old(a);
  MergeContext m{base_chain, c, c.image(c.depth() - 2), c.top(), old, {}, {}, options};
  m.blobs1 = IndexBlobs(m.d1);
  m.blobs2 = IndexBlobs(m.d2);
  std::vector<Entry> entries = delta_internal::AllEntries(c.top());
  std::vector<Recipe> recipes;
  std::vector<BlobJob> jobs = PlanMerge(m, entries, &recipes);
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool,
                                       {options.threads, options.memory_budget, options.progress});
  if (!blobs.ok()) return blobs.status();
  return delta_internal::WriteDelta(out_path, a, c.top().config(), entries, std::move(recipes), *blobs, **spool);
}

}  // namespace d4c
