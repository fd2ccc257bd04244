#include "d4c/convert.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "d4c/base/zstd.h"
#include "d4c/base/io.h"
#include "d4c/base/strcat.h"
#include "full_image_writer.h"
#include "thread_pool.h"

namespace d4c {

absl::StatusOr<std::string> CompressFullBlob(std::string_view content, int level) {
  ZstdCCtxPtr cctx(ZSTD_createCCtx());
  if (!cctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  // Large files get zstd's own workers. The frame does not depend on the
  // worker count once it is >= 1, so output stays the same on any machine.
  if (content.size() > (8u << 20)) ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, 2);
  return ZstdCompressWith(cctx.get(), content);
}

namespace {

// Receives file contents while layers stream by, compresses each distinct
// content once on a worker pool and parks the blob in an unlinked temp file.
//
// Thread-safety: internally synchronized (mu_, never held while compressing).
// Put is called by the layer reader, Compress by the pool's workers; Blob
// only after Wait() returned.
class CompressingSpool : public ContentSink {
 public:
  CompressingSpool(int fd, int threads, int level, std::function<void(uint64_t, uint64_t)> progress)
      : fd_(fd), level_(level), progress_(std::move(progress)), pool_(threads) {}
  ~CompressingSpool() override {
    Wait().IgnoreError();
    close(fd_);
  }

  absl::Status Put(const Digest& digest, std::string content) override {
    if (content.empty()) return absl::OkStatus();
    absl::MutexLock l(&mu_);
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

  absl::Status Wait() {
    absl::MutexLock l(&mu_);
    while (pending_ != 0) cv_.Wait(&mu_);
    return error_;
  }

  absl::StatusOr<std::string> Blob(const Digest& d) {
    Slot slot;
    {
      absl::MutexLock l(&mu_);
      auto it = slots_.find(d);
      if (it == slots_.end()) return absl::InternalError("content missing from spool");
      slot = it->second;
    }
    std::string out(slot.length, '\0');
    if (absl::Status st = PReadAll(fd_, out.data(), out.size(), slot.offset, "conversion spool"); !st.ok())
      return st;
    return out;
  }

 private:
  struct Slot {
    uint64_t offset = 0, length = 0;
  };
  static constexpr uint64_t kMaxInflight = 256ull << 20;

  void Compress(const Digest& digest, const std::string& content) {
    auto blob = CompressFullBlob(content, level_);
    absl::MutexLock l(&mu_);
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
  int level_;
  std::function<void(uint64_t, uint64_t)> progress_;
  absl::Mutex mu_;
  absl::CondVar cv_;  // signalled when a compression finishes
  std::unordered_map<Digest, Slot, DigestHash> slots_ ABSL_GUARDED_BY(mu_);
  uint64_t end_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t known_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  internal::ThreadPool pool_;  // last: joins before the members above go away
};

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
  CompressingSpool spool(*fd, options.threads, options.zstd_level, options.progress);
  auto entries = SquashLayers(source, spool, options.squash);
  if (auto s = spool.Wait(); !s.ok()) return s;
  if (!entries.ok()) return entries.status();

  auto written = internal::WriteFullImage(out_path, source.config_json(), *entries,
                                         [&](size_t i) { return spool.Blob((*entries)[i].digest); });
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
