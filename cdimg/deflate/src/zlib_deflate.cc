// gzip members split and inflated, and zlib's deflate as a recipe
// (deflate.h). zlib is linked privately: nothing of it leaks into the API.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "d4c/base/strcat.h"
#include "d4c/deflate.h"

namespace d4c::deflate {

namespace {

constexpr uint8_t kFhcrc = 2, kFextra = 4, kFname = 8, kFcomment = 16;
constexpr size_t kChunk = 64 << 10;

absl::Status NotGzip(std::string_view what) { return absl::InvalidArgumentError(StrCat("not a gzip file: ", what)); }

uint32_t Le32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

struct InflateDeleter {
  void operator()(z_stream* z) const {
    inflateEnd(z);
    delete z;
  }
};
struct DeflateDeleter {
  void operator()(z_stream* z) const {
    deflateEnd(z);
    delete z;
  }
};
using InflatePtr = std::unique_ptr<z_stream, InflateDeleter>;
using DeflatePtr = std::unique_ptr<z_stream, DeflateDeleter>;

absl::StatusOr<InflatePtr> NewInflate() {
  auto* z = new z_stream{};
  if (inflateInit2(z, -15) != Z_OK) {
    delete z;
    return absl::ResourceExhaustedError("inflate: cannot initialize zlib");
  }
  return InflatePtr(z);
}

absl::StatusOr<DeflatePtr> NewDeflate(ZlibParams p) {
  if (p.level < 1 || p.level > 9 || p.mem_level < 1 || p.mem_level > 9)
    return absl::InvalidArgumentError(StrCat("zlib recipe: level ", p.level, " memLevel ", p.mem_level,
                                             " out of range (1..9)"));
  auto* z = new z_stream{};
  if (deflateInit2(z, p.level, Z_DEFLATED, -15, p.mem_level, Z_DEFAULT_STRATEGY) != Z_OK) {
    delete z;
    return absl::ResourceExhaustedError("deflate: cannot initialize zlib");
  }
  return DeflatePtr(z);
}

// Inflates `stream` into at most `max_out` bytes. *consumed: the stream's
// length (where its final block ended). ResourceExhausted past max_out.
absl::StatusOr<std::string> Inflate(std::string_view stream, uint64_t max_out, size_t* consumed) {
  auto z = NewInflate();
  if (!z.ok()) return z.status();
  std::string out;
  z_stream* s = z->get();
  s->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(stream.data()));
  s->avail_in = static_cast<uInt>(std::min<size_t>(stream.size(), UINT32_MAX));
  for (;;) {
    size_t have = out.size();
    size_t room = std::min<uint64_t>(kChunk, max_out - have);
    if (room == 0) room = 1;  // one byte more than allowed proves the excess
    out.resize(have + room);
    s->next_out = reinterpret_cast<Bytef*>(out.data() + have);
    s->avail_out = static_cast<uInt>(room);
    int rc = inflate(s, Z_NO_FLUSH);
    out.resize(have + room - s->avail_out);
    if (out.size() > max_out) return absl::ResourceExhaustedError(StrCat("inflates to more than ", max_out, " bytes"));
    if (rc == Z_STREAM_END) break;
    if (rc == Z_OK) {
      // Progress is guaranteed while input remains; none left is a truncation.
      if (s->avail_in == 0 && s->avail_out != 0) return absl::InvalidArgumentError("truncated deflate stream");
      continue;
    }
    if (rc == Z_BUF_ERROR) return absl::InvalidArgumentError("truncated deflate stream");
    return absl::InvalidArgumentError(StrCat("corrupt deflate stream (", s->msg ? s->msg : "zlib error", ")"));
  }
  *consumed = stream.size() - s->avail_in;
  return out;
}

}  // namespace

bool LooksGzip(std::string_view d) {
  return d.size() >= 18 && static_cast<uint8_t>(d[0]) == 0x1f && static_cast<uint8_t>(d[1]) == 0x8b && d[2] == 8;
}

absl::StatusOr<size_t> GzipHeaderLength(std::string_view d) {
  // A header alone may be shorter than LooksGzip's smallest file.
  if (d.size() < 10 || static_cast<uint8_t>(d[0]) != 0x1f || static_cast<uint8_t>(d[1]) != 0x8b || d[2] != 8)
    return NotGzip("no gzip magic with the deflate method");
  uint8_t flags = static_cast<uint8_t>(d[3]);
  if (flags & 0xe0) return NotGzip("reserved flag bits set");
  size_t pos = 10;
  if (flags & kFextra) {
    if (d.size() < pos + 2) return NotGzip("truncated extra field");
    size_t xlen = static_cast<uint8_t>(d[pos]) | static_cast<uint8_t>(d[pos + 1]) << 8;
    pos += 2;
    if (d.size() - pos < xlen) return NotGzip("truncated extra field");
    pos += xlen;
  }
  for (uint8_t f : {kFname, kFcomment}) {
    if (!(flags & f)) continue;
    size_t end = d.find('\0', pos);
    if (end == std::string_view::npos) return NotGzip("unterminated name or comment");
    pos = end + 1;
  }
  if (flags & kFhcrc) pos += 2;
  if (pos > d.size()) return NotGzip("truncated header");
  return pos;
}

absl::StatusOr<GzipFile> SplitGzip(std::string_view d, uint64_t max_raw) {
  auto hlen = GzipHeaderLength(d);
  if (!hlen.ok()) return hlen.status();
  GzipFile g;
  g.header = d.substr(0, *hlen);
  std::string_view rest = d.substr(*hlen);
  size_t used = 0;
  auto raw = Inflate(rest, std::min(max_raw, kMaxRaw), &used);
  if (!raw.ok()) return raw.status();
  if (rest.size() - used != 8)
    return NotGzip(rest.size() - used < 8 ? "truncated trailer" : "bytes after the first member");
  const char* trailer = rest.data() + used;
  if (Le32(trailer) != Crc32(*raw)) return NotGzip("CRC-32 mismatch");
  if (Le32(trailer + 4) != static_cast<uint32_t>(raw->size())) return NotGzip("ISIZE mismatch");
  g.stream = rest.substr(0, used);
  g.raw = std::move(*raw);
  return g;
}

absl::StatusOr<std::string> InflateExact(std::string_view stream, uint64_t raw_size) {
  size_t used = 0;
  auto raw = Inflate(stream, raw_size, &used);
  if (!raw.ok()) return raw.status();
  if (raw->size() != raw_size) return absl::InvalidArgumentError("inflated size differs from the recorded one");
  if (used != stream.size()) return absl::InvalidArgumentError("bytes after the deflate stream");
  return raw;
}

absl::StatusOr<std::string> Zlib(std::string_view raw, ZlibParams p, uint64_t max_out) {
  if (raw.size() > kMaxRaw) return absl::InvalidArgumentError("zlib recipe: input over 1 GiB");
  max_out = std::min<uint64_t>(max_out, 2 * kMaxRaw);  // deflate never expands 1 GiB past this
  auto z = NewDeflate(p);
  if (!z.ok()) return z.status();
  z_stream* s = z->get();
  s->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  s->avail_in = static_cast<uInt>(raw.size());
  std::string out;
  for (;;) {
    size_t have = out.size();
    size_t room = std::min<uint64_t>(kChunk, max_out + 1 - have);
    out.resize(have + room);
    s->next_out = reinterpret_cast<Bytef*>(out.data() + have);
    s->avail_out = static_cast<uInt>(room);
    int rc = ::deflate(s, Z_FINISH);
    out.resize(have + room - s->avail_out);
    if (out.size() > max_out) return absl::ResourceExhaustedError(StrCat("deflates to more than ", max_out, " bytes"));
    if (rc == Z_STREAM_END) return out;
    if (rc != Z_OK && rc != Z_BUF_ERROR) return absl::InternalError("zlib deflate failed");
  }
}

bool ZlibReproduces(std::string_view raw, ZlibParams p, std::string_view stream) {
  if (raw.size() > kMaxRaw) return false;
  auto z = NewDeflate(p);
  if (!z.ok()) return false;
  z_stream* s = z->get();
  s->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  s->avail_in = static_cast<uInt>(raw.size());
  std::string buf(kChunk, '\0');
  size_t done = 0;
  for (;;) {
    s->next_out = reinterpret_cast<Bytef*>(buf.data());
    s->avail_out = static_cast<uInt>(buf.size());
    int rc = ::deflate(s, Z_FINISH);
    size_t n = buf.size() - s->avail_out;
    if (n > stream.size() - done || std::memcmp(buf.data(), stream.data() + done, n) != 0) return false;
    done += n;
    if (rc == Z_STREAM_END) return done == stream.size();
    if (rc != Z_OK && rc != Z_BUF_ERROR) return false;
  }
}

uint32_t Crc32(std::string_view data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (!data.empty()) {
    size_t n = std::min<size_t>(data.size(), 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(n));
    data.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace d4c::deflate
