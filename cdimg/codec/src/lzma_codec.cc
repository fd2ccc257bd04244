#include "lzma_codec.h"

#include <lzma.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "d4c/base/memory.h"
#include "d4c/base/strcat.h"
#include "d4c/base/varint.h"
#include "d4c/base/zstd.h"
#include "lzma_alloc.h"

namespace d4c::codec_internal {

namespace {

void* Allocate(void* /*opaque*/, size_t nmemb, size_t size) {
  if (size != 0 && nmemb > SIZE_MAX / size) return nullptr;
  return AllocateMaybeHuge(nmemb * size);
}
void Free(void* /*opaque*/, void* p) { std::free(p); }
constexpr lzma_allocator kAllocator = {Allocate, Free, nullptr};

constexpr int kCrcSize = 4;

absl::Status CheckSizes(uint64_t base, uint64_t target, bool decoding) {
  if (base <= kLzmaMaxInput && target <= kLzmaMaxInput - base) return absl::OkStatus();
  std::string what =
      StrCat("lzma patch: base and target of ", base + target, " bytes exceed the 1 GiB its dictionary may hold");
  return decoding ? absl::DataLossError(what) : absl::FailedPreconditionError(what);
}

// The decoder must know the dictionary the encoder used: it is derived from
// the sizes alone, so the patch needs no header.
lzma_options_lzma Options(std::string_view base, uint64_t target_size) {
  lzma_options_lzma opt{};
  lzma_lzma_preset(&opt, kLzmaPreset);
  opt.dict_size = static_cast<uint32_t>(std::max<uint64_t>(LZMA_DICT_SIZE_MIN, base.size() + target_size));
  opt.preset_dict = base.empty() ? nullptr : reinterpret_cast<const uint8_t*>(base.data());
  opt.preset_dict_size = static_cast<uint32_t>(base.size());
  opt.mf = LZMA_MF_HC4;
  opt.nice_len = kLzmaNiceLength;
  opt.lc = kLzmaLiteralContextBits;
  opt.lp = 0;
  opt.pb = 0;
  return opt;
}

uint32_t Crc32(std::string_view bytes) {
  return lzma_crc32(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), 0);
}

}  // namespace

const lzma_allocator* LzmaAllocator() { return &kAllocator; }

absl::StatusOr<std::string> LzmaCodec::Encode(std::string_view base, std::string_view target) const {
  return EncodeWithin(base, target, NoHelpers(), std::numeric_limits<uint64_t>::max());
}

absl::StatusOr<std::string> LzmaCodec::EncodeWithin(std::string_view base, std::string_view target,
                                                    Helpers& /*helpers*/, uint64_t limit) const {
  if (auto s = CheckSizes(base.size(), target.size(), false); !s.ok()) return s;
  lzma_options_lzma opt = Options(base, target.size());
  lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  // LZMA2 stores incompressible chunks raw: a few bytes per 64 KiB chunk
  // over the input. A buffer no bigger than `limit` stops the encoder as
  // soon as it would pass it.
  uint64_t bound = target.size() + target.size() / 1024 + 64 + kCrcSize;
  bool limited = limit < bound;
  auto out = AllocateBuffer(limited ? limit : bound);
  if (!out.ok()) return out.status();
  if (out->size() < kCrcSize) return absl::OutOfRangeError("lzma: patch would exceed the limit");
  size_t pos = 0;
  lzma_ret r = lzma_raw_buffer_encode(filters, LzmaAllocator(), reinterpret_cast<const uint8_t*>(target.data()),
                                      target.size(), reinterpret_cast<uint8_t*>(out->data()), &pos,
                                      out->size() - kCrcSize);
  if (r == LZMA_BUF_ERROR && limited) return absl::OutOfRangeError("lzma: patch would exceed the limit");
  if (r == LZMA_MEM_ERROR) return absl::ResourceExhaustedError("lzma: out of memory in the encoder");
  if (r != LZMA_OK) return absl::InternalError(StrCat("lzma: encoder failed (lzma_ret ", int{r}, ")"));
  out->resize(pos);
  PutLE(&*out, Crc32(target), kCrcSize);
  return out;
}

absl::StatusOr<std::string> LzmaCodec::Decode(std::string_view base, std::string_view patch,
                                              uint64_t target_size) const {
  if (patch.size() < kCrcSize) return absl::DataLossError("lzma patch: shorter than its checksum");
  if (auto s = CheckSizes(base.size(), target_size, true); !s.ok()) return s;
  lzma_options_lzma opt = Options(base, target_size);
  lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  // One call: it fails unless the stream ends (LZMA2's end marker) within
  // the input and fills the output exactly, looking one byte past a full
  // output for a stream that would go on.
  std::string_view stream = patch.substr(0, patch.size() - kCrcSize);
  size_t in_pos = 0, out_pos = 0;
  lzma_ret r = lzma_raw_buffer_decode(filters, LzmaAllocator(), reinterpret_cast<const uint8_t*>(stream.data()),
                                      &in_pos, stream.size(), reinterpret_cast<uint8_t*>(out->data()), &out_pos,
                                      out->size());
  if (r == LZMA_MEM_ERROR) return absl::ResourceExhaustedError("lzma: out of memory in the decoder");
  if (r == LZMA_BUF_ERROR)
    return absl::DataLossError(StrCat("lzma patch: decodes to more than ", target_size, " bytes"));
  if (r != LZMA_OK)
    return absl::DataLossError(StrCat("lzma patch: corrupt or truncated stream (lzma_ret ", int{r}, ")"));
  if (out_pos != target_size)
    return absl::DataLossError(StrCat("lzma patch: decoded ", out_pos, " bytes, expected ", target_size));
  if (in_pos != stream.size()) return absl::DataLossError("lzma patch: bytes after the stream");
  if (Crc32(*out) != GetLE(patch.data() + stream.size(), kCrcSize))
    return absl::DataLossError("lzma patch: checksum mismatch (a wrong base or a damaged patch)");
  return out;
}

}  // namespace d4c::codec_internal
