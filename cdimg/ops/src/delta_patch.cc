// patch: base image A + delta A→B -> full cdimg B (docs/format.md, "What
// `identical` means for a patched image").
//
// Each distinct content of B gets its `full` blob one of two ways:
// - copied: some image of the chain (base or delta) already stores it as a
//   standalone `full` blob. A job checks that blob (streamed through zstd and
//   sha256, never held whole); the writer then copies its stored bytes
//   straight from that image into the output, in pieces.
// - rebuilt: the chain reconstructs the file (verified against its digest)
//   and a job compresses it at PatchOptions::zstd_level into the spool, from
//   where the writer copies it in pieces. Idle pool threads help a big one
//   (a delta's streams decode beside its base; the sha256 check runs beside
//   the compression).
// Jobs run on `threads` pool threads under `memory_budget` (RunJobs).
#include <algorithm>
#include <unordered_map>

#include "d4c/base/strcat.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "delta_internal.h"
#include "delta_stream.h"
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
  BlobRef blob() const { return img->RecipeAt(entry).blob; }
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

// The file rebuilt from the chain (verified against its digest), compressed
// at the patch level. `helpers` decode the file's patch while its base is
// read, and check its sha256 while it is compressed (ImageChain::ReadFile):
// one big changed file then uses both threads.
absl::StatusOr<BlobResult> Rebuild(const ImageChain& chain, size_t i, const PatchOptions& o, Helpers& helpers) {
  const CdimgImage& top = chain.top();
  std::string blob;
  auto content = chain.ReadFile(i, helpers, [&](std::string_view bytes) -> absl::Status {
    auto z = CompressFullBlob(bytes, o.zstd_level);
    if (!z.ok()) return delta_internal::AtEntry(z.status(), top.path(), top.PathAt(i));
    blob = std::move(*z);
    return absl::OkStatus();
  });  // verified against the digest, and compressed
  if (!content.ok()) return content.status();
  BlobResult r;
  r.recipe.kind = Recipe::Kind::kFull;
  r.blob = std::move(blob);
  r.reencoded = true;
  return r;
}

std::vector<std::string> ChainPaths(const ImageChain& chain) {
  std::vector<std::string> out;
  for (size_t l = 0; l < chain.depth(); ++l) out.push_back(chain.image(l).path());
  return out;
}

}  // namespace

absl::StatusOr<DeltaStats> PatchImage(const ImageChain& base_chain, const std::string& delta_path,
                                      const std::string& out_path, const PatchOptions& options) {
  if (auto s = CheckParent(base_chain.top(), delta_path); !s.ok()) return s;
  auto chain = ImageChain::Open(delta_path, ChainPaths(base_chain));
  if (!chain.ok()) return chain.status();
  const CdimgImage& delta = (*chain)->top();
  std::vector<Entry> entries = delta_internal::AllEntries(delta);
  FullIndex fulls;
  if (options.reuse_full_blobs) fulls = IndexFullBlobs(**chain);
  // Entry -> the stored blob it copies. Filled before the jobs start and
  // only read afterwards (by jobs and the writer).
  std::unordered_map<size_t, FullSource> copies;
  std::vector<BlobJob> jobs;
  for (size_t i : internal::FullBlobEntries(entries)) {
    uint64_t size = entries[i].size;
    if (auto it = fulls.find(entries[i].digest); it != fulls.end()) {
      const FullSource& src = copies.emplace(i, it->second).first->second;
      jobs.push_back({i, size, CheckFullMemory(size), [&src, size, d = entries[i].digest](Helpers&) -> absl::StatusOr<BlobResult> {
                        if (absl::Status st = CheckFullBlob(*src.img, src.entry, size, d); !st.ok()) return st;
                        BlobResult r;  // no bytes: the writer copies them from the source
                        r.recipe.kind = Recipe::Kind::kFull;
                        return r;
                      }});
    } else {
      jobs.push_back({i, size, 3 * size + (128ull << 20),
                      [&c = **chain, &options, i](Helpers& h) { return Rebuild(c, i, options, h); }});
    }
  }
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool,
                                       {options.threads, options.memory_budget, options.progress, &entries});
  if (!blobs.ok()) return blobs.status();
  const Spool& sp = **spool;
  auto written = internal::WriteFullImage(
      out_path, delta.config(), entries,
      internal::FullBlobCopier([&](size_t i, const internal::BlobAppend& append) -> absl::Status {
        if (auto it = copies.find(i); it != copies.end()) {
          const CdimgImage& img = *it->second.img;
          return CopyInPieces(it->second.blob(), [&](const BlobRef& r) { return img.ReadBlob(r); }, append);
        }
        return CopyInPieces(blobs->at(i).recipe.blob, [&](const BlobRef& r) { return sp.Get(r); }, append);
      }),
      options.meta_zstd_level);
  if (!written.ok()) return written.status();
  DeltaStats stats;
  auto h = CdimgImage::ReadHeader(out_path);
  if (!h.ok()) return h.status();
  if (h->image_id != delta.header().image_id)  // cannot happen: same entries
    return absl::InternalError(StrCat(out_path, ": written image id differs from the delta's"));
  stats.header = *h;
  stats.entries = entries.size();
  for (const auto& [i, b] : *blobs) {
    auto it = copies.find(i);
    DeltaBucket& k = stats.by_kind[it == copies.end() ? "full/rebuilt" : "full/copied"];
    k.files++;
    k.blob_bytes += it == copies.end() ? b.recipe.blob.length : it->second.blob().length;
    k.content_bytes += entries[i].size;
  }
  return stats;
}

}  // namespace d4c
