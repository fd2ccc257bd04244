#include "zstd_codec.h"

#include <functional>

#include "d4c/base/zstd.h"
#include "d4c/base/strcat.h"

namespace d4c::codec_internal {

namespace {

// The window must reach from the end of the target back to the start of the
// base, or matches against the early base are lost.
int PatchWindowLog(uint64_t base_size, uint64_t target_size) {
  return WindowLogFor(base_size + target_size);
}

absl::Status ConfigureEncoder(ZSTD_CCtx* cctx, int level, int window_log) {
  if (auto s = ZstdSet(cctx, ZSTD_c_compressionLevel, level); !s.ok()) return s;
  if (auto s = ZstdSet(cctx, ZSTD_c_windowLog, window_log); !s.ok()) return s;
  // Long-distance matching finds the base's copy of moved blocks far back.
  if (auto s = ZstdSet(cctx, ZSTD_c_enableLongDistanceMatching, 1); !s.ok()) return s;
  // 4 bytes buy detection of a wrong base, which otherwise decodes to
  // plausible bytes of the right size.
  return ZstdSet(cctx, ZSTD_c_checksumFlag, 1);
}

bool Overlaps(std::string_view a, std::string_view b) {
  auto lt = std::less<const char*>();  // total order even across unrelated buffers
  return !a.empty() && !b.empty() && lt(a.data(), b.data() + b.size()) &&
         lt(b.data(), a.data() + a.size());
}

absl::StatusOr<std::string> EncodeSeparate(int level, std::string_view base,
                                           std::string_view target) {
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx) return absl::ResourceExhaustedError("ZSTD_createCCtx failed");
  auto s = ConfigureEncoder(cctx.get(), level, PatchWindowLog(base.size(), target.size()));
  if (!s.ok()) return s;
  size_t rc = ZSTD_CCtx_refPrefix(cctx.get(), base.data(), base.size());
  if (ZSTD_isError(rc)) return ZstdError("zstd refPrefix", rc);
  return ZstdCompressWith(cctx.get(), target);
}

}  // namespace

absl::StatusOr<std::string> ZstdCodec::Encode(std::string_view base,
                                              std::string_view target) const {
  int level = LooksText(target) ? text_level_ : level_;
  // zstd drops the part of a prefix that the input overlaps in memory (it
  // takes it for its own window), so an aliased target would not see the base.
  if (Overlaps(base, target)) {
    auto copy = AllocateWholeBuffer(target.size());
    if (!copy.ok()) return copy.status();
    target.copy(copy->data(), target.size());
    return EncodeSeparate(level, base, *copy);
  }
  return EncodeSeparate(level, base, target);
}

absl::StatusOr<std::string> ZstdCodec::Decode(std::string_view base, std::string_view patch,
                                              uint64_t target_size) const {
  // The frame must say exactly target_size, so nothing is allocated for a
  // patch that claims more.
  unsigned long long content = ZSTD_getFrameContentSize(patch.data(), patch.size());
  if (content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR) {
    return absl::DataLossError("zstd patch: not a zstd frame with a content size");
  }
  if (content != target_size) {
    return absl::DataLossError(
        StrCat("zstd patch: frame holds ", content, " bytes, expected ", target_size));
  }
  size_t frame_len = ZSTD_findFrameCompressedSize(patch.data(), patch.size());
  if (ZSTD_isError(frame_len) || frame_len != patch.size()) {
    return absl::DataLossError("zstd patch: truncated or trailing bytes");
  }
  ZstdDCtxPtr dctx = NewZstdDCtx();
  if (!dctx) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
  // Never accept a window wider than the encoder could have chosen for these sizes.
  size_t rc = ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax,
                                     PatchWindowLog(base.size(), target_size));
  if (ZSTD_isError(rc)) return ZstdError("zstd windowLogMax", rc);
  rc = ZSTD_DCtx_refPrefix(dctx.get(), base.data(), base.size());
  if (ZSTD_isError(rc)) return ZstdError("zstd refPrefix", rc);
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  // One-shot into the final buffer: no window allocation, output bounded by target_size.
  size_t n = ZSTD_decompressDCtx(dctx.get(), out->data(), out->size(), patch.data(), patch.size());
  if (ZSTD_isError(n)) return ZstdError("zstd patch", n);
  if (n != target_size) {
    return absl::DataLossError(StrCat("zstd patch: decoded ", n, " bytes, expected ", target_size));
  }
  return out;
}

}  // namespace d4c::codec_internal
