// The size rules behind `auto` (delta_common.cc): the novelty measure and
// the codec each kind of big file ends up with.
#include <catch2/catch.hpp>

#include <random>

#include "d4c/codec.h"
#include <string>

#include "d4c/convert.h"
#include "ops/delta_internal.h"

using namespace d4c;
using namespace d4c::delta_internal;

namespace {

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Machine-code-like churn: 4 bytes rewritten in every 48 (as when addresses
// shift), so every 64-byte window of the target is new.
std::string Relocate(std::string s) {
  for (size_t i = 0; i + 4 <= s.size(); i += 48)
    for (size_t j = 0; j < 4; ++j) s[i + j] = static_cast<char>(s[i + j] + 1);
  return s;
}

// Text with a few edits.
std::string Text(size_t n, uint64_t seed) {
  static const char* words[] = {"alpha ", "beta ", "gamma\n", "const ", "return ", "value ", "index;\n"};
  std::mt19937_64 rng(seed);
  std::string s;
  while (s.size() < n) s += words[rng() % 7] + std::to_string(rng() % 1000);
  s.resize(n);
  return s;
}

BlobResult Auto(const std::string& base, const std::string& target, DiffOptions o = {}) {
  std::vector<Base> bases{{Sha256(base), base, false}};
  auto r = EncodeFile(target, bases, o);
  REQUIRE(r.ok());
  return *r;
}

}  // namespace

TEST_CASE("novelty: share of the target's windows the base lacks", "[delta]") {
  std::string base = RandomBytes(1 << 20, 1);
  Novelty same = MeasureNovelty(base, base);
  CHECK(same.missing == 0);
  CHECK(same.anchors > (1 << 20) / 64);  // ~1 per 32 bytes
  CHECK(same.anchors < (1 << 20) / 16);

  Novelty unrelated = MeasureNovelty(base, RandomBytes(1 << 20, 2));
  CHECK(unrelated.missing * 100 >= unrelated.anchors * 95);  // a filter: a few pass for known

  // One 4 KiB region replaced: the windows overlapping it, ~4 KiB / 32 of them.
  std::string edited = base;
  edited.replace(500000, 4096, RandomBytes(4096, 3));
  Novelty local = MeasureNovelty(base, edited);
  CHECK(local.missing > 4096 / 64);
  CHECK(local.missing < (4096 + 2 * 64) / 8);

  // Moved blocks are not new.
  Novelty moved = MeasureNovelty(base, base.substr(600000) + base.substr(0, 600000));
  CHECK(moved.missing <= 2);

  // The hash runs in four lanes over quarters of the input: shifting the
  // content by a byte moves every quarter's boundary, and must change nothing.
  for (size_t cut : {size_t{1}, size_t{3}, size_t{1000}}) {
    Novelty shifted = MeasureNovelty(base, std::string(cut, 'x') + base + std::string(cut, 'y'));
    CHECK(shifted.missing <= 2);
    CHECK(shifted.anchors >= same.anchors);
    CHECK(shifted.anchors <= same.anchors + 2);
    CHECK(MeasureNovelty(base.substr(cut), base).missing <= 2 + cut / 16);  // the cut-off bytes are new
  }

  Novelty churned = MeasureNovelty(base, Relocate(base));
  CHECK(churned.missing * 10 >= churned.anchors * 9);

  CHECK(MeasureNovelty(base, base.substr(0, 63)).anchors == 0);  // shorter than a window
  Novelty from_nothing = MeasureNovelty("", base);
  CHECK(from_nothing.missing == from_nothing.anchors);
}

TEST_CASE("auto: big files churned everywhere go to bsdiff, near-identical ones to relcopy", "[delta]") {
  std::string base = RandomBytes(3 << 19, 10);  // 1.5 MiB: zstd is still tried
  BlobResult churned = Auto(base, Relocate(base));
  CHECK(churned.recipe.kind == Recipe::Kind::kDelta);
  CHECK(churned.recipe.codec == CodecId::kBsdiff);

  std::string text = Text(2 << 20, 11), edited = text;
  edited.replace(1000, 5, "EDIT!");
  edited.insert(1500000, "inserted words ");
  BlobResult near = Auto(text, edited);
  // Near-identical and packed: relcopy goes first and its tiny patch spares
  // the other codecs.
  CHECK(near.recipe.codec == CodecId::kRelcopy);
  CHECK(near.recipe.packed);

  // Without packs relcopy is not tried: xdelta3 takes near-identical files.
  DiffOptions no_packs;
  no_packs.pack_small_blobs = false;
  CHECK(Auto(text, edited, no_packs).recipe.codec == CodecId::kXdelta3);

  // A fixed codec is never second-guessed.
  DiffOptions forced;
  forced.codec = CodecId::kXdelta3;
  CHECK(Auto(base, Relocate(base), forced).recipe.codec == CodecId::kXdelta3);
}

// When much of a big file is new, xdelta3 encodes its standalone form first;
// the result must be what trying the pack form first gives: the pack form
// when it fits a member, else the standalone one.
TEST_CASE("auto: xdelta3's form does not depend on which is tried first", "[delta]") {
  DiffOptions only_xdelta3;
  only_xdelta3.time_budget_ms = 1;  // every other codec is predicted too slow
  const DeltaCodec& x3 = GetCodec(CodecId::kXdelta3);
  std::string base = RandomBytes(2 << 20, 20);
  // 300 KB new to the base (estimated well past a pack member) but repeating
  // within itself, so that the patch fits a member; then 400 KB that do not.
  std::string thrice = Text(100000, 21) + Text(100000, 21) + Text(100000, 21);
  for (const std::string& fresh : {thrice, RandomBytes(400000, 22)}) {
    std::string target = base;
    target.replace(700000, fresh.size(), fresh);
    Novelty n = MeasureNovelty(base, target);
    REQUIRE(n.missing * 32 > 4 * kPackMemberMax);  // the standalone-first path
    auto member = x3.EncodeForPack(base, target);
    auto alone = x3.Encode(base, target);
    REQUIRE(member.ok());
    REQUIRE(alone.ok());
    bool fits = member->size() <= kPackMemberMax;
    BlobResult r = Auto(base, target, only_xdelta3);
    INFO("pack form " << member->size() << ", standalone " << alone->size());
    REQUIRE(r.recipe.codec == CodecId::kXdelta3);
    CHECK(r.recipe.packed == fits);
    CHECK(r.blob == (fits ? *member : *alone));
  }
}
