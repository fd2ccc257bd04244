// Streamed check and copy of stored `full` blobs (delta_stream.h).
#include "delta_stream.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <string>

#include "d4c/base/sha256.h"
#include "d4c/base/strcat.h"
#include "d4c/base/zstd.h"
#include "delta_internal.h"

namespace d4c::delta_internal {

absl::Status CheckFullBlob(const CdimgImage& img, size_t entry, uint64_t size, const Digest& digest,
                           const PieceSink& sink) {
  auto at = [&](absl::Status s) { return AtEntry(s, img.path(), img.PathAt(entry)); };
  // One context per pool thread: creating one costs more than checking a
  // small file.
  thread_local ZstdDCtxPtr dctx;
  if (!dctx) dctx = NewZstdDCtx();
  if (!dctx) return at(absl::ResourceExhaustedError("zstd: out of memory"));
  ZSTD_DCtx_reset(dctx.get(), ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, kMaxWindowLog);
  // Its output buffer too: zeroing 128 KiB per blob cost patch more than
  // checking the small ones (thousands per image).
  thread_local std::string out;
  out.resize(ZSTD_DStreamOutSize());
  Sha256Hasher hash;
  uint64_t produced = 0;
  size_t left = 1;  // ZSTD_decompressStream's hint: 0 once the frame is complete
  bool first = true;
  // Decodes all of `in`; stops early only when the frame needs more input.
  auto feed = [&](ZSTD_inBuffer& in) -> absl::Status {
    for (;;) {
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      left = ZSTD_decompressStream(dctx.get(), &o, &in);
      if (ZSTD_isError(left) && ZSTD_getErrorCode(left) == ZSTD_error_memory_allocation)
        return absl::ResourceExhaustedError(StrCat("zstd: ", ZSTD_getErrorName(left)));  // not the blob's fault
      if (ZSTD_isError(left)) return absl::DataLossError(StrCat("zstd: ", ZSTD_getErrorName(left)));
      produced += o.pos;
      if (produced > size) return absl::DataLossError("full blob decompresses to more bytes than the entry has");
      hash.Update(out.data(), o.pos);
      if (left == 0) {
        if (in.pos != in.size) return absl::DataLossError("full blob has bytes after its zstd frame");
        return absl::OkStatus();
      }
      if (in.pos == in.size && o.pos < o.size) return absl::OkStatus();  // wants more input
    }
  };
  absl::Status st = CopyInPieces(
      img.RecipeAt(entry).blob, [&](const BlobRef& r) { return img.ReadBlob(r); },
      [&](std::string_view piece) -> absl::Status {
        if (first) {  // the first piece holds the frame header
          first = false;
          unsigned long long declared = ZSTD_getFrameContentSize(piece.data(), piece.size());
          if (declared != size)
            return absl::DataLossError(StrCat("full blob declares ", declared, " bytes, entry has ", size));
        }
        if (left == 0) return absl::DataLossError("full blob has bytes after its zstd frame");
        ZSTD_inBuffer in{piece.data(), piece.size(), 0};
        if (absl::Status s = feed(in); !s.ok()) return s;
        return sink ? sink(piece) : absl::OkStatus();
      });
  if (!st.ok()) return at(st);
  if (left != 0) return at(absl::DataLossError("full blob is truncated"));
  if (produced != size) return at(absl::DataLossError("full blob decompresses to the wrong size"));
  if (hash.Finish() != digest)
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(entry),
                                      ": content does not match its sha256 (corrupt image)"));
  return absl::OkStatus();
}

uint64_t CheckFullMemory(uint64_t size) {
  return std::min<uint64_t>(size, 1ull << kMaxWindowLog) + 2 * kCopyPiece + (1ull << 20);
}

}  // namespace d4c::delta_internal
