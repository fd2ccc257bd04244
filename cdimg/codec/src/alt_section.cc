#include "alt_section.h"

#include <bzlib.h>
#include <lzma.h>

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "d4c/base/strcat.h"
#include "d4c/base/zstd.h"
#include "lzma_alloc.h"

namespace d4c::codec_internal {

namespace {

int DictLogFor(uint64_t size) {
  int log = kLzma2MinDictLog;
  while (log < kLzma2MaxDictLog && (uint64_t{1} << log) < size) ++log;
  return log;
}

// The output buffer grows with what the stream really produces (never past
// `max_size`), so a hostile section claiming a huge target allocates nothing
// up front.
constexpr uint64_t kFirstOutput = 1 << 20;

bool Grow(std::string* out, uint64_t max_size) {
  uint64_t want = std::min<uint64_t>(max_size, std::max<uint64_t>(kFirstOutput, uint64_t{out->size()} * 2));
  if (want <= out->size()) return false;
  auto bigger = AllocateBuffer(want);
  if (!bigger.ok()) return false;
  bigger->replace(0, out->size(), *out);
  *out = std::move(*bigger);
  return true;
}

absl::StatusOr<std::string> Lzma2Decompress(std::string_view section, uint64_t max_size) {
  if (section.size() < 2) return absl::DataLossError("bsdiff patch: lzma2 section truncated");
  int log = static_cast<uint8_t>(section[1]);
  if (log < kLzma2MinDictLog || log > kLzma2MaxDictLog) {
    return absl::DataLossError(StrCat("bsdiff patch: lzma2 dictionary 2^", log, " out of range"));
  }
  // A stream never reaches back further than its own output, so the
  // dictionary need not exceed it.
  lzma_options_lzma opt{};
  opt.dict_size = static_cast<uint32_t>(std::clamp<uint64_t>(max_size, LZMA_DICT_SIZE_MIN, uint64_t{1} << log));
  lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  lzma_stream strm = LZMA_STREAM_INIT;
  strm.allocator = LzmaAllocator();
  lzma_ret r = lzma_raw_decoder(&strm, filters);
  if (r == LZMA_MEM_ERROR) return absl::ResourceExhaustedError("bsdiff: out of memory in the lzma decoder");
  if (r != LZMA_OK) return absl::DataLossError(StrCat("bsdiff patch: lzma2 section refused (lzma_ret ", int{r}, ")"));
  std::string out;
  strm.next_in = reinterpret_cast<const uint8_t*>(section.data() + 2);
  strm.avail_in = section.size() - 2;
  uint64_t produced = 0;
  bool over = false;
  for (;;) {
    if (produced == out.size() && !Grow(&out, max_size)) {
      if (out.size() < max_size) {
        lzma_end(&strm);
        return absl::ResourceExhaustedError("bsdiff: out of memory for the lzma2 output");
      }
      // At the bound: the stream must end without another byte.
      uint8_t probe;
      strm.next_out = &probe;
      strm.avail_out = 1;
      r = lzma_code(&strm, LZMA_FINISH);
      over = strm.avail_out == 0;
      break;
    }
    strm.next_out = reinterpret_cast<uint8_t*>(out.data() + produced);
    strm.avail_out = out.size() - produced;
    size_t before = strm.avail_out;
    r = lzma_code(&strm, LZMA_FINISH);
    produced += before - strm.avail_out;
    if (r != LZMA_OK) break;
  }
  size_t left = strm.avail_in;
  lzma_end(&strm);
  if (over) return absl::DataLossError("bsdiff patch: lzma2 section longer than its bound");
  if (r == LZMA_MEM_ERROR) return absl::ResourceExhaustedError("bsdiff: out of memory in the lzma decoder");
  if (r != LZMA_STREAM_END) {
    return absl::DataLossError(StrCat("bsdiff patch: corrupt or truncated lzma2 section (lzma_ret ", int{r}, ")"));
  }
  if (left != 0) return absl::DataLossError("bsdiff patch: bytes after the lzma2 stream");
  out.resize(produced);
  return out;
}

absl::StatusOr<std::string> Bzip2Decompress(std::string_view section, uint64_t max_size) {
  if (section.size() - 1 > std::numeric_limits<unsigned>::max()) {
    return absl::DataLossError("bsdiff patch: bzip2 section over 4 GiB");
  }
  bz_stream s{};
  if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) return absl::ResourceExhaustedError("bsdiff: bzip2 decoder init failed");
  s.next_in = const_cast<char*>(section.data() + 1);
  s.avail_in = static_cast<unsigned>(section.size() - 1);
  std::string out;
  uint64_t produced = 0;
  int r = BZ_OK;
  bool oom = false;
  while (r == BZ_OK) {
    if (produced == out.size() && !Grow(&out, max_size)) {
      if (out.size() < max_size) {
        oom = true;
        break;
      }
      // At the bound: the stream must end without another byte.
      char probe;
      s.next_out = &probe;
      s.avail_out = 1;
      r = BZ2_bzDecompress(&s);
      if (s.avail_out == 0) r = BZ_OUTBUFF_FULL;
      break;
    }
    // avail_out is 32 bits: the output is handed over in pieces.
    s.next_out = out.data() + produced;
    s.avail_out = static_cast<unsigned>(std::min<uint64_t>(out.size() - produced, 1u << 30));
    unsigned before = s.avail_out;
    r = BZ2_bzDecompress(&s);
    produced += before - s.avail_out;
    if (r == BZ_OK && s.avail_in == 0 && before == s.avail_out) break;  // truncated: no progress possible
  }
  unsigned left = s.avail_in;
  BZ2_bzDecompressEnd(&s);
  if (oom) return absl::ResourceExhaustedError("bsdiff: out of memory for the bzip2 output");
  if (r == BZ_MEM_ERROR) return absl::ResourceExhaustedError("bsdiff: out of memory in the bzip2 decoder");
  if (r == BZ_OUTBUFF_FULL) return absl::DataLossError("bsdiff patch: bzip2 section longer than its bound");
  if (r != BZ_STREAM_END) return absl::DataLossError(StrCat("bsdiff patch: corrupt or truncated bzip2 section (", r, ")"));
  if (left != 0) return absl::DataLossError("bsdiff patch: bytes after the bzip2 stream");
  out.resize(produced);
  return out;
}

}  // namespace

absl::StatusOr<std::string> Lzma2CompressSection(std::string_view src) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, 9 | LZMA_PRESET_EXTREME)) return absl::InternalError("bsdiff: lzma preset 9e refused");
  int log = DictLogFor(src.size());
  opt.dict_size = uint32_t{1} << log;
  lzma_filter filters[2] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  // LZMA2 stores incompressible chunks raw: a few bytes per 64 KiB chunk over the input.
  auto out = AllocateBuffer(2 + src.size() + src.size() / 1024 + 64);
  if (!out.ok()) return out.status();
  (*out)[0] = kLzma2Form;
  (*out)[1] = static_cast<char>(log);
  size_t pos = 2;
  lzma_ret r = lzma_raw_buffer_encode(filters, LzmaAllocator(), reinterpret_cast<const uint8_t*>(src.data()),
                                      src.size(), reinterpret_cast<uint8_t*>(out->data()), &pos, out->size());
  if (r == LZMA_MEM_ERROR) return absl::ResourceExhaustedError("bsdiff: out of memory in the lzma encoder");
  if (r != LZMA_OK) return absl::InternalError(StrCat("bsdiff: lzma encoder failed (lzma_ret ", int{r}, ")"));
  out->resize(pos);
  return out;
}

absl::StatusOr<std::string> Bzip2CompressSection(std::string_view src) {
  if (src.size() > std::numeric_limits<unsigned>::max() / 2) return absl::InvalidArgumentError("bsdiff: stream over 2 GiB");
  // bzip2's documented bound: 1% more plus 600 bytes.
  auto out = AllocateBuffer(1 + src.size() + src.size() / 100 + 600);
  if (!out.ok()) return out.status();
  (*out)[0] = kBzip2Form;
  unsigned len = static_cast<unsigned>(out->size() - 1);
  int r = BZ2_bzBuffToBuffCompress(out->data() + 1, &len, const_cast<char*>(src.data()),
                                   static_cast<unsigned>(src.size()), 9, 0, 0);
  if (r == BZ_MEM_ERROR) return absl::ResourceExhaustedError("bsdiff: out of memory in the bzip2 encoder");
  if (r != BZ_OK) return absl::InternalError(StrCat("bsdiff: bzip2 encoder failed (", r, ")"));
  out->resize(1 + len);
  return out;
}

absl::StatusOr<std::string> DecompressAltSection(std::string_view section, uint64_t max_size) {
  if (section[0] == kLzma2Form) return Lzma2Decompress(section, max_size);
  return Bzip2Decompress(section, max_size);
}

}  // namespace d4c::codec_internal
