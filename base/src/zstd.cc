#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_customMem, ZSTD_createCCtx_advanced (exported by libzstd.so)
#include "d4c/base/zstd.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "d4c/base/memory.h"
#include "d4c/base/strcat.h"

namespace d4c {

namespace {
// zstd's accepted window range on 64-bit hosts (ZSTD_WINDOWLOG_MIN/MAX_64 are
// only visible under ZSTD_STATIC_LINKING_ONLY).
constexpr int kMinWindowLog = 10;
constexpr int kMaxWindowLog = 31;
}  // namespace

absl::Status ZstdError(std::string_view what, size_t code) {
  return absl::DataLossError(StrCat(what, ": ", ZSTD_getErrorName(code)));
}

absl::Status ZstdSet(ZSTD_CCtx* cctx, ZSTD_cParameter p, int value) {
  size_t rc = ZSTD_CCtx_setParameter(cctx, p, value);
  if (ZSTD_isError(rc)) {
    return absl::InternalError(StrCat("zstd parameter ", static_cast<int>(p), "=", value, ": ",
                                      ZSTD_getErrorName(rc)));
  }
  return absl::OkStatus();
}

namespace {

// zstd's workspaces (a context's tables, a streaming window, the
// multi-threaded compressor's buffers) come from AllocateMaybeHuge: zstd
// zeroes its tables at every frame, so each 4 KiB page of them is a page
// fault the first time. The level-19 context for a 25 KB index with an 18 KB
// prefix is 1.6 MB: ~340 faults, ~3.5 ms of a 9 ms compression on the
// reference VM (docs/benchmarks.md, "2026-12-06"); one huge page instead.
// Hence 1 MiB here rather than operator new's 4 MiB: a process has few
// contexts, and they live long.
void* ZstdAlloc(void* /*opaque*/, size_t size) { return AllocateMaybeHuge(size, size_t{1} << 20); }
void ZstdFree(void* /*opaque*/, void* address) { std::free(address); }

constexpr ZSTD_customMem kWorkspaceMem{ZstdAlloc, ZstdFree, nullptr};

}  // namespace

ZstdCCtxPtr NewZstdCCtx() { return ZstdCCtxPtr(ZSTD_createCCtx_advanced(kWorkspaceMem)); }
ZstdDCtxPtr NewZstdDCtx() { return ZstdDCtxPtr(ZSTD_createDCtx_advanced(kWorkspaceMem)); }

namespace {

absl::StatusOr<std::string> Allocate(uint64_t size, bool prefault) {
  try {
    std::string s;
    s.reserve(size);  // big ones in huge pages (d4c/base/memory.h)
    if (prefault) PrefaultForWrite(s.data(), size);
    s.resize(size);
    return s;
  } catch (const std::bad_alloc&) {
  } catch (const std::length_error&) {
  }
  return absl::ResourceExhaustedError(StrCat("cannot allocate ", size, " bytes"));
}

}  // namespace

absl::StatusOr<std::string> AllocateBuffer(uint64_t size) { return Allocate(size, false); }
absl::StatusOr<std::string> AllocateWholeBuffer(uint64_t size) { return Allocate(size, true); }

int WindowLogFor(uint64_t size) {
  int log = kMinWindowLog;
  while (log < kMaxWindowLog && (uint64_t{1} << log) < size) ++log;
  return log;
}

absl::StatusOr<std::string> ZstdCompressWith(ZSTD_CCtx* cctx, std::string_view src) {
  auto out = AllocateBuffer(ZSTD_compressBound(src.size()));
  if (!out.ok()) return out.status();
  size_t n = ZSTD_compress2(cctx, out->data(), out->size(), src.data(), src.size());
  if (ZSTD_isError(n)) return ZstdError("zstd compress", n);
  out->resize(n);
  return out;
}

namespace {

absl::StatusOr<std::string> Compress(std::string_view src, int level, int window_log) {
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx) return absl::ResourceExhaustedError("ZSTD_createCCtx failed");
  if (auto s = ZstdSet(cctx.get(), ZSTD_c_compressionLevel, level); !s.ok()) return s;
  if (window_log != 0) {
    if (auto s = ZstdSet(cctx.get(), ZSTD_c_windowLog, window_log); !s.ok()) return s;
  }
  return ZstdCompressWith(cctx.get(), src);
}

}  // namespace

absl::StatusOr<std::string> ZstdCompressFrame(std::string_view src, int level, int window_log) {
  return Compress(src, level, window_log);
}

absl::StatusOr<std::string> ZstdDecompressFrame(std::string_view frame, uint64_t max_size) {
  // Exactly one frame: trailing bytes would mean a corrupt container.
  size_t frame_len = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_len) || frame_len != frame.size()) {
    return absl::DataLossError("zstd stream is not exactly one frame");
  }
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR) {
    return absl::DataLossError("zstd frame without a valid content size");
  }
  if (content > max_size) {
    return absl::DataLossError(StrCat("zstd frame content ", content, " exceeds bound ", max_size));
  }
  auto out = AllocateWholeBuffer(content);
  if (!out.ok()) return out.status();
  ZstdDCtxPtr dctx = NewZstdDCtx();
  if (!dctx) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
  // One-shot decoding writes straight into `out`: no window buffer is allocated.
  size_t n = ZSTD_decompressDCtx(dctx.get(), out->data(), out->size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return ZstdError("zstd decompress", n);
  if (n != content) return absl::DataLossError("zstd frame shorter than its content size");
  return out;
}

}  // namespace d4c
