// zstd helpers shared by the codecs, the cdimg format and convert: RAII contexts, one-frame compression and
// decompression with a caller-imposed size bound, allocation without exceptions.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c {

struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using ZstdCCtxPtr = std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter>;
using ZstdDCtxPtr = std::unique_ptr<ZSTD_DCtx, ZstdDCtxDeleter>;

// Contexts whose big workspaces (1 MiB and more) are mapped in huge pages
// (base/src/zstd.cc says why); null when out of memory. Use these instead of
// ZSTD_createCCtx / ZSTD_createDCtx.
ZstdCCtxPtr NewZstdCCtx();
ZstdDCtxPtr NewZstdDCtx();

// Turns a zstd return code into a Status: `code` is the failed operation's result.
absl::Status ZstdError(std::string_view what, size_t code);
// Sets a parameter, mapping failure to a Status (parameters can be out of range).
absl::Status ZstdSet(ZSTD_CCtx* cctx, ZSTD_cParameter p, int value);

// std::string of `size` bytes; a huge size is ResourceExhausted instead of bad_alloc,
// because no exception may leave the codecs.
absl::StatusOr<std::string> AllocateBuffer(uint64_t size);
// The same, for a buffer the caller writes from start to end right away (a
// decoded file, a blob read whole): faulted in with one call from 1 MiB
// (PrefaultForWrite, d4c/base/memory.h). Not for bounds that are only
// partly written (a compressor's worst case).
absl::StatusOr<std::string> AllocateWholeBuffer(uint64_t size);

// Smallest log2 window covering `size` bytes, clamped to zstd's valid range.
int WindowLogFor(uint64_t size);

// `src` as one frame through `cctx` (configured by the caller: level, window,
// prefix); the output buffer is zstd's bound, shrunk to the frame.
absl::StatusOr<std::string> ZstdCompressWith(ZSTD_CCtx* cctx, std::string_view src);

// One frame with its content size recorded; `window_log` 0 keeps the level's default.
absl::StatusOr<std::string> ZstdCompressFrame(std::string_view src, int level, int window_log);

// Decodes exactly one frame (nothing after it) whose recorded content size is at
// most `max_size`; only that many bytes are allocated.
absl::StatusOr<std::string> ZstdDecompressFrame(std::string_view frame, uint64_t max_size);

}  // namespace d4c
