#include "d4c/convert.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "d4c/base/mutex.h"
#include "d4c/base/zstd.h"
#include "d4c/base/io.h"
#include "d4c/base/strcat.h"
#include "full_image_writer.h"
#include "thread_pool.h"

namespace d4c {

namespace {

// The parameters of every `full` blob, one-shot or streamed.
absl::StatusOr<ZstdCCtxPtr> FullBlobContext(int level, uint64_t size) {
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  // The frame does not depend on the worker count once it is >= 1, so output
  // stays the same on any machine.
  if (size > kFullBlobWorkersAbove) ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, 2);
  return cctx;
}

// Feeds `input` to `cctx` with `mode`, handing what comes out to `sink`
// through `buffer`; returns once the input is taken (for ZSTD_e_end: once
// the frame is complete). Both streamed paths (StreamFullBlob, convert's
// StreamedBlob) compress through it.
absl::Status Feed(ZSTD_CCtx* cctx, std::string_view input, ZSTD_EndDirective mode, std::string& buffer,
                  const BlobSink& sink) {
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  for (;;) {
    ZSTD_outBuffer out{buffer.data(), buffer.size(), 0};
    size_t left = ZSTD_compressStream2(cctx, &out, &in, mode);
    if (ZSTD_isError(left)) return absl::InternalError(StrCat("zstd: ", ZSTD_getErrorName(left)));
    if (out.pos != 0)
      if (absl::Status st = sink(std::string_view(buffer.data(), out.pos)); !st.ok()) return st;
    if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return absl::OkStatus();
  }
}

}  // namespace

absl::StatusOr<std::string> CompressFullBlob(std::string_view content, int level) {
  auto cctx = FullBlobContext(level, content.size());
  if (!cctx.ok()) return cctx.status();
  return ZstdCompressWith(cctx->get(), content);
}

absl::Status StreamFullBlob(std::string_view content, int level, const BlobSink& sink) {
  if (content.size() <= kFullBlobWorkersAbove) {
    auto blob = CompressFullBlob(content, level);
    if (!blob.ok()) return blob.status();
    return sink(*blob);
  }
  auto cctx = FullBlobContext(level, content.size());
  if (!cctx.ok()) return cctx.status();
  if (size_t r = ZSTD_CCtx_setPledgedSrcSize(cctx->get(), content.size()); ZSTD_isError(r))
    return ZstdError("zstd", r);
  constexpr size_t kPiece = size_t{1} << 20;  // under operator new's huge-page size: reused heap
  std::string piece;
  try {
    piece.resize(kPiece);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("zstd: out of memory for an output buffer");
  }
  return Feed(cctx->get(), content, ZSTD_e_end, piece, sink);
}

namespace {

// Receives file contents while layers stream by, compresses each distinct
// content once on a worker pool and parks the blob in an unlinked temp file.
// Files over SquashOptions::whole_file_bytes arrive in pieces (BeginLarge)
// and are compressed as they come on the squashing thread, into a second
// temp file, so no file is ever held whole (docs/architecture.md, Memory).
//
// Thread-safety: internally synchronized (mu_, never held while compressing).
// Put and BeginLarge (and its LargeContent) are called by the layer reader,
// Compress by the pool's workers; Blob/CopyBlob only after Wait() returned.
class CompressingSpool : public ContentSink {
 public:
  CompressingSpool(int fd, int large_fd, int threads, int level, std::function<void(uint64_t, uint64_t)> progress)
      : fd_(fd), large_fd_(large_fd), level_(level), progress_(std::move(progress)), pool_(threads) {}
  ~CompressingSpool() override {
    Wait().IgnoreError();
    close(fd_);
    close(large_fd_);
  }

  absl::Status Put(const Digest& digest, std::string content) override {
    if (content.empty()) return absl::OkStatus();
    MutexLock l(&mu_);
    if (!error_.ok()) return error_;
    if (!slots_.emplace(digest, Slot{}).second) return absl::OkStatus();
    // Bound memory: at most ~kMaxInflight bytes of raw content queued.
    while (inflight_ != 0 && inflight_ + content.size() > kMaxInflight) cv_.Wait(&mu_);
    inflight_ += content.size();
    known_ += content.size();
    ++pending_;
    pool_.Submit([this, digest, c = std::move(content)] { Compress(digest, c); });
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<LargeContent>> BeginLarge(uint64_t size) override;

  absl::Status Wait() {
    MutexLock l(&mu_);
    while (pending_ != 0) cv_.Wait(&mu_);
    return error_;
  }

  // Passes the stored blob of content `d` to `append` in pieces of at most
  // kCopyPiece bytes.
  absl::Status CopyBlob(const Digest& d, const std::function<absl::Status(std::string_view)>& append) {
    Slot slot;
    {
      MutexLock l(&mu_);
      auto it = slots_.find(d);
      if (it == slots_.end()) return absl::InternalError("content missing from spool");
      slot = it->second;
    }
    int fd = slot.large ? large_fd_ : fd_;
    std::string buf(std::min(slot.length, kCopyPiece), '\0');
    for (uint64_t done = 0; done < slot.length;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), slot.length - done));
      if (absl::Status st = PReadAll(fd, buf.data(), n, slot.offset + done, "conversion spool"); !st.ok())
        return st;
      if (absl::Status st = append(std::string_view(buf.data(), n)); !st.ok()) return st;
      done += n;
    }
    return absl::OkStatus();
  }

 private:
  friend class StreamedBlob;
  struct Slot {
    uint64_t offset = 0, length = 0;
    bool large = false;  // in large_fd_
  };
  static constexpr uint64_t kMaxInflight = 256ull << 20;
  static constexpr uint64_t kCopyPiece = 4ull << 20;

  void Compress(const Digest& digest, const std::string& content) {
    auto blob = CompressFullBlob(content, level_);
    MutexLock l(&mu_);
    if (!blob.ok()) {
      if (error_.ok()) error_ = blob.status();
    } else if (absl::Status st = PWriteAll(fd_, *blob, end_, "conversion spool"); !st.ok()) {
      if (error_.ok()) error_ = st;
    } else {
      slots_[digest] = {end_, blob->size()};
      end_ += blob->size();
    }
    inflight_ -= content.size();
    done_ += content.size();
    --pending_;
    if (progress_) progress_(done_, known_);
    cv_.SignalAll();
  }

  int fd_;
  int large_fd_;  // streamed blobs; written by the squashing thread only
  int level_;
  std::function<void(uint64_t, uint64_t)> progress_;
  Mutex mu_;
  CondVar cv_;  // signalled when a compression finishes
  std::unordered_map<Digest, Slot, DigestHash> slots_ ABSL_GUARDED_BY(mu_);
  uint64_t end_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t large_end_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t known_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  internal::ThreadPool pool_;  // last: joins before the members above go away
};

// One big file compressed as its pieces arrive, with the parameters of
// CompressFullBlob (the pledged size makes the frame record it; files this
// big always use zstd's workers, whose frames do not depend on how the input
// is fed): the blob is the same bytes CompressFullBlob gives. Written at the
// end of the large spool file; kept only if Finish finds its digest new.
// Memory: zstd's state for the level (plus its workers' buffers), and one
// output buffer, whatever the file's size.
class StreamedBlob : public LargeContent {
 public:
  StreamedBlob(CompressingSpool& spool, ZstdCCtxPtr cctx, uint64_t size, uint64_t offset)
      : spool_(spool), cctx_(std::move(cctx)), size_(size), offset_(offset), out_(ZSTD_CStreamOutSize(), '\0') {}

  absl::Status Write(std::string_view piece) override {
    fed_ += piece.size();
    return Feed(piece, ZSTD_e_continue);
  }

  absl::Status Finish(const Digest& digest) override {
    if (fed_ != size_)
      return absl::InternalError(StrCat("streamed file of ", size_, " bytes got ", fed_));  // reader checks
    if (absl::Status st = Feed({}, ZSTD_e_end); !st.ok()) return st;
    CompressingSpool& s = spool_;
    MutexLock l(&s.mu_);
    s.known_ += size_;
    s.done_ += size_;
    if (s.progress_) s.progress_(s.done_, s.known_);
    if (!s.slots_.emplace(digest, CompressingSpool::Slot{offset_, written_, true}).second)
      return absl::OkStatus();  // a duplicate: its bytes at offset_ are overwritten by the next one
    s.large_end_ = offset_ + written_;
    return absl::OkStatus();
  }

 private:
  absl::Status Feed(std::string_view piece, ZSTD_EndDirective mode) {
    return d4c::Feed(cctx_.get(), piece, mode, out_, [this](std::string_view bytes) -> absl::Status {
      if (absl::Status st = PWriteAll(spool_.large_fd_, bytes, offset_ + written_, "conversion spool"); !st.ok())
        return st;
      written_ += bytes.size();
      return absl::OkStatus();
    });
  }

  CompressingSpool& spool_;
  ZstdCCtxPtr cctx_;
  uint64_t size_, offset_;
  uint64_t fed_ = 0, written_ = 0;
  std::string out_;
};

absl::StatusOr<std::unique_ptr<LargeContent>> CompressingSpool::BeginLarge(uint64_t size) {
  uint64_t offset;
  {
    MutexLock l(&mu_);
    if (!error_.ok()) return error_;
    offset = large_end_;
  }
  auto cctx = FullBlobContext(level_, size);
  if (!cctx.ok()) return cctx.status();
  if (size_t r = ZSTD_CCtx_setPledgedSrcSize(cctx->get(), size); ZSTD_isError(r))
    return absl::InternalError(StrCat("zstd: ", ZSTD_getErrorName(r)));
  return std::make_unique<StreamedBlob>(*this, std::move(*cctx), size, offset);
}

}  // namespace

absl::StatusOr<ConvertStats> ConvertImage(std::string_view ref, const std::string& out_path,
                                          const ConvertOptions& options) {
  auto source = OpenImageSource(ref);
  if (!source.ok()) return source.status();
  return ConvertImage(**source, out_path, options);
}

absl::StatusOr<ConvertStats> ConvertImage(const ImageSource& source, const std::string& out_path,
                                          const ConvertOptions& options) {
  // The spool sits beside the output: same filesystem, and no /tmp filling up.
  auto fd = OpenTempFile(DirectoryOf(out_path));
  if (!fd.ok()) return fd.status();
  auto large_fd = OpenTempFile(DirectoryOf(out_path));
  if (!large_fd.ok()) {
    close(*fd);
    return large_fd.status();
  }
  SquashOptions squash = options.squash;
  // Files zstd compresses on one thread are never streamed: one-shot and
  // streamed single-thread frames may differ, and the bytes must not.
  squash.whole_file_bytes = std::max(squash.whole_file_bytes, kFullBlobWorkersAbove);
  CompressingSpool spool(*fd, *large_fd, options.threads, options.zstd_level, options.progress);
  auto entries = SquashLayers(source, spool, squash);
  if (auto s = spool.Wait(); !s.ok()) return s;
  if (!entries.ok()) return entries.status();

  auto written = internal::WriteFullImage(
      out_path, source.config_json(), *entries,
      internal::FullBlobCopier([&](size_t i, const std::function<absl::Status(std::string_view)>& append) {
        return spool.CopyBlob((*entries)[i].digest, append);
      }));
  if (!written.ok()) return written.status();
  ConvertStats stats;
  stats.rootfs_bytes = written->rootfs_bytes;
  stats.unique_bytes = written->unique_bytes;
  for (const auto& l : source.layers()) stats.layer_bytes += l.size;
  auto h = CdimgImage::ReadHeader(out_path);
  if (!h.ok()) return h.status();
  stats.header = *h;
  stats.entries = entries->size();
  return stats;
}

}  // namespace d4c
