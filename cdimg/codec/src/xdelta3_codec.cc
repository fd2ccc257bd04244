#include "xdelta3_codec.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "d4c/base/zstd.h"
#include "d4c/base/strcat.h"

extern "C" {
#include "xdelta3.h"
}

namespace d4c::codec_internal {

namespace {

// VCDIFF window sizes are 32-bit and xd3_set_source rounds the block size up
// to a power of two, so stay well below 2^31 for both inputs.
constexpr uint64_t kMaxInputSize = uint64_t{1} << 30;
// Target window per VCDIFF window: the CLI default, and below the decoder's
// XD3_HARDMAXWINSIZE so our own decoder accepts it.
constexpr usize_t kEncodeWindow = XD3_DEFAULT_WINSIZE;
// -9 picks the slow (best) string matcher; ADLER32 lets a wrong base fail.
constexpr int kEncodeFlags = XD3_SEC_DJW | XD3_COMPLEVEL_9 | XD3_ADLER32;
// For packs: the pack's zstd frame does the entropy coding; the file digest
// catches a wrong base.
constexpr int kPackEncodeFlags = XD3_COMPLEVEL_9;

// Owns an xd3_stream so every exit path frees it, and the source descriptor
// the stream points to, so that it lives exactly as long.
class Stream {
 public:
  Stream() {
    std::memset(&s_, 0, sizeof(s_));
    std::memset(&src_, 0, sizeof(src_));
  }
  ~Stream() { xd3_free_stream(&s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  xd3_stream* get() { return &s_; }
  xd3_source* source() { return &src_; }

 private:
  xd3_stream s_;
  xd3_source src_;
};

absl::Status XdError(std::string_view what, int ret, xd3_stream* s) {
  const char* name = xd3_strerror(ret);
  std::string msg = StrCat(what, ": ", name ? name : std::strerror(ret));
  if (s->msg) msg += StrCat(" (", s->msg, ")");
  if (ret == ENOMEM) return absl::ResourceExhaustedError(msg);
  return absl::DataLossError(msg);
}

// The base as a single, fully loaded block: the library never asks for more
// and its source window (max_winsize) spans the whole base.
int SetSource(Stream* stream, std::string_view base) {
  if (base.empty()) return 0;  // no source: the patch must not reference one
  xd3_source* src = stream->source();
  src->blksize = static_cast<usize_t>(base.size());
  src->onblk = static_cast<usize_t>(base.size());
  src->curblk = reinterpret_cast<const uint8_t*>(base.data());
  src->curblkno = 0;
  src->max_winsize = base.size();
  return xd3_set_source_and_size(stream->get(), src, base.size());
}

// Never NULL: libxdelta3 takes a NULL input pointer to mean "no input yet".
const uint8_t* Bytes(std::string_view s) {
  static const uint8_t kNothing = 0;
  return s.data() ? reinterpret_cast<const uint8_t*>(s.data()) : &kNothing;
}

// One encode attempt into `out` (its size is the output limit).
int TryEncode(std::string_view base, std::string_view target, std::string* out, usize_t* out_len,
              Stream* stream, int flags) {
  xd3_config config;
  std::memset(&config, 0, sizeof(config));
  config.flags = flags;
  config.winsize = std::clamp<usize_t>(static_cast<usize_t>(target.size()), XD3_ALLOCSIZE,
                                       kEncodeWindow);
  config.sprevsz = std::bit_ceil(config.winsize);  // must be a power of two
  config.iopt_size = 0;  // unlimited: never force early instruction decisions
  // ngroups 0 = DJW's multi-table default (`-S djw9`), better than the 1 of plain -S djw.
  config.sec_data.ngroups = config.sec_inst.ngroups = config.sec_addr.ngroups = 0;
  int ret = xd3_config_stream(stream->get(), &config);
  if (ret == 0) ret = SetSource(stream, base);
  if (ret != 0) return ret;
  return xd3_encode_stream(stream->get(), Bytes(target), static_cast<usize_t>(target.size()),
                           reinterpret_cast<uint8_t*>(out->data()), out_len,
                           static_cast<usize_t>(out->size()));
}

// Allocation budget for decoding: hostile section/window sizes in a patch
// would otherwise make libxdelta3 allocate up to 4 GiB before noticing.
struct Budget {
  size_t used = 0;
  size_t limit = 0;
};
constexpr size_t kAllocHeader = 16;  // keeps malloc's alignment for the caller

void* BudgetAlloc(void* opaque, size_t items, usize_t size) {
  auto* b = static_cast<Budget*>(opaque);
  if (size != 0 && items > (SIZE_MAX - kAllocHeader) / size) return nullptr;
  size_t n = items * size;
  if (n > b->limit - b->used) return nullptr;
  auto* p = static_cast<char*>(std::malloc(n + kAllocHeader));
  if (!p) return nullptr;
  std::memcpy(p, &n, sizeof(n));
  b->used += n;
  return p + kAllocHeader;
}

void BudgetFree(void* opaque, void* address) {
  if (!address) return;
  auto* p = static_cast<char*>(address) - kAllocHeader;
  size_t n;
  std::memcpy(&n, p, sizeof(n));
  static_cast<Budget*>(opaque)->used -= n;
  std::free(p);
}

// Generous for any patch our encoder writes (window <= 8 MiB: output buffer,
// secondary-decoded sections of a few window sizes), small for tiny targets.
size_t DecodeBudget(uint64_t target_size, size_t patch_size) {
  uint64_t window = std::min<uint64_t>(target_size + 1, XD3_HARDMAXWINSIZE);
  return (size_t{8} << 20) + 2 * patch_size + 24 * window;
}

// Decodes into `out`, whose size is the limit; allocations go through `budget`.
int TryDecode(std::string_view base, std::string_view patch, std::string* out, usize_t* out_len,
              Stream* stream, Budget* budget) {
  xd3_config config;
  std::memset(&config, 0, sizeof(config));
  config.alloc = BudgetAlloc;
  config.freef = BudgetFree;
  config.opaque = budget;
  // The whole patch is handed over as one input so sections are read in place
  // instead of being copied into buffers sized by the patch's claims.
  config.winsize = static_cast<usize_t>(patch.size());
  int ret = xd3_config_stream(stream->get(), &config);
  if (ret == 0) ret = SetSource(stream, base);
  if (ret != 0) return ret;
  // The library rejects a NULL output buffer, which an empty string may have.
  uint8_t dummy = 0;
  uint8_t* dst = out->empty() ? &dummy : reinterpret_cast<uint8_t*>(out->data());
  return xd3_decode_stream(stream->get(), Bytes(patch), static_cast<usize_t>(patch.size()), dst, out_len,
                           static_cast<usize_t>(out->size()));
}

}  // namespace

absl::StatusOr<std::string> Xdelta3Codec::Encode(std::string_view base,
                                                 std::string_view target) const {
  return EncodeWith(base, target, kEncodeFlags);
}

absl::StatusOr<std::string> Xdelta3Codec::EncodeForPack(std::string_view base,
                                                        std::string_view target) const {
  return EncodeWith(base, target, kPackEncodeFlags);
}

absl::StatusOr<std::string> Xdelta3Codec::EncodeWith(std::string_view base, std::string_view target,
                                                     int flags) const {
  if (base.size() > kMaxInputSize || target.size() > kMaxInputSize) {
    return absl::InvalidArgumentError("xdelta3: inputs over 1 GiB are not supported");
  }
  // VCDIFF rarely exceeds the target; retry bigger on the rare ENOSPC.
  uint64_t cap = target.size() + target.size() / 8 + (64 << 10);
  for (int attempt = 0; attempt < 3; ++attempt, cap *= 2) {
    auto out = AllocateBuffer(cap);
    if (!out.ok()) return out.status();
    Stream stream;
    usize_t len = 0;
    int ret = TryEncode(base, target, &*out, &len, &stream, flags);
    if (ret == ENOSPC) continue;
    if (ret != 0) return XdError("xdelta3 encode", ret, stream.get());
    out->resize(len);
    return out;
  }
  return absl::InternalError("xdelta3 encode: output larger than expected");
}

absl::StatusOr<std::string> Xdelta3Codec::Decode(std::string_view base, std::string_view patch,
                                                 uint64_t target_size) const {
  if (base.size() > kMaxInputSize || target_size > kMaxInputSize || patch.size() > kMaxInputSize) {
    return absl::InvalidArgumentError("xdelta3: inputs over 1 GiB are not supported");
  }
  if (patch.empty()) return absl::DataLossError("xdelta3 patch: empty");
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  Budget budget{0, DecodeBudget(target_size, patch.size())};
  Stream stream;  // after `budget`: its destructor frees through it
  usize_t len = 0;
  int ret = TryDecode(base, patch, &*out, &len, &stream, &budget);
  if (ret == ENOSPC) return absl::DataLossError("xdelta3 patch: decodes past target_size");
  if (ret != 0) return XdError("xdelta3 patch", ret, stream.get());
  if (len != target_size) {
    return absl::DataLossError(StrCat("xdelta3 patch: decoded ", len, " bytes, expected ", target_size));
  }
  return out;
}

}  // namespace d4c::codec_internal
