// The relcopy codec beyond the shared codec tests: its pack form (raw
// instructions), position independence, and hand-made hostile streams.
#include <catch2/catch.hpp>
#include <zstd.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "d4c/codec.h"

namespace d4c {
namespace {

const DeltaCodec& Relcopy() { return GetCodec(CodecId::kRelcopy); }

std::string Words(size_t n, uint64_t seed) {
  static const char* kWords[] = {"const ", "type", "Mapped", "(", ")", " => ", "return ", "if ", "{\n", "}\n",
                                 "getBaseConstraintOfType", "modifiers", "isArrayOrTupleType", "; ", "  ",
                                 "everyType", "instantiateType", "prependTypeMapping", " && ", "target"};
  std::mt19937_64 rng(seed);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng() % 20];
    if (rng() % 7 == 0) s += std::to_string(rng() % 100000);
  }
  s.resize(n);
  return s;
}

std::string PackPatch(std::string_view base, std::string_view target) {
  auto p = Relcopy().EncodeForPack(base, target);
  REQUIRE(p.ok());
  return *p;
}

void RoundTripPack(std::string_view base, std::string_view target) {
  std::string patch = PackPatch(base, target);
  REQUIRE((patch.empty() || patch[0] != 0));  // the raw form
  auto out = Relcopy().DecodeFromPack(base, patch, target.size());
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  REQUIRE(*out == target);
}

size_t Zstd(std::string_view s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 19);
  REQUIRE_FALSE(ZSTD_isError(n));
  return n;
}

void Varint(std::string* out, uint64_t v) {
  while (v >= 0x80) out->push_back(static_cast<char>(v | 0x80)), v >>= 7;
  out->push_back(static_cast<char>(v));
}
uint64_t ZigZag(int64_t d) { return (static_cast<uint64_t>(d) << 1) ^ static_cast<uint64_t>(d >> 63); }

// A hand-made pack-form stream builder (the layout of docs/format.md).
struct Stream {
  std::string bytes;
  Stream& Lit(std::string_view s) {
    Varint(&bytes, 1);
    Varint(&bytes, s.size());
    bytes += s;
    return *this;
  }
  Stream& Copy(uint64_t len, int64_t delta, int slot = 0) {
    Varint(&bytes, len << 1);
    Varint(&bytes, ZigZag(delta) << 2 | static_cast<uint64_t>(slot));
    return *this;
  }
};

TEST_CASE("relcopy pack form round trips", "[codec][relcopy]") {
  std::string base = Words(100000, 1);
  RoundTripPack("", "");
  RoundTripPack(base, "");
  RoundTripPack("", base.substr(0, 1000));
  RoundTripPack("a", "a");
  RoundTripPack("a", "b");
  RoundTripPack(base, base);
  std::string t = base;
  t.insert(50000, "NEW TEXT");
  t.erase(1000, 300);
  t[99000] = '#';
  RoundTripPack(base, t);
  RoundTripPack(base, t.substr(70000) + t.substr(0, 70000));
}

TEST_CASE("relcopy pack form is small and has no checksum", "[codec][relcopy]") {
  std::string base = Words(100000, 2);
  std::string t = base;
  t.replace(40000, 10, base.substr(80000, 30));
  std::string patch = PackPatch(base, t);
  CHECK(patch.size() < 24);
  CHECK(Relcopy().Encode(base, t)->size() > patch.size());  // hash + frame
}

// diff makes the pack form first and wraps it only when it does not fit a
// pack: the wrapped form must be Encode's very bytes.
TEST_CASE("relcopy's standalone form made from its pack form is Encode's", "[codec][relcopy]") {
  std::string base = Words(100000, 8);
  std::string t = base;
  t.insert(30000, "an edit");
  t.erase(70000, 500);
  for (const std::string& target : {t, base, std::string(), Words(5000, 9)}) {
    auto member = Relcopy().EncodeForPack(base, target);
    REQUIRE(member.ok());
    auto wrapped = Relcopy().StandaloneFromPack(target, *member);
    REQUIRE(wrapped.ok());
    CHECK(*wrapped == *Relcopy().Encode(base, target));
  }
  // Codecs whose two forms are made apart say so.
  for (CodecId id : {CodecId::kXdelta3, CodecId::kBsdiff, CodecId::kZstd})
    CHECK(absl::IsUnimplemented(GetCodec(id).StandaloneFromPack(t, "x").status()));
}

// The point of the codec: the same edit in two different files gives the
// same instruction bytes, so one zstd frame over both patches pays once.
TEST_CASE("relcopy encodes the same edit in two files the same way", "[codec][relcopy]") {
  std::string shared = Words(200000, 3);
  std::string a = Words(30000, 4) + shared + Words(5000, 5);
  std::string b = Words(70000, 6) + shared + Words(9000, 7);
  auto edit = [&](std::string s, size_t at) {
    for (size_t k = 0; k < 8; ++k) {  // 8 hunks, each text copied from elsewhere in `shared`
      size_t p = at + 20000 * k;
      s.replace(p + 5000, 40, shared.substr(1000 + 7919 * k, 25) + shared.substr(150000 + 3001 * k, 31));
    }
    return s;
  };
  std::string pa = PackPatch(a, edit(a, 30000));
  std::string pb = PackPatch(b, edit(b, 70000));
  size_t alone = Zstd(pa), both = Zstd(pa + pb);
  INFO(pa.size() << " " << pb.size() << " " << alone << " " << both);
  CHECK(both - alone < pb.size() / 4);
}

TEST_CASE("relcopy rejects hostile streams", "[codec][relcopy]") {
  std::string base = "0123456789abcdef";
  auto decode = [&](const Stream& s, uint64_t size) { return Relcopy().DecodeFromPack(base, s.bytes, size); };
  SECTION("valid hand-made stream") {
    auto out = decode(Stream().Lit("xy").Copy(4, 2).Copy(2, -6).Copy(3, 0, 1), 11);
    REQUIRE(out.ok());
    CHECK(*out == "xy2345" "01" "678");
  }
  SECTION("copy beyond the base") {
    CHECK_FALSE(decode(Stream().Copy(17, 0), 17).ok());
    CHECK_FALSE(decode(Stream().Copy(4, 13), 4).ok());
    CHECK_FALSE(decode(Stream().Copy(1, -1), 1).ok());
    CHECK_FALSE(decode(Stream().Copy(1, INT64_MIN), 1).ok());
    CHECK_FALSE(decode(Stream().Copy(1, INT64_MAX), 1).ok());
  }
  SECTION("lengths beyond the target") {
    CHECK_FALSE(decode(Stream().Copy(8, 0), 7).ok());
    CHECK_FALSE(decode(Stream().Lit("abc"), 2).ok());
    CHECK_FALSE(decode(Stream().Lit("abc"), 4).ok());
    Stream huge;
    Varint(&huge.bytes, 1);
    Varint(&huge.bytes, UINT64_MAX);
    CHECK_FALSE(decode(huge, 10).ok());
  }
  SECTION("a huge claimed target allocates nothing") {
    Stream s;
    s.Copy(16, 0);
    for (int i = 1; i < 1000; ++i) s.Copy(16, -16);  // the whole base again
    CHECK(decode(s, 16000).ok());
    CHECK_FALSE(decode(s, uint64_t{1} << 40).ok());
  }
  SECTION("malformed instructions") {
    Stream empty_op;
    Varint(&empty_op.bytes, 0);
    CHECK_FALSE(decode(empty_op, 1).ok());
    Stream zero_lit;
    Varint(&zero_lit.bytes, 1);
    Varint(&zero_lit.bytes, 0);
    CHECK_FALSE(decode(zero_lit, 1).ok());
    Stream overlong;
    overlong.bytes += std::string(10, '\xff') + '\x01';
    CHECK_FALSE(decode(overlong, 1).ok());
    Stream truncated = Stream().Copy(4, 0);
    truncated.bytes.pop_back();
    CHECK_FALSE(decode(truncated, 4).ok());
    CHECK_FALSE(decode(Stream().Lit("ab").Lit("c"), 2).ok());  // trailing instruction
  }
  SECTION("empty patches") {
    CHECK(Relcopy().DecodeFromPack(base, "", 0).ok());  // the raw stream of an empty target
    CHECK_FALSE(Relcopy().DecodeFromPack(base, "", 1).ok());
    CHECK_FALSE(Relcopy().Decode(base, "", 0).ok());  // a standalone patch has a header
    CHECK_FALSE(Relcopy().Decode(base, std::string("\0", 1), 0).ok());  // standalone, truncated
    CHECK_FALSE(Relcopy().Decode(base, std::string("\x02", 1), 0).ok());
    CHECK_FALSE(Relcopy().DecodeFromPack(base, std::string("\x02", 1), 0).ok());
  }
  SECTION("standalone frame larger than the target allows") {
    std::string big(4096, 'a');
    std::string frame(ZSTD_compressBound(big.size()), '\0');
    frame.resize(ZSTD_compress(frame.data(), frame.size(), big.data(), big.size(), 3));
    std::string patch = std::string(9, '\0') + frame;
    auto out = Relcopy().Decode(base, patch, 100);
    REQUIRE_FALSE(out.ok());
    CHECK(std::string(out.status().message()).find("exceeds") != std::string::npos);
  }
}

// Found by codec_relcopy_fuzz: when one decoder read both forms by their
// first byte, a damaged form byte turned a standalone patch into a pack
// stream without checksum that made other bytes of the right length.
TEST_CASE("relcopy: each form is read only as itself", "[codec][relcopy]") {
  std::string base = Words(3000, 7), target = base;
  target.replace(500, 4, "EDIT");
  auto alone = Relcopy().Encode(base, target);
  REQUIRE(alone.ok());
  std::string pack = PackPatch(base, target);
  for (int x = 1; x < 256; ++x) {
    std::string damaged = *alone;
    damaged[0] = static_cast<char>(damaged[0] ^ x);
    auto out = Relcopy().Decode(base, damaged, target.size());
    INFO("form byte " << int(static_cast<uint8_t>(damaged[0])));
    CHECK_FALSE(out.ok());
  }
  auto as_pack = Relcopy().DecodeFromPack(base, *alone, target.size());
  REQUIRE_FALSE(as_pack.ok());
  auto as_alone = Relcopy().Decode(base, pack, target.size());
  REQUIRE_FALSE(as_alone.ok());
  CHECK(std::string(as_alone.status().message()).find("not a standalone patch") != std::string::npos);
  auto good = Relcopy().DecodeForm(base, pack, target.size(), /*packed=*/true);
  REQUIRE(good.ok());
  CHECK(*good == target);
}

}  // namespace
}  // namespace d4c
