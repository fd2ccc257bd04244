// d4c_deflate's gzip parsing, bounded inflate and zlib recipe (zlib_deflate.cc).
#include <catch2/catch.hpp>

#include <string>

#include "d4c/deflate.h"

namespace d4c::deflate {
namespace {

std::string Text() {
  std::string s;
  for (int i = 0; i < 4000; ++i) s += "line " + std::to_string(i * 7919 % 1000) + " of the changelog\n";
  return s;
}

std::string Member(std::string_view header, std::string_view raw, std::string_view stream) {
  std::string g(header);
  g += stream;
  uint32_t crc = Crc32(raw), n = static_cast<uint32_t>(raw.size());
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(crc >> (8 * i)));
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(n >> (8 * i)));
  return g;
}

const std::string kPlainHeader("\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03", 10);

TEST_CASE("deflate: CRC-32 check value", "[deflate]") {
  CHECK(Crc32("123456789") == 0xCBF43926u);
  CHECK(Crc32("") == 0u);
}

TEST_CASE("deflate: a gzip member splits into header, stream and content", "[deflate]") {
  std::string raw = Text();
  auto stream = Zlib(raw, {9, 8}, UINT32_MAX);
  REQUIRE(stream.ok());
  std::string g = Member(kPlainHeader, raw, *stream);
  CHECK(LooksGzip(g));
  auto s = SplitGzip(g, kMaxRaw);
  REQUIRE(s.ok());
  CHECK(s->header == kPlainHeader);
  CHECK(s->stream == *stream);
  CHECK(s->raw == raw);
  // Inflated size bound: one byte short is refused before more is allocated.
  auto small = SplitGzip(g, raw.size() - 1);
  REQUIRE_FALSE(small.ok());
  CHECK(small.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(SplitGzip(g, raw.size()).ok());
  // Not one member: trailing bytes, a second member, a truncated trailer, a bad ISIZE.
  for (const std::string& bad : {g + "\n", g + g, g.substr(0, g.size() - 1)}) {
    auto r = SplitGzip(bad, kMaxRaw);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  }
  std::string isize = g;
  isize[isize.size() - 1] ^= 1;
  CHECK_FALSE(SplitGzip(isize, kMaxRaw).ok());
}

TEST_CASE("deflate: optional header fields and malformed headers", "[deflate]") {
  // FEXTRA (2 bytes), FNAME, FCOMMENT, FHCRC.
  std::string h("\x1f\x8b\x08\x1e\x00\x00\x00\x00\x00\x03", 10);
  h += std::string("\x02\x00xy", 4) + std::string("name\0", 5) + std::string("comment\0", 8) + "cc";
  auto n = GzipHeaderLength(h + "rest");
  REQUIRE(n.ok());
  CHECK(*n == h.size());
  CHECK_FALSE(GzipHeaderLength(h.substr(0, 12)).ok());                // extra field cut
  CHECK_FALSE(GzipHeaderLength(h.substr(0, h.size() - 12)).ok());     // name unterminated
  std::string reserved = kPlainHeader;
  reserved[3] = 0x20;
  CHECK_FALSE(GzipHeaderLength(reserved).ok());
  std::string method = kPlainHeader;
  method[2] = 7;
  CHECK_FALSE(GzipHeaderLength(method).ok());
  CHECK(GzipHeaderLength(kPlainHeader).ok());  // a header alone: 10 bytes
  CHECK_FALSE(LooksGzip(kPlainHeader));        // but not a whole file
}

TEST_CASE("deflate: InflateExact takes exactly the recorded size and stream", "[deflate]") {
  std::string raw = Text();
  auto stream = Zlib(raw, {6, 8}, UINT32_MAX);
  REQUIRE(stream.ok());
  auto ok = InflateExact(*stream, raw.size());
  REQUIRE(ok.ok());
  CHECK(*ok == raw);
  CHECK(InflateExact(*stream, raw.size() - 1).status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(InflateExact(*stream, raw.size() + 1).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_FALSE(InflateExact(*stream + "x", raw.size()).ok());                   // bytes after the stream
  CHECK_FALSE(InflateExact(stream->substr(0, stream->size() / 2), raw.size()).ok());  // truncated
  CHECK_FALSE(InflateExact(std::string(64, '\xff'), 1000).ok());               // not deflate
}

TEST_CASE("deflate: zlib recipes reproduce their own stream only", "[deflate]") {
  std::string raw = Text();
  auto l1 = Zlib(raw, {1, 8}, UINT32_MAX), l9 = Zlib(raw, {9, 8}, UINT32_MAX);
  REQUIRE(l1.ok());
  REQUIRE(l9.ok());
  REQUIRE(*l1 != *l9);
  CHECK(ZlibReproduces(raw, {1, 8}, *l1));
  CHECK(ZlibReproduces(raw, {9, 8}, *l9));
  CHECK_FALSE(ZlibReproduces(raw, {1, 8}, *l9));
  CHECK_FALSE(ZlibReproduces(raw, {9, 8}, l9->substr(0, l9->size() - 1)));
  CHECK_FALSE(ZlibReproduces(raw, {9, 8}, *l9 + "x"));
  CHECK(Zlib(raw, {9, 8}, l9->size() - 1).status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(Zlib(raw, {9, 8}, l9->size()).ok());
  CHECK(Zlib(raw, {0, 8}, UINT32_MAX).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Zlib(raw, {9, 10}, UINT32_MAX).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace d4c::deflate
