// Round trips and hostile-input behaviour of the delta codecs.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "d4c/codec.h"

namespace d4c {
namespace {

constexpr CodecId kAllCodecs[] = {CodecId::kZstd, CodecId::kXdelta3, CodecId::kBsdiff, CodecId::kRelcopy,
                                   CodecId::kLzma};

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) s[i + j] = static_cast<char>(v >> (8 * j));
  }
  return s;
}

// Compressible, text-like bytes from a 2048-word vocabulary. (A vocabulary of
// a handful of words is pathological for xdelta3, whose hash keeps one
// candidate per checksum, and unlike real files.)
std::string Words(size_t n, uint64_t seed) {
  static const std::vector<std::string> vocab = [] {
    std::mt19937_64 rng(99);
    std::vector<std::string> v;
    for (int i = 0; i < 2048; ++i) {
      std::string w(2 + rng() % 9, 'a');
      for (char& c : w) c = static_cast<char>('a' + rng() % 26);
      v.push_back(w + " \n/\t"[rng() % 4]);
    }
    return v;
  }();
  std::mt19937_64 rng(seed);
  std::string s;
  while (s.size() < n) s += vocab[rng() % vocab.size()];
  s.resize(n);
  return s;
}

// Overwrites `count` short runs at pseudo-random places.
std::string Scatter(std::string s, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count && !s.empty(); ++i) {
    size_t pos = rng() % s.size();
    size_t len = std::min<size_t>(1 + rng() % 16, s.size() - pos);
    for (size_t j = 0; j < len; ++j) s[pos + j] = static_cast<char>(rng());
  }
  return s;
}

std::string Encode(CodecId id, std::string_view base, std::string_view target) {
  auto patch = GetCodec(id).Encode(base, target);
  REQUIRE(patch.ok());
  return *patch;
}

// Encodes, decodes, compares; returns the patch size.
size_t RoundTrip(CodecId id, std::string_view base, std::string_view target) {
  std::string patch = Encode(id, base, target);
  auto out = GetCodec(id).Decode(base, patch, target.size());
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  REQUIRE(out->size() == target.size());
  REQUIRE(*out == target);
  return patch.size();
}

// A decode that is not an error must be exactly the target.
void ExpectErrorOrExact(CodecId id, std::string_view base, std::string_view patch, std::string_view target,
                        uint64_t target_size) {
  auto out = GetCodec(id).Decode(base, patch, target_size);
  if (out.ok()) {
    REQUIRE(target_size == target.size());
    REQUIRE(*out == target);
  }
}

TEST_CASE("codec names parse and print", "[codec]") {
  for (CodecId id : kAllCodecs) {
    auto parsed = ParseCodecName(CodecName(id));
    REQUIRE(parsed.ok());
    CHECK(*parsed == id);
    CHECK(GetCodec(id).id() == id);
    CHECK(&GetCodec(id) == &GetCodec(id));
  }
  auto bad = ParseCodecName("xz");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  std::string msg(bad.status().message());
  CHECK(msg.find("'xz'") != std::string::npos);
  CHECK(msg.find("zstd, xdelta3, bsdiff, relcopy, gzip, lzma") != std::string::npos);
  CHECK_FALSE(ParseCodecName("").ok());
  CHECK_FALSE(ParseCodecName("ZSTD").ok());
}

TEST_CASE("LooksText: no NUL and under 1% control bytes in the first 64 KiB", "[codec]") {
  CHECK(LooksText("var a = 1;\n\tb();\r\n\f\v\x1b[0m"));
  CHECK(LooksText("caf\xc3\xa9 \xe2\x80\x94 UTF-8 and Latin-1 \xe9 bytes count as text"));
  CHECK_FALSE(LooksText(""));
  CHECK_FALSE(LooksText(std::string("text with a \0 NUL", 18)));
  CHECK_FALSE(LooksText("\x7f" "ELF"));
  // 99 text bytes per control byte is not text; 101 is.
  std::string edge(99, 'x');
  edge += '\x01';
  CHECK_FALSE(LooksText(edge));
  CHECK(LooksText(std::string(100, 'x') + '\x01'));
  // Only the sample is read: a NUL after it does not count.
  std::string long_text(kTextSample, 'y');
  CHECK(LooksText(long_text + '\0'));
  CHECK_FALSE(LooksText(long_text.substr(1) + '\0'));
}

TEST_CASE("unknown codec id fails when used, does not crash", "[codec]") {
  const DeltaCodec& c = GetCodec(static_cast<CodecId>(42));
  CHECK_FALSE(c.Encode("a", "b").ok());
  CHECK_FALSE(c.Decode("a", "b", 1).ok());
  CHECK(std::string(CodecName(static_cast<CodecId>(42))) == "unknown");
}

TEST_CASE("round trips on edge cases", "[codec]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  INFO("codec " << CodecName(id));
  std::string base = Words(64 << 10, 1);

  SECTION("empty base and target") {
    RoundTrip(id, "", "");
    RoundTrip(id, std::string_view(), std::string_view());  // null data()
  }
  SECTION("empty base") { RoundTrip(id, "", base); }
  SECTION("empty target") { RoundTrip(id, base, ""); }
  SECTION("one byte each") {
    RoundTrip(id, "a", "b");
    RoundTrip(id, "a", "a");
  }
  SECTION("identical") {
    CHECK(RoundTrip(id, base, std::string(base)) < 200);
    CHECK(RoundTrip(id, base, base) < 200);  // same memory for both
  }
  SECTION("small edits") {
    std::string t = base;
    t[100] ^= 1;
    t[30000] = 'X';
    t[t.size() - 1] = '!';
    CHECK(RoundTrip(id, base, t) < 300);
  }
  SECTION("inserts") {
    std::string ins = "INSERTED-BYTES-0123456789";
    CHECK(RoundTrip(id, base, ins + base) < 300);
    CHECK(RoundTrip(id, base, base.substr(0, 40000) + ins + base.substr(40000)) < 300);
    CHECK(RoundTrip(id, base, base + ins) < 300);
  }
  SECTION("deletes") {
    CHECK(RoundTrip(id, base, base.substr(1000)) < 300);
    CHECK(RoundTrip(id, base, base.substr(0, 20000) + base.substr(21000)) < 300);
    CHECK(RoundTrip(id, base, base.substr(0, base.size() - 1000)) < 300);
  }
  SECTION("tiny bases, patterns sorting before or after every suffix") {
    // bsdiff's search starts in the suffix-array bucket of the first two
    // bytes; these hit its edges (no bucket, first and last bucket, the
    // one-byte suffix at the end of the base).
    RoundTrip(id, "ab", "ab");
    RoundTrip(id, "ab", "ba");
    RoundTrip(id, "ab", "b");
    RoundTrip(id, std::string("\x01\x02\x03", 3), std::string("\x00\x00\x01\x02\x03\xff\xff\x03", 8));
    std::string skewed = std::string(4096, '\0') + "middle" + std::string(4096, '\xff');
    CHECK(RoundTrip(id, skewed, "\xff" + skewed + std::string(1, '\0')) < 200);
  }
  SECTION("binary bytes including zero runs") {
    std::string b = RandomBytes(50000, 2) + std::string(30000, '\0') + RandomBytes(50000, 3);
    std::string t = Scatter(b, 10, 4);
    CHECK(RoundTrip(id, b, t) < 2000);
  }
}

TEST_CASE("round trips on 1 MiB inputs", "[codec]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  INFO("codec " << CodecName(id));
  std::string base = RandomBytes(1 << 20, 10);

  SECTION("unrelated random target") {
    // Incompressible: the patch may not grow much beyond the target.
    CHECK(RoundTrip(id, base, RandomBytes(1 << 20, 11)) < (1 << 20) + (1 << 14));
  }
  SECTION("random base, scattered edits") { CHECK(RoundTrip(id, base, Scatter(base, 50, 12)) < 8000); }
  SECTION("shifted block") {
    // The last 128 KiB moved to the front: a far match for every codec.
    size_t cut = base.size() - (128 << 10);
    std::string t = base.substr(cut) + base.substr(0, cut);
    CHECK(RoundTrip(id, base, t) < 500);
  }
}

// Inputs that once made the bsdiff scan quadratic: both must stay fast.
TEST_CASE("round trips on highly repetitive inputs", "[codec]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  INFO("codec " << CodecName(id));
  SECTION("short period with inserts") {
    std::string base;
    while (base.size() < (2 << 20)) base += "abcdefg";
    std::string target = base;
    for (size_t pos : {100u, 300000u, 1000000u, 1500001u}) target.insert(pos, "X");
    CHECK(RoundTrip(id, base, target) < 2000);
  }
  SECTION("near-identical long repeats") {
    std::string block = RandomBytes(16 << 10, 60);
    std::string base, target;
    for (int i = 0; i < 128; ++i) {
      base += Scatter(block, 3, 100 + i);
      target += Scatter(block, 3, 1000 + i);
    }
    CHECK(RoundTrip(id, base, target) < 16000);
  }
}

TEST_CASE("round trip on 20 MiB with scattered edits", "[codec][large]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  INFO("codec " << CodecName(id));
  std::string base = RandomBytes(10 << 20, 20) + Words(10 << 20, 21);
  std::string target = Scatter(base, 200, 22);
  // Content from the very start of the base reappears at the very end of the
  // target: a source window smaller than the base would miss it.
  target += base.substr(0, 256 << 10);
  size_t patch = RoundTrip(id, base, target);
  CHECK(patch < 64000);
}

// Runs tasks on threads of its own; lends `lend` workers to Borrow.
class ThreadHelpers final : public Helpers {
 public:
  explicit ThreadHelpers(int lend) : lend_(lend) {}
  void Run(const std::vector<std::function<void()>>& tasks) override {
    parallel_tasks_ += tasks.size() > 1 ? tasks.size() : 0;
    std::vector<std::thread> threads;
    for (const auto& t : tasks) threads.emplace_back(t);
    for (auto& t : threads) t.join();
  }
  int Borrow(int max) override {
    int n = std::min(max, lend_);
    lend_ -= n;
    borrowed_ += n;
    return n;
  }
  void Release(int n) override { lend_ += n; }
  int borrowed() const { return borrowed_; }
  size_t parallel_tasks() const { return parallel_tasks_; }

 private:
  int lend_;
  int borrowed_ = 0;
  size_t parallel_tasks_ = 0;
};

// bsdiff splits a big target into segments scanned on their own and
// compresses its streams side by side: the patch must not depend on how many
// threads did that, and must still find matches across segments.
TEST_CASE("bsdiff: same patch with and without helper threads", "[codec][large]") {
  // 10 MiB: three scan segments.
  std::string base = RandomBytes(10 << 20, 70);
  std::string target = base;
  for (size_t i = 0; i + 4 <= target.size(); i += 4096) target[i] = static_cast<char>(target[i] + 1);
  // content crossing segment boundaries moved far away
  std::string moved = target.substr((4 << 20) - 1000, 2000);
  target.replace(100, moved.size(), moved);
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  auto serial = bsdiff.Encode(base, target);
  REQUIRE(serial.ok());
  ThreadHelpers helpers(3);
  auto parallel = bsdiff.EncodeParallel(base, target, helpers);
  REQUIRE(parallel.ok());
  CHECK(helpers.borrowed() + helpers.parallel_tasks() > 0);
  CHECK(*parallel == *serial);
  CHECK(serial->size() < 100000);
  auto out = bsdiff.Decode(base, *serial, target.size());
  REQUIRE(out.ok());
  CHECK(*out == target);
}

// auto passes the best patch's size as a limit; giving up early must never
// change a patch that comes in under it.
// Text and binary targets: bsdiff's floor is tighter on text.
TEST_CASE("EncodeWithin gives up only on patches clearly over the limit", "[codec]") {
  bool text = GENERATE(true, false);
  std::string base = text ? Words(200000, 61) : RandomBytes(200000, 64);
  std::string target = text ? Scatter(Words(200000, 62), 20, 63) : Scatter(base, 300, 65);
  REQUIRE(LooksText(target) == text);
  for (CodecId id : {CodecId::kBsdiff, CodecId::kZstd, CodecId::kXdelta3, CodecId::kRelcopy, CodecId::kLzma}) {
    INFO(CodecName(id) << (text ? " text" : " binary"));
    const DeltaCodec& codec = GetCodec(id);
    std::string full = Encode(id, base, target);
    auto roomy = codec.EncodeWithin(base, target, NoHelpers(), full.size());
    REQUIRE(roomy.ok());
    CHECK(*roomy == full);
    auto tight = codec.EncodeWithin(base, target, NoHelpers(), full.size() / 10);
    if (id == CodecId::kBsdiff || id == CodecId::kLzma) {
      REQUIRE_FALSE(tight.ok());
      CHECK(tight.status().code() == absl::StatusCode::kOutOfRange);
    } else if (tight.ok()) {
      CHECK(*tight == full);  // codecs without an early exit just encode
    }
  }
}

TEST_CASE("encoding is deterministic", "[codec]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  std::string base = Words(100000, 30);
  std::string target = Scatter(base, 20, 31);
  CHECK(Encode(id, base, target) == Encode(id, base, target));
}

TEST_CASE("decoding bad input fails cleanly", "[codec]") {
  CodecId id = GENERATE(from_range(std::begin(kAllCodecs), std::end(kAllCodecs)));
  INFO("codec " << CodecName(id));
  const DeltaCodec& codec = GetCodec(id);
  std::string base = Words(256 << 10, 40);
  std::string target = Scatter(base, 30, 41) + "tail";
  std::string patch = Encode(id, base, target);

  SECTION("wrong base of the same size") {
    CHECK_FALSE(codec.Decode(Scatter(base, 30, 42), patch, target.size()).ok());
  }
  SECTION("wrong base of another size") {
    CHECK_FALSE(codec.Decode(base.substr(0, 1000), patch, target.size()).ok());
    CHECK_FALSE(codec.Decode("", patch, target.size()).ok());
    CHECK_FALSE(codec.Decode(Words(1 << 20, 43), patch, target.size()).ok());
  }
  SECTION("wrong target size") {
    CHECK_FALSE(codec.Decode(base, patch, target.size() - 1).ok());
    CHECK_FALSE(codec.Decode(base, patch, target.size() + 1).ok());
    CHECK_FALSE(codec.Decode(base, patch, 0).ok());
    // Must fail on the size mismatch, not try to allocate a terabyte.
    CHECK_FALSE(codec.Decode(base, patch, uint64_t{1} << 40).ok());
  }
  SECTION("truncated patch") {
    for (size_t len : {size_t{0}, size_t{1}, size_t{4}, size_t{12}, patch.size() / 2, patch.size() - 1}) {
      INFO("length " << len);
      CHECK_FALSE(codec.Decode(base, patch.substr(0, len), target.size()).ok());
    }
  }
  SECTION("trailing garbage") { CHECK_FALSE(codec.Decode(base, patch + "x", target.size()).ok()); }
  SECTION("bit flips") {
    int errors = 0, flips = 0;
    for (size_t i = 0; i < patch.size(); ++i) {
      for (int bit : {0, 3, 7}) {
        std::string p = patch;
        p[i] = static_cast<char>(p[i] ^ (1 << bit));
        auto out = codec.Decode(base, p, target.size());
        ++flips;
        if (!out.ok()) {
          ++errors;
        } else {
          // A flip in a bit the format ignores may decode; it must not change the bytes.
          REQUIRE(*out == target);
        }
      }
    }
    INFO(errors << " of " << flips << " flips detected");
    CHECK(errors * 100 >= flips * 95);
  }
  SECTION("random garbage") {
    for (uint64_t seed = 0; seed < 50; ++seed) {
      std::string junk = RandomBytes(1 + seed * 37, seed);
      ExpectErrorOrExact(id, base, junk, target, target.size());
      ExpectErrorOrExact(id, "", junk, target, 1000);
    }
  }
}

TEST_CASE("patches are not interchangeable between codecs", "[codec]") {
  std::string base = Words(10000, 50);
  std::string target = Scatter(base, 5, 51);
  for (CodecId enc : kAllCodecs) {
    std::string patch = Encode(enc, base, target);
    for (CodecId dec : kAllCodecs) {
      if (dec == enc) continue;
      INFO(CodecName(enc) << " patch decoded by " << CodecName(dec));
      ExpectErrorOrExact(dec, base, patch, target, target.size());
    }
  }
}

}  // namespace
}  // namespace d4c
