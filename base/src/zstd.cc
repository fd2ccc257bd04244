#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_customMem, ZSTD_createCCtx_advanced (exported by libzstd.so)
#include "d4c/base/zstd.h"

#include <sys/mman.h>

#include <cstdlib>

#include <algorithm>
#include <cstdint>
#include <new>

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

// Buffers this big ask for transparent huge pages (where the kernel gives
// them on request, THP "madvise" mode, as on Debian): one page fault per
// 2 MiB instead of per 4 KiB. Filling a rebuilt 28 MB file's buffers took
// ~7,000 faults each, a tenth of patch's CPU time (docs/benchmarks.md).
constexpr uint64_t kHugePageBytes = 2 << 20;
constexpr uint64_t kAdviseHugeFrom = 4 * kHugePageBytes;

void AdviseHugePages(char* p, uint64_t size) {
#ifdef MADV_HUGEPAGE
  uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(p) + size) & ~(kHugePageBytes - 1);
  if (begin < end) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only: errors ignored
#else
  (void)p, (void)size;
#endif
}

// zstd's workspaces (a context's tables, a streaming window, the
// multi-threaded compressor's buffers) of kHugeWorkspaceFrom bytes and more
// are their own 2 MiB-aligned mappings advised huge: zstd zeroes its tables
// at every frame, so each 4 KiB page of them is a page fault the first time.
// The level-19 context for a 25 KB index with an 18 KB prefix is 1.6 MB:
// ~340 faults, ~3.5 ms of a 9 ms compression on the reference VM, where a
// fault costs ~25 us (docs/benchmarks.md, "2026-12-06"); one huge page
// instead. Smaller blocks come from malloc. Every block starts kWorkspaceHeader
// bytes after a header saying which it is (the alignment malloc and zstd
// need is kept).
constexpr size_t kHugeWorkspaceFrom = 1 << 20;
constexpr size_t kWorkspaceHeader = 64;
struct WorkspaceHeader {
  void* mapping;   // null: malloc'ed at the header's address
  size_t length;   // of the mapping
};
static_assert(sizeof(WorkspaceHeader) <= kWorkspaceHeader);

void* MapHuge(size_t size) {
  const size_t length = (size + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  void* m = mmap(nullptr, length + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  uintptr_t begin = reinterpret_cast<uintptr_t>(m);
  uintptr_t aligned = (begin + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  if (aligned > begin) munmap(m, aligned - begin);
  if (size_t tail = begin + length + kHugePageBytes - (aligned + length))
    munmap(reinterpret_cast<void*>(aligned + length), tail);
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  madvise(p, length, MADV_HUGEPAGE);  // advice only: errors ignored
#endif
  *static_cast<WorkspaceHeader*>(p) = {p, length};
  return p;
}

void* ZstdAlloc(void* /*opaque*/, size_t size) {
  if (size > SIZE_MAX - kHugePageBytes * 2) return nullptr;
  void* block = size >= kHugeWorkspaceFrom ? MapHuge(size + kWorkspaceHeader) : nullptr;
  if (block == nullptr) {
    block = std::malloc(size + kWorkspaceHeader);
    if (block == nullptr) return nullptr;
    *static_cast<WorkspaceHeader*>(block) = {nullptr, 0};
  }
  return static_cast<char*>(block) + kWorkspaceHeader;
}

void ZstdFree(void* /*opaque*/, void* address) {
  if (address == nullptr) return;
  void* block = static_cast<char*>(address) - kWorkspaceHeader;
  WorkspaceHeader h = *static_cast<WorkspaceHeader*>(block);
  if (h.mapping != nullptr) {
    munmap(h.mapping, h.length);
  } else {
    std::free(block);
  }
}

constexpr ZSTD_customMem kWorkspaceMem{ZstdAlloc, ZstdFree, nullptr};

}  // namespace

ZstdCCtxPtr NewZstdCCtx() { return ZstdCCtxPtr(ZSTD_createCCtx_advanced(kWorkspaceMem)); }
ZstdDCtxPtr NewZstdDCtx() { return ZstdDCtxPtr(ZSTD_createDCtx_advanced(kWorkspaceMem)); }

absl::StatusOr<std::string> AllocateBuffer(uint64_t size) {
  try {
    std::string s;
    if (size >= kAdviseHugeFrom) {
      s.reserve(size);  // allocated, not yet touched
      AdviseHugePages(s.data(), size);
    }
    s.resize(size);
    return s;
  } catch (const std::bad_alloc&) {
  } catch (const std::length_error&) {
  }
  return absl::ResourceExhaustedError(StrCat("cannot allocate ", size, " bytes"));
}

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
  auto out = AllocateBuffer(content);
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
