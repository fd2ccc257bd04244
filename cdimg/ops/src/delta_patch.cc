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
//   and a job (small files in batches, kRebuildBatchBytes) compresses it at
//   PatchOptions::zstd_level into the spool, from where the writer copies it
//   in pieces. Idle pool threads help a big one
//   (a delta's streams decode beside its base; the sha256 check runs beside
//   the compression).
// Jobs run on `threads` pool threads under `memory_budget` (RunJobs). The
// writer, on a thread of its own beside them, copies B's blobs into the
// output in entry order while later ones are still being rebuilt: a stored
// blob at once (its check job must pass before the output is finished), a
// rebuilt one as soon as its job has spooled it. The jobs under
// kEntryOrderBelow run in entry order, after the big ones, so that the writer
// follows close behind them; what is left to write at the end is short.
#include <zstd.h>

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
// this many bytes (a bigger one alone): a job per small file cost more in the
// pool's locking than the check itself (~5 futex calls a job; debian-tomcat
// has 4,400 of them).
constexpr uint64_t kCheckBatchBytes = 1 << 20;

// Changed files are rebuilt in batches of consecutive entries of about this
// many bytes, for the same reason; smaller than the checks' as a rebuild
// costs more per byte, and the last batch may run alone at the end.
constexpr uint64_t kRebuildBatchBytes = 256 << 10;

// Jobs under this size run in entry order (RunOptions::entry_order_below):
// one of them alone at the tail costs little.
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
  // Every blob put, once the jobs ended.
  std::unordered_map<size_t, BlobRef> All() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    return ready_;
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

// The writer's reads of stored blobs. The blobs of consecutive entries of a
// converted image lie back to back: once a blob starts where the one copied
// before it ended, the next read takes more than the blob (64 KiB, doubling
// up to kMaxAhead while the run goes on), and the blobs after it come from
// memory instead of a pread each (4,400 of them on debian-tomcat). Out of
// order, each blob is read alone. Used by the writer thread only.
class BlobWindow {
 public:
  absl::Status Copy(const CdimgImage& img, const BlobRef& ref, const internal::BlobAppend& append) {
    bool in_order = &img == last_img_ && ref.offset == last_end_;
    last_img_ = &img;
    last_end_ = ref.offset + ref.length;
    if (&img == img_ && ref.offset >= offset_ && last_end_ <= offset_ + bytes_.size())
      return append(std::string_view(bytes_).substr(ref.offset - offset_, ref.length));
    ahead_ = in_order ? std::min(2 * ahead_, kMaxAhead) : kMinAhead;
    if (!in_order || ref.length >= kMaxAhead)
      return CopyInPieces(ref, [&](const BlobRef& r) { return img.ReadBlob(r); }, append);
    img_ = nullptr;
    uint64_t room = img.header().blobs_length > ref.offset ? img.header().blobs_length - ref.offset : 0;
    auto bytes = img.ReadBlob(BlobRef{ref.offset, std::max(ref.length, std::min(ahead_, room))});  // bad: named
    if (!bytes.ok()) return bytes.status();
    img_ = &img;
    offset_ = ref.offset;
    bytes_ = std::move(*bytes);
    return append(std::string_view(bytes_).substr(0, ref.length));
  }

 private:
  static constexpr uint64_t kMinAhead = 64 << 10, kMaxAhead = 1 << 20;
  const CdimgImage* last_img_ = nullptr;
  uint64_t last_end_ = 0;
  uint64_t ahead_ = kMinAhead;
  const CdimgImage* img_ = nullptr;  // bytes_ holds [offset_, +size) of its blobs
  uint64_t offset_ = 0;
  std::string bytes_;
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
// at the patch level into the spool. `helpers` decode the file's patch
// while its base is read, and check its sha256 while it is compressed
// (ImageChain::ReadFile): one big changed file then uses both threads. A big
// one is compressed as a stream into a range reserved for its worst case
// (StreamFullBlob; the spool is a temporary file, the rest of the range a
// hole), never held whole: a fresh buffer of its size cost more than the
// compression on the reference VM (biome's 28.6 MB binary, docs/benchmarks.md
// "2026-12-07 (ninth session)").
absl::StatusOr<BlobRef> Rebuild(const ImageChain& chain, size_t i, const PatchOptions& o, Spool& sp,
                                Helpers& helpers) {
  const CdimgImage& top = chain.top();
  BlobRef ref;
  auto content = chain.ReadFile(i, helpers, [&](std::string_view bytes) -> absl::Status {
    absl::Status st;
    if (bytes.size() <= kFullBlobWorkersAbove) {
      auto z = CompressFullBlob(bytes, o.zstd_level);
      if (z.ok()) {
        auto put = sp.Put(*z);
        if (put.ok()) ref = *put;
        st = put.status();
      } else {
        st = z.status();
      }
    } else {
      ref = sp.Reserve(ZSTD_compressBound(bytes.size()));
      uint64_t written = 0;
      st = StreamFullBlob(bytes, o.zstd_level, [&](std::string_view piece) {
        if (piece.size() > ref.length - written)  // zstd's bound says it cannot: never the next blob's range
          return absl::InternalError(StrCat("compressed over its bound (", ref.length, " bytes)"));
        absl::Status w = sp.WriteAt(ref.offset + written, piece);
        written += piece.size();
        return w;
      });
      ref.length = written;
    }
    return st.ok() ? st : delta_internal::AtEntry(st, top.path(), top.PathAt(i));
  });  // verified against the digest, and compressed
  if (!content.ok()) return content.status();
  return ref;
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
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  Spool& sp = **spool;
  SpooledBlobs rebuilt;
  std::vector<BlobJob> jobs;
  // Consecutive entries not in a job yet: copied ones (checks) and rebuilt ones.
  struct Batch {
    std::vector<size_t> entries;
    uint64_t bytes = 0, largest = 0;
  } checks, rebuilds;
  auto add = [&](Batch& b, size_t i, uint64_t limit, const std::function<void()>& flush) {
    uint64_t size = entries[i].size;
    if (size >= limit) flush();  // a big one alone
    b.entries.push_back(i);
    b.bytes += size;
    b.largest = std::max(b.largest, size);
    if (b.bytes >= limit) flush();
  };
  auto check_batch = [&] {
    if (checks.entries.empty()) return;
    jobs.push_back({checks.entries.front(), checks.bytes, CheckFullMemory(checks.largest),
                    [&copies, &entries, b = std::move(checks.entries)](Helpers&) -> absl::StatusOr<BlobResult> {
                      for (size_t i : b) {
                        const FullSource& src = copies.at(i);
                        if (absl::Status st = CheckFullBlob(*src.img, src.entry, entries[i].size, entries[i].digest);
                            !st.ok())
                          return st;
                      }
                      BlobResult r;  // no bytes: the writer copies them from their sources
                      r.recipe.kind = Recipe::Kind::kFull;
                      r.spooled = BlobRef{};
                      return r;
                    }});
    checks = Batch();
  };
  // Each file of the batch is spooled and handed to the writer once it is made.
  auto rebuild_batch = [&] {
    if (rebuilds.entries.empty()) return;
    jobs.push_back({rebuilds.entries.front(), rebuilds.bytes, 3 * rebuilds.largest + (128ull << 20),
                    [&c = **chain, &options, &sp, &rebuilt,
                     b = std::move(rebuilds.entries)](Helpers& h) -> absl::StatusOr<BlobResult> {
                      for (size_t i : b) {
                        auto ref = Rebuild(c, i, options, sp, h);
                        if (!ref.ok()) return ref.status();
                        rebuilt.Put(i, *ref);
                      }
                      BlobResult r;  // its blobs are spooled already
                      r.recipe.kind = Recipe::Kind::kFull;
                      r.spooled = BlobRef{};
                      return r;
                    }});
    rebuilds = Batch();
  };
  for (size_t i : internal::FullBlobEntries(entries)) {
    if (auto it = fulls.find(entries[i].digest); it != fulls.end()) {
      copies.emplace(i, it->second);
      add(checks, i, kCheckBatchBytes, check_batch);
    } else {
      add(rebuilds, i, kRebuildBatchBytes, rebuild_batch);
    }
  }
  check_batch();
  rebuild_batch();
  std::atomic<bool> writer_failed{false};
  absl::StatusOr<internal::FullImageStats> written = absl::UnknownError("patch: the writer did not run");
  std::thread writer([&] {
    BlobWindow window;
    try {
      written = internal::WriteFullImage(
          out_path, delta.config(), entries,
          internal::FullBlobCopier([&](size_t i, const internal::BlobAppend& append) -> absl::Status {
            if (auto it = copies.find(i); it != copies.end())
              return window.Copy(*it->second.img, it->second.blob(), append);
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
  run.cancelled = [&] { return writer_failed.load(); };
  absl::StatusOr<std::map<size_t, SpooledBlob>> blobs = absl::UnknownError("patch: the jobs did not run");
  try {  // the writer waits for Close: nothing may escape before it
    blobs = delta_internal::RunJobs(std::move(jobs), sp, run);
  } catch (const std::exception& e) {
    blobs = absl::ResourceExhaustedError(StrCat(out_path, ": ", e.what(), " while starting jobs; free memory"));
  }
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
  for (const auto& [i, ref] : rebuilt.All()) {
    DeltaBucket& k = stats.by_kind["full/rebuilt"];
    k.files++;
    k.blob_bytes += ref.length;
    k.content_bytes += entries[i].size;
  }
  return stats;
}

}  // namespace d4c
