// patch: base image A + delta A→B -> full cdimg B, the same bytes convert
// writes for B (same tree, config, blob level and layout).
#include <unordered_map>

#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/base/strcat.h"
#include "delta_internal.h"
#include "full_image_writer.h"

namespace d4c {

using namespace delta_internal;  // this file implements part of it

namespace {

absl::Status CheckParent(const CdimgImage& base, const std::string& delta_path) {
  auto h = CdimgImage::ReadHeader(delta_path);
  if (!h.ok()) return h.status();
  if (!h->is_delta)
    return absl::InvalidArgumentError(StrCat(delta_path, ": is a full image (", DigestString(h->image_id),
                                             "), not a delta"));
  if (h->parent_id != base.header().image_id)
    return absl::FailedPreconditionError(StrCat(
        delta_path, ": wrong base: this delta applies to image ", DigestString(h->parent_id), ", but ",
        base.path(), " is image ", DigestString(base.header().image_id)));
  return absl::OkStatus();
}

// A stored `full` blob somewhere in the chain, for copying verbatim.
struct FullSource {
  const CdimgImage* img;
  size_t entry;
};
using FullIndex = std::unordered_map<Digest, FullSource, DigestHash>;

FullIndex IndexFullBlobs(const ImageChain& chain) {
  FullIndex out;
  for (size_t level = chain.depth(); level-- > 0;) {
    const CdimgImage& img = chain.image(level);
    for (size_t i = 0; i < img.size(); ++i)
      if (Recipe r = img.RecipeAt(i); r.kind == Recipe::Kind::kFull && !r.packed)  // packed: raw bytes
        out.emplace(img.DigestAt(i), FullSource{&img, i});
  }
  return out;
}

// Copies a stored full blob after checking that it decompresses to the
// content the entry promises: a corrupt blob must not travel on.
absl::StatusOr<BlobResult> CopyFull(const FullSource& src, uint64_t size, const Digest& digest) {
  const CdimgImage& img = *src.img;
  auto blob = img.ReadBlob(img.RecipeAt(src.entry).blob);
  if (!blob.ok()) return delta_internal::AtEntry(blob.status(), img.path(), img.PathAt(src.entry));
  auto content = DecompressFullBlob(*blob, size);
  if (!content.ok()) return delta_internal::AtEntry(content.status(), img.path(), img.PathAt(src.entry));
  if (Sha256(*content) != digest)
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(src.entry),
                                      ": content does not match its sha256 (corrupt image)"));
  BlobResult r;
  r.recipe.kind = Recipe::Kind::kFull;
  r.blob = std::move(*blob);
  return r;
}

absl::StatusOr<BlobResult> PatchOne(const ImageChain& chain, const FullIndex& fulls, size_t i,
                                    const PatchOptions& o) {
  const CdimgImage& top = chain.top();
  Digest digest = top.DigestAt(i);
  if (o.reuse_full_blobs) {
    if (auto it = fulls.find(digest); it != fulls.end()) return CopyFull(it->second, top.SizeAt(i), digest);
  }
  auto content = chain.ReadFile(i);  // verified against the digest
  if (!content.ok()) return content.status();
  auto blob = CompressFullBlob(*content, o.zstd_level);
  if (!blob.ok()) return delta_internal::AtEntry(blob.status(), top.path(), top.PathAt(i));
  BlobResult r;
  r.recipe.kind = Recipe::Kind::kFull;
  r.blob = std::move(*blob);
  r.reencoded = true;
  return r;
}

std::vector<std::string> ChainPaths(const ImageChain& chain) {
  std::vector<std::string> out;
  for (size_t l = 0; l < chain.depth(); ++l) out.push_back(chain.image(l).path());
  return out;
}

void CountBlobs(const std::vector<Entry>& entries, const std::map<size_t, delta_internal::SpooledBlob>& blobs,
                DeltaStats* stats) {
  for (const auto& [i, b] : blobs) {
    DeltaBucket& k = stats->by_kind[b.reencoded ? "full/rebuilt" : "full/copied"];
    k.files++;
    k.blob_bytes += b.recipe.blob.length;
    k.content_bytes += entries[i].size;
  }
}

}  // namespace

absl::StatusOr<DeltaStats> PatchImage(const ImageChain& base_chain, const std::string& delta_path,
                                      const std::string& out_path, const PatchOptions& options) {
  if (auto s = CheckParent(base_chain.top(), delta_path); !s.ok()) return s;
  auto chain = ImageChain::Open(delta_path, ChainPaths(base_chain));
  if (!chain.ok()) return chain.status();
  const CdimgImage& delta = (*chain)->top();
  std::vector<Entry> entries = delta_internal::AllEntries(delta);
  FullIndex fulls = IndexFullBlobs(**chain);
  std::vector<BlobJob> jobs;
  for (size_t i : internal::FullBlobEntries(entries)) {
    uint64_t size = entries[i].size;
    jobs.push_back({i, size, 3 * size + (128ull << 20),
                    [&c = **chain, &fulls, &options, i](Helpers&) { return PatchOne(c, fulls, i, options); }});
  }
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool,
                                       {options.threads, options.memory_budget, options.progress});
  if (!blobs.ok()) return blobs.status();
  auto written = internal::WriteFullImage(out_path, delta.config(), entries, [&](size_t i) {
    return (*spool)->Get(blobs->at(i).recipe.blob);
  });
  if (!written.ok()) return written.status();
  DeltaStats stats;
  auto h = CdimgImage::ReadHeader(out_path);
  if (!h.ok()) return h.status();
  if (h->image_id != delta.header().image_id)  // cannot happen: same entries
    return absl::InternalError(StrCat(out_path, ": written image id differs from the delta's"));
  stats.header = *h;
  stats.entries = entries.size();
  CountBlobs(entries, *blobs, &stats);
  return stats;
}

}  // namespace d4c
