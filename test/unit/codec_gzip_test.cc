// The gzip codec (id 5): deltas of inflated content, rebuilt bit for bit by a
// verified deflate recipe; refusal where no recipe reproduces the stream;
// hostile patches.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "d4c/codec.h"
#include "d4c/deflate.h"
#include "zip_fixture.h"

namespace d4c {
namespace {

// Changelog-like text: numbered entries of words.
std::string Text(int entries, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static const char* words[] = {"fix", "update", "upstream", "release", "security", "build", "package",
                                "debian", "patch", "new", "version", "the", "of", "for", "with", "policy"};
  std::string s;
  for (int e = entries; e > 0; --e) {
    s += "pkg (" + std::to_string(e) + ".0-1) unstable; urgency=medium\n\n";
    for (int l = 0; l < 3; ++l) {
      s += "  * ";
      for (int w = 0; w < 10; ++w) s += std::string(words[rng() % 16]) + " ";
      s += "\n";
    }
    s += "\n -- Maintainer <m@example.org>  day " + std::to_string(e) + "\n\n";
  }
  return s;
}

void Le(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// A gzip file around `stream` (the deflate stream of `raw`).
std::string Wrap(std::string_view raw, std::string_view stream, uint8_t xfl, std::string_view name = "") {
  std::string g = {'\x1f', '\x8b', 8, static_cast<char>(name.empty() ? 0 : 8), 0, 0, 0, 0,
                   static_cast<char>(xfl), 3};
  if (!name.empty()) {
    g.append(name);
    g.push_back('\0');
  }
  g.append(stream);
  Le(&g, deflate::Crc32(raw));
  Le(&g, static_cast<uint32_t>(raw.size()));
  return g;
}

std::string ZlibGz(std::string_view raw, int level) {
  auto s = deflate::Zlib(raw, {level, 8}, UINT32_MAX);
  REQUIRE(s.ok());
  return Wrap(raw, *s, level == 9 ? 2 : level == 1 ? 4 : 0);
}

// `cmd` (gzip -9n, pigz -n...) run on `raw`, through a temporary file.
std::string External(const std::string& cmd, std::string_view raw) {
  char path[] = "/tmp/d4c-gzip-test-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, raw.data(), raw.size()) == static_cast<ssize_t>(raw.size()));
  close(fd);
  std::string out_path = std::string(path) + ".gz";
  int rc = std::system((cmd + " -c " + path + " > " + out_path).c_str());
  std::remove(path);
  REQUIRE(rc == 0);
  std::ifstream in(out_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::remove(out_path.c_str());
  return ss.str();
}

bool Have(const char* tool) { return std::system((std::string("command -v ") + tool + " >/dev/null").c_str()) == 0; }

const DeltaCodec& Gz() { return GetCodec(CodecId::kGzip); }

// The recipe's engine byte of a patch (1 zlib, 2 GNU gzip).
int Engine(std::string_view p) {
  size_t pos = 2;
  auto skip_varint = [&] {
    while (static_cast<uint8_t>(p[pos]) & 0x80) ++pos;
    ++pos;
  };
  if (p[1] == 1) skip_varint();
  skip_varint();
  return static_cast<uint8_t>(p[pos]);
}

void RoundTrip(std::string_view base, std::string_view target) {
  for (bool pack : {false, true}) {
    INFO("pack form " << pack);
    auto patch = pack ? Gz().EncodeForPack(base, target) : Gz().Encode(base, target);
    REQUIRE(patch.ok());
    auto back = Gz().DecodeForm(base, *patch, target.size(), pack);
    REQUIRE(back.ok());
    CHECK(*back == target);
    // Each form is read only as itself.
    CHECK_FALSE(Gz().DecodeForm(base, *patch, target.size(), !pack).ok());
  }
}

TEST_CASE("gzip codec: zlib-made files at levels 1, 6, 9 round trip in a fraction of the plain patch", "[codec]") {
  int level = GENERATE(1, 6, 9);
  INFO("level " << level);
  std::string v1 = Text(400, 1);
  std::string v2 = Text(1, 7) + v1;  // a new changelog entry on top
  std::string base = ZlibGz(v1, level), target = ZlibGz(v2, level);
  RoundTrip(base, target);
  auto patch = Gz().Encode(base, target);
  REQUIRE(patch.ok());
  // zlib's stream; GNU gzip's algorithm (tried first for a `gzip -n` header)
  // makes the same stream for most plain text, and then is the recipe.
  CHECK((Engine(*patch) == 1 || Engine(*patch) == 2));
  // The inflated text differs by one entry: the patch is far below both the
  // target and what a codec of the compressed bytes makes.
  auto plain = GetCodec(CodecId::kXdelta3).Encode(base, target);
  REQUIRE(plain.ok());
  CHECK(patch->size() * 5 < plain->size());
  CHECK(patch->size() * 20 < target.size());
}

TEST_CASE("gzip codec: a header with a name and mtime is kept verbatim", "[codec]") {
  std::string v1 = Text(50, 2), v2 = Text(51, 2);
  auto s1 = deflate::Zlib(v1, {6, 9}, UINT32_MAX), s2 = deflate::Zlib(v2, {6, 9}, UINT32_MAX);
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  std::string base = Wrap(v1, *s1, 0, "changelog"), target = Wrap(v2, *s2, 0, "changelog.Debian");
  target[4] = 0x12;  // an mtime
  RoundTrip(base, target);
}

TEST_CASE("gzip codec: a base that is not gzip is used as it is", "[codec]") {
  std::string v1 = Text(200, 3), v2 = Text(1, 9) + v1;
  std::string target = ZlibGz(v2, 9);
  RoundTrip(v1, target);
  auto patch = Gz().Encode(v1, target);
  REQUIRE(patch.ok());
  CHECK((*patch)[1] == 0);  // base kind: as it is
  CHECK(patch->size() * 20 < target.size());
}

TEST_CASE("gzip codec: files made by gzip -9n (GNU gzip's algorithm)", "[codec]") {
  if (!Have("gzip")) FAIL("gzip not installed");
  bool gnu = deflate::GnuGzip("probe", 9).ok();
  // Sizes on both sides of gzip's 64 KiB block heuristics.
  int entries = GENERATE(20, 3000);
  INFO("entries " << entries << ", GnuGzip implemented: " << gnu);
  std::string v1 = Text(entries, 4), v2 = Text(entries + 1, 4);
  std::string base = External("gzip -9n", v1), target = External("gzip -9n", v2);
  auto g = deflate::SplitGzip(target, deflate::kMaxRaw);
  REQUIRE(g.ok());
  REQUIRE(g->raw == v2);
  bool zlib_can = false;
  for (int mem : {8, 9})
    for (int l = 1; l <= 9; ++l) zlib_can = zlib_can || deflate::ZlibReproduces(v2, {l, mem}, g->stream);
  auto patch = Gz().Encode(base, target);
  if (gnu) {
    // The engine lands: every gzip -9n file has a recipe, GNU gzip's first.
    REQUIRE(patch.ok());
    CHECK(Engine(*patch) == 2);
    RoundTrip(base, target);
  } else if (zlib_can) {
    REQUIRE(patch.ok());
    CHECK(Engine(*patch) == 1);
    RoundTrip(base, target);
  } else {
    // No engine reproduces it: the codec refuses, auto keeps the plain codecs.
    REQUIRE_FALSE(patch.ok());
    CHECK(patch.status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("gzip codec: streams no recipe reproduces are refused", "[codec]") {
  std::string v1 = Text(100, 5), v2 = Text(101, 5);
  std::string base = ZlibGz(v1, 6);
  SECTION("stored blocks (level 0)") {
    REQUIRE(v2.size() < 65536);
    std::string stream = {1, static_cast<char>(v2.size() & 0xff), static_cast<char>(v2.size() >> 8),
                          static_cast<char>(~v2.size() & 0xff), static_cast<char>((~v2.size() >> 8) & 0xff)};
    stream += v2;
    std::string target = Wrap(v2, stream, 0);
    REQUIRE(deflate::SplitGzip(target, deflate::kMaxRaw).ok());
    auto p = Gz().Encode(base, target);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(p.status().message()).find("no known compressor") != std::string::npos);
  }
  SECTION("pigz's independent blocks") {
    if (!Have("pigz")) FAIL("pigz not installed");
    std::string big = Text(8000, 6);  // > 128 KiB: several pigz blocks joined by sync flushes
    auto p = Gz().Encode(base, External("pigz -n -p 2", big));
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  }
  SECTION("not gzip, two members, trailing bytes, a bad CRC") {
    std::string target = ZlibGz(v2, 6);
    for (const std::string& t : {v2, target + target, target + "x", target.substr(0, target.size() - 1)}) {
      auto p = Gz().Encode(base, t);
      REQUIRE_FALSE(p.ok());
      CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
    }
    std::string bad_crc = target;
    bad_crc[bad_crc.size() - 8] ^= 1;
    CHECK(Gz().Encode(base, bad_crc).status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("gzip codec: corrupt and hostile patches fail cleanly", "[codec]") {
  std::string v1 = Text(60, 8), v2 = Text(61, 8);
  std::string base = ZlibGz(v1, 9), target = ZlibGz(v2, 9);
  for (bool pack : {false, true}) {
    INFO("pack form " << pack);
    auto patch = pack ? Gz().EncodeForPack(base, target) : Gz().Encode(base, target);
    REQUIRE(patch.ok());
    // Every truncation fails; every one-byte change fails or gives target_size bytes.
    for (size_t n = 0; n < patch->size(); ++n) CHECK_FALSE(Gz().DecodeForm(base, patch->substr(0, n), target.size(), pack).ok());
    for (size_t i = 0; i < std::min<size_t>(patch->size(), 64); ++i) {
      std::string p = *patch;
      p[i] ^= 0x41;
      auto out = Gz().DecodeForm(base, p, target.size(), pack);
      if (out.ok()) CHECK(out->size() == target.size());
    }
    // A wrong base and a wrong size.
    CHECK_FALSE(Gz().DecodeForm(ZlibGz(Text(60, 9), 9), *patch, target.size(), pack).ok());
    CHECK_FALSE(Gz().DecodeForm(v1, *patch, target.size(), pack).ok());
    CHECK_FALSE(Gz().DecodeForm(base, *patch, target.size() + 1, pack).ok());
  }
  // A header claiming a huge inflated size is refused before anything is allocated.
  std::string hostile = {1, 0};
  hostile += std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8);  // raw_size 2^56-1
  hostile += std::string{1, 9, 8, 10};
  hostile += target.substr(0, 10);
  hostile += std::string{1};
  auto out = Gz().Decode(base, hostile, target.size());
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(out.status().message()).find("out of range") != std::string::npos);
  // An unknown engine and inner codec.
  auto patch = Gz().Encode(base, target);
  REQUIRE(patch.ok());
  CHECK_FALSE(Gz().Decode(base, *patch, 0).ok());
}

TEST_CASE("gzip codec: name and parse", "[codec]") {
  CHECK(std::string(CodecName(CodecId::kGzip)) == "gzip");
  auto id = ParseCodecName("gzip");
  REQUIRE(id.ok());
  CHECK(*id == CodecId::kGzip);
  CHECK(static_cast<int>(CodecId::kGzip) == 5);  // stored on disk
}


// ----------------------------------------------------------- zip archives

using testing::MakeZip;
using testing::ZipEntry;

// A jar-like archive: `n` class-like members of text, each with the release
// `version` in its middle (as a rebuilt jar's classes all change a little).
std::vector<ZipEntry> Classes(int n, uint64_t version) {
  std::string v = "version " + std::to_string(version) + "\n";
  std::vector<ZipEntry> out = {{"META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nImplementation-" + v}};
  for (int i = 0; i < n; ++i)
    out.push_back({"org/example/C" + std::to_string(i) + ".class", Text(10 + i, 100 + i) + v + Text(10, 200 + i)});
  return out;
}

// The form byte of a patch.
int Form(std::string_view p) { return static_cast<uint8_t>(p[0]); }

TEST_CASE("gzip codec: a jar's deflated members are diffed inflated and rebuilt bit for bit", "[codec]") {
  std::vector<ZipEntry> v1 = Classes(12, 1), v2 = Classes(12, 2);
  v2[3].content = Text(1, 9) + v2[3].content;  // a changed class
  v2.erase(v2.begin() + 5);                      // a removed one
  v2.push_back({"org/example/New.class", Text(15, 77)});
  v2.push_back({"org/example/data.bin", Text(3, 5), 0});  // stored: stays as it is
  std::string base = MakeZip(v1), target = MakeZip(v2, "a comment");
  RoundTrip(base, target);
  auto patch = Gz().Encode(base, target);
  REQUIRE(patch.ok());
  CHECK(Form(*patch) == 3);
  // Each deflate stream changes wholesale with its member; inflated, only the
  // edits are new: far below a delta of the compressed bytes.
  auto plain = GetCodec(CodecId::kXdelta3).Encode(base, target);
  REQUIRE(plain.ok());
  INFO("zip form " << patch->size() << " B, xdelta3 " << plain->size() << " B");
  CHECK(patch->size() * 4 < plain->size());
  SECTION("the base as it is when it is no zip archive") {
    std::string not_zip = "not a zip: " + v1[3].content;
    RoundTrip(not_zip, target);
  }
}

// An update leaves most members of a jar as they were: their streams are
// copied from the base's members with the same content (base kind 2), not
// compressed again, and rebuilt bit for bit.
TEST_CASE("gzip codec: members an update leaves as they were take the base's streams", "[codec]") {
  std::vector<ZipEntry> v1 = Classes(12, 1), v2 = v1;
  v2[3].content += "changed";
  v2[7].content = Text(4, 300);
  v2.push_back({"org/example/New.class", Text(15, 77)});
  v2.push_back({"org/example/Copy.class", v1[5].content});  // another member's content
  v1[9].level = 9;  // unchanged content, the target's stream is the recipe's (level 6), not the base's
  v2[10].level = 1;  // unchanged content, base and target at level 1: not the recipe's, but the same stream
  v1[10].level = 1;
  std::string base = MakeZip(v1), target = MakeZip(v2);
  SECTION("the base's streams as they are") {
    v1[9].level = 6;
    base = MakeZip(v1);
    RoundTrip(base, target);
    auto patch = Gz().Encode(base, target);
    REQUIRE(patch.ok());
    CHECK(static_cast<uint8_t>((*patch)[1]) == 2);  // base kind 2
    SECTION("a base whose member has that content in another stream is refused") {
      std::vector<ZipEntry> other = v1;
      other[4].level = 1;  // same content, a shorter stream than the target's
      auto out = Gz().Decode(MakeZip(other), *patch, target.size());
      REQUIRE_FALSE(out.ok());
      CHECK(out.status().code() == absl::StatusCode::kDataLoss);  // its local header differs: the inner patch's check
    }
  }
  SECTION("a member with the base's content in another stream: none are taken") {
    RoundTrip(base, target);
    auto patch = Gz().Encode(base, target);
    REQUIRE(patch.ok());
    CHECK(static_cast<uint8_t>((*patch)[1]) == 1);  // base kind 1: every member compressed again
  }
}

TEST_CASE("gzip codec: zip members the archive's recipe does not reproduce stay compressed", "[codec]") {
  std::vector<ZipEntry> v1 = Classes(6, 1), v2 = Classes(6, 2);
  v2[2].level = 1;  // one member made at another level than the rest (6, the largest member's)
  v2[2].content += "x";
  std::string base = MakeZip(v1), target = MakeZip(v2);
  RoundTrip(base, target);
  auto members = deflate::DeflatedZipMembers(target);
  REQUIRE(members.ok());
  CHECK(members->size() == v2.size());
}

TEST_CASE("gzip codec: zip archives it cannot rebuild are refused", "[codec]") {
  std::string base = MakeZip(Classes(4, 1));
  auto refused = [&](const std::string& target, const char* why) {
    INFO(why);
    auto p = Gz().Encode(base, target);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  };
  std::vector<ZipEntry> stored = Classes(4, 2);
  for (ZipEntry& e : stored) e.level = 0;
  refused(MakeZip(stored), "only stored members");
  std::vector<ZipEntry> encrypted = Classes(4, 2);
  for (ZipEntry& e : encrypted) e.flags = 1;
  refused(MakeZip(encrypted), "only encrypted members");
  std::string zip = MakeZip(Classes(4, 2));
  refused(zip.substr(0, zip.size() - 5), "a truncated end record");
  refused(zip + "trailing", "bytes after the end record");
  refused(std::string("PK\3\4") + std::string(100, 'x'), "a local header signature and nothing else");
}

TEST_CASE("gzip codec: corrupt and hostile zip-form patches fail cleanly", "[codec]") {
  std::vector<ZipEntry> v2 = Classes(5, 2);
  v2[1].content += "changed";
  std::string base = MakeZip(Classes(5, 1)), target = MakeZip(v2);
  for (bool pack : {false, true}) {
    INFO("pack form " << pack);
    auto patch = pack ? Gz().EncodeForPack(base, target) : Gz().Encode(base, target);
    REQUIRE(patch.ok());
    for (size_t n = 0; n < patch->size(); ++n)
      CHECK_FALSE(Gz().DecodeForm(base, patch->substr(0, n), target.size(), pack).ok());
    for (size_t i = 0; i < std::min<size_t>(patch->size(), 96); ++i) {
      std::string p = *patch;
      p[i] ^= 0x41;
      auto out = Gz().DecodeForm(base, p, target.size(), pack);
      if (out.ok()) CHECK(out->size() == target.size());
    }
    CHECK_FALSE(Gz().DecodeForm(base, *patch, target.size() + 1, pack).ok());
    std::vector<ZipEntry> other = Classes(5, 1);
    for (ZipEntry& e : other) e.content = Text(30, e.content.size());
    CHECK_FALSE(Gz().DecodeForm(MakeZip(other), *patch, target.size(), pack).ok());
  }
  // Sizes out of range are refused before anything is allocated.
  std::string hostile = {3, 0};
  hostile += std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8);  // expanded size 2^56-1
  hostile += std::string{6, 8, 1, 0, 0, 0, 1};
  auto out = Gz().Decode(base, hostile, target.size());
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(out.status().message()).find("out of range") != std::string::npos);
  std::string many = {3, 0, 10, 6, 8};
  many += std::string("\xff\xff\xff\x0f", 4);  // a member count no patch this short can hold
  out = Gz().Decode(base, many, target.size());
  REQUIRE_FALSE(out.ok());
  CHECK(std::string(out.status().message()).find("member count") != std::string::npos);
}

TEST_CASE("zip archives: deflated members found through the central directory and expanded", "[codec]") {
  std::vector<ZipEntry> entries = Classes(3, 1);
  entries.push_back({"stored.txt", "kept as it is", 0});
  entries.push_back({"secret.class", Text(3, 1), 6, 1});  // encrypted: not listed
  std::string zip = MakeZip(entries, "comment");
  auto members = deflate::DeflatedZipMembers(zip);
  REQUIRE(members.ok());
  REQUIRE(members->size() == 4);  // the manifest and three classes
  for (size_t i = 0; i < members->size(); ++i) {
    const deflate::ZipMember& m = (*members)[i];
    CHECK(m.raw == entries[i].content.size());
    auto raw = deflate::InflateExact(std::string_view(zip).substr(m.offset, m.stored), m.raw);
    REQUIRE(raw.ok());
    CHECK(*raw == entries[i].content);
  }
  auto expanded = deflate::ExpandZip(zip, deflate::kMaxRaw);
  REQUIRE(expanded.ok());
  for (int i = 0; i < 4; ++i) CHECK(expanded->find(entries[i].content) != std::string::npos);
  CHECK(expanded->find("kept as it is") != std::string::npos);
  CHECK(deflate::ExpandZip(zip, expanded->size() - 1).status().code() == absl::StatusCode::kResourceExhausted);
  SECTION("what is not such an archive") {
    for (const std::string& bad : {zip.substr(0, zip.size() - 1), zip + "x", zip.substr(1), std::string("PK\3\4")}) {
      auto m = deflate::DeflatedZipMembers(bad);
      REQUIRE_FALSE(m.ok());
      CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
    }
    std::string wrong_offset = zip;
    size_t end = zip.size() - 22 - 7;  // the end record, before its 7-byte comment
    wrong_offset[end + 16] ^= 1;
    CHECK_FALSE(deflate::DeflatedZipMembers(wrong_offset).ok());
  }
}

}  // namespace
}  // namespace d4c
