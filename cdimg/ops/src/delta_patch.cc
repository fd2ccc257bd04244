// patch: base image A + delta A→B -> full cdimg B (docs/format.md, "What
// `identical` means for a patched image").
//
// Each distinct content of B gets its `full` blob one of two ways:
// - copied: some image of the chain (base or delta) already stores it as a
//   standalone `full` blob. A job checks that blob (streamed through zstd and
//   sha256, never held whole; small ones in batches, kCheckBatchBytes); the
//   writer copies its stored bytes straight from that image into the output,
//   in pieces.
// - rebuilt: the chain reconstructs the file (verified against its digest)
//   and a job compresses it at PatchOptions::zstd_level into the spool, from
//   where the writer copies it in pieces. Idle pool threads help a big one
//   (a delta's streams decode beside its base; the sha256 check runs beside
//   the compression).
// Jobs run on `threads` pool threads under `memory_budget` (RunJobs). The
// writer, on a thread of its own beside them, copies B's blobs into the
// output in entry order while later ones are still being rebuilt: a stored
// blob at once (its check job must pass before the output is finished), a
// rebuilt one as soon as its job has spooled it. The jobs under
// kEntryOrderBelow run in entry order, after the big ones, so that the writer
// follows close behind them; what is left to write at the end is short.
#include <algorithm>
#include <atomic>
#include <exception>
#include <optional>
#include <thread>
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

// Unchanged contents are checked in batches of consecutive entries of about
// this many bytes: a job per small file cost more in the pool's locking than
// the check itself (~5 futex calls a job; debian-tomcat has 4,500 of them).
constexpr uint64_t kCheckBatchBytes = 1 << 20;

// Changed files under this size are rebuilt in entry order (RunOptions::
// entry_order_below): one of them alone at the tail costs little.
constexpr uint64_t kEntryOrderBelow = 1 << 20;

// Blobs rebuilt into the spool, handed from the jobs to the writer.
// Thread-safety: internally synchronized by mu_; Put and Close come from the
// job threads and the dispatcher, Wait and Closed from the writer.
class SpooledBlobs {
 public:
  void Put(size_t entry, const BlobRef& blob) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    ready_.emplace(entry, blob);
    cv_.SignalAll();
  }
  // The jobs ended with `status`: nothing more comes.
  void Close(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    closed_ = status;
    cv_.SignalAll();
  }
  // The entry's blob once it is spooled; the jobs' failure if they ended
  // without it.
  absl::StatusOr<BlobRef> Wait(size_t entry) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    for (;;) {
      if (auto it = ready_.find(entry); it != ready_.end()) return it->second;
      if (closed_) {
        if (!closed_->ok()) return *closed_;
        return absl::InternalError(StrCat("patch: no blob was made for entry ", entry));
      }
      cv_.Wait(&mu_);
    }
  }
  // Waits until the jobs end; their status.
  absl::Status Closed() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    while (!closed_) cv_.Wait(&mu_);
    return *closed_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::unordered_map<size_t, BlobRef> ready_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> closed_ ABSL_GUARDED_BY(mu_);
};

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
  std::vector<size_t> batch;  // copied entries not in a job yet
  uint64_t batch_bytes = 0;
  auto check_batch = [&] {
    if (batch.empty()) return;
    uint64_t largest = 0;
    for (size_t i : batch) largest = std::max(largest, entries[i].size);
    jobs.push_back({batch.front(), batch_bytes, CheckFullMemory(largest),
                    [&copies, &entries, b = std::move(batch)](Helpers&) -> absl::StatusOr<BlobResult> {
                      for (size_t i : b) {
                        const FullSource& src = copies.at(i);
                        if (absl::Status st = CheckFullBlob(*src.img, src.entry, entries[i].size, entries[i].digest);
                            !st.ok())
                          return st;
                      }
                      BlobResult r;  // no bytes: the writer copies them from their sources
                      r.recipe.kind = Recipe::Kind::kFull;
                      return r;
                    }});
    batch.clear();
    batch_bytes = 0;
  };
  for (size_t i : internal::FullBlobEntries(entries)) {
    uint64_t size = entries[i].size;
    if (auto it = fulls.find(entries[i].digest); it != fulls.end()) {
      copies.emplace(i, it->second);
      if (size >= kCheckBatchBytes) check_batch();  // a big one alone
      batch.push_back(i);
      batch_bytes += size;
      if (batch_bytes >= kCheckBatchBytes) check_batch();
    } else {
      jobs.push_back({i, size, 3 * size + (128ull << 20),
                      [&c = **chain, &options, i](Helpers& h) { return Rebuild(c, i, options, h); }});
    }
  }
  check_batch();
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  const Spool& sp = **spool;
  SpooledBlobs rebuilt;
  std::atomic<bool> writer_failed{false};
  absl::StatusOr<internal::FullImageStats> written = absl::UnknownError("patch: the writer did not run");
  std::thread writer([&] {
    try {
      written = internal::WriteFullImage(
          out_path, delta.config(), entries,
          internal::FullBlobCopier([&](size_t i, const internal::BlobAppend& append) -> absl::Status {
            if (auto it = copies.find(i); it != copies.end()) {
              const CdimgImage& img = *it->second.img;
              return CopyInPieces(it->second.blob(), [&](const BlobRef& r) { return img.ReadBlob(r); }, append);
            }
            auto blob = rebuilt.Wait(i);
            if (!blob.ok()) return blob.status();
            return CopyInPieces(*blob, [&](const BlobRef& r) { return sp.Get(r); }, append);
          }),
          options.meta_zstd_level, [&] { return rebuilt.Closed(); });  // every check and rebuild passed
    } catch (const std::bad_alloc&) {
      written = absl::ResourceExhaustedError(StrCat(out_path, ": out of memory while writing; free memory"));
    } catch (const std::exception& e) {
      written = absl::InternalError(StrCat(out_path, ": ", e.what(), " while writing"));
    }
    if (!written.ok()) writer_failed = true;
  });
  delta_internal::RunOptions run = delta_internal::RunOptionsOf(options, &entries);
  run.entry_order_below = kEntryOrderBelow;
  run.on_spooled = [&](size_t i, const SpooledBlob& b) { rebuilt.Put(i, b.recipe.blob); };
  run.cancelled = [&] { return writer_failed.load(); };
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool, run);
  rebuilt.Close(blobs.status());
  writer.join();
  // A failed job fails the writer too, with the same status; a failed writer
  // cancels the jobs.
  if (!written.ok()) return written.status();
  if (!blobs.ok()) return blobs.status();
  DeltaStats stats;
  auto h = CdimgImage::ReadHeader(out_path);
  if (!h.ok()) return h.status();
  if (h->image_id != delta.header().image_id)  // cannot happen: same entries
    return absl::InternalError(StrCat(out_path, ": written image id differs from the delta's"));
  stats.header = *h;
  stats.entries = entries.size();
  for (const auto& [i, src] : copies) {
    DeltaBucket& k = stats.by_kind["full/copied"];
    k.files++;
    k.blob_bytes += src.blob().length;
    k.content_bytes += entries[i].size;
  }
  for (const auto& [i, b] : *blobs) {
    if (copies.count(i)) continue;  // a batch of checks
    DeltaBucket& k = stats.by_kind["full/rebuilt"];
    k.files++;
    k.blob_bytes += b.recipe.blob.length;
    k.content_bytes += entries[i].size;
  }
  return stats;
}

}  // namespace d4c
