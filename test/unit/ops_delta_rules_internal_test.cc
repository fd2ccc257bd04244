// The rules behind `auto` (codec_policy.h, docs/architecture.md "The `auto`
// codec policy"): the novelty measure, the decisions at the edges of each
// rule, and the codec each kind of file ends up with.
#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "d4c/codec.h"
#include <string>

#include "d4c/convert.h"
#include "d4c/base/strcat.h"
#include "codec_policy.h"
#include "delta_internal.h"
#include "zip_fixture.h"

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

// The decisions of `auto` pinned on representative inputs: which codec, which
// form, and the exact patch bytes (their sha256). Recorded from the decision
// tree as it was inside delta_common.cc before it moved to codec_policy.cc;
// any change to a rule shows up here as a changed codec or digest.
namespace {

struct PinCase {
  const char* name;
  std::string base, target;
  DiffOptions options;
  std::vector<std::string> more_bases;  // extra candidate bases after the first
};

std::string Describe(const BlobResult& r) {
  return StrCat(RecipeKindName(r.recipe.kind), "/",
                r.recipe.kind == Recipe::Kind::kDelta ? CodecName(r.recipe.codec) : "-",
                r.recipe.packed ? "/packed" : "", " ", r.blob.size(), " ", DigestHex(Sha256(r.blob)).substr(0, 16));
}

std::vector<PinCase> PinCases() {
  std::vector<PinCase> cs;
  auto add = [&](const char* name, std::string base, std::string target, DiffOptions o = {},
                 std::vector<std::string> more = {}) {
    cs.push_back({name, std::move(base), std::move(target), o, std::move(more)});
  };
  DiffOptions no_packs;
  no_packs.pack_small_blobs = false;
  DiffOptions tight;
  tight.time_budget_ms = 1;  // only the cheapest codec
  DiffOptions budget2;
  budget2.time_budget_ms = 2;  // xdelta3 fits 4.8 KB, the others 3 KB of input
  std::string small_text = Text(20000, 30), small_edit = small_text;
  small_edit.replace(5000, 10, "0123456789");
  add("tiny file", "abc", "abd");
  add("small text edit", small_text, small_edit);
  add("small text edit, no packs", small_text, small_edit, no_packs);
  add("small text edit, tight budget", small_text, small_edit, tight);
  add("2 KB budget edge", small_text.substr(0, 2000), small_edit.substr(0, 2000).replace(100, 3, "xyz"), budget2);
  add("small random unrelated", RandomBytes(20000, 31), RandomBytes(20000, 32));
  add("small binary churn", RandomBytes(40000, 33), Relocate(RandomBytes(40000, 33)));
  // 300 KiB: over the tiny-patch floor (256 KiB), under the big-file size (1 MiB).
  std::string mid = Text(300 << 10, 34), mid_edit = mid;
  mid_edit.replace(100000, 4, "EDIT");
  add("300 KiB one edit (tiny patch)", mid, mid_edit);
  add("300 KiB one edit, no packs", mid, mid_edit, no_packs);
  std::string mid_many = mid;
  for (size_t i = 0; i < mid_many.size(); i += 2000) mid_many.replace(i, 3, "###");
  add("300 KiB edited every 2 KB", mid, mid_many);
  add("200 KiB one edit (below the floor)", mid.substr(0, 200 << 10), mid_edit.substr(0, 200 << 10));
  // New text in a mid-size file: lzma's turn (from 64 KiB of target).
  std::string mid_new = mid;
  mid_new.replace(150000, 30000, Text(30000, 41));
  add("300 KiB text 10% new", mid, mid_new);
  add("300 KiB text 10% new, no packs", mid, mid_new, no_packs);
  add("60 KiB text 10% new (zstd below 64 KiB)", mid.substr(140000, 60 << 10), mid_new.substr(140000, 60 << 10));
  // Big files (1 MiB and more): measured by novelty first.
  std::string big = RandomBytes(3 << 19, 35);
  add("1.5 MiB churned", big, Relocate(big));
  std::string big_text = Text(2 << 20, 36), big_edit = big_text;
  big_edit.replace(1000, 5, "EDIT!");
  big_edit.insert(1500000, "inserted words ");
  add("2 MiB text near-identical", big_text, big_edit);
  add("2 MiB text near-identical, no packs", big_text, big_edit, no_packs);
  std::string big_mixed = big_text;
  big_mixed.replace(300000, 150000, RandomBytes(150000, 37));  // ~7% new
  add("2 MiB text 7% new", big_text, big_mixed);
  std::string big_novel = big_text;
  big_novel.replace(300000, 400000, RandomBytes(400000, 38));  // ~19% new
  add("2 MiB text 19% new", big_text, big_novel);
  add("2 MiB text 19% new, no packs", big_text, big_novel, no_packs);
  // Over 1 MiB of base + target: zstd is not tried.
  std::string big5 = Text(5 << 19, 39), big5_edit = big5;
  for (size_t i = 0; i < big5_edit.size(); i += 50000) big5_edit.replace(i, 20, RandomBytes(20, i));
  add("2.5 MiB text edited every 50 KB", big5, big5_edit);
  add("2.5 MiB text edited every 50 KB, tight budget", big5, big5_edit, tight);
  // Several bases: the first codec runs on each, the best base takes the rest.
  add("two bases, the second closer", RandomBytes(20000, 40), small_edit, {}, {small_text});
  add("two big bases, the second closer", big, big_edit, {}, {big_text});
  DiffOptions forced_bsdiff;
  forced_bsdiff.codec = CodecId::kBsdiff;
  add("forced bsdiff on near-identical", big_text, big_edit, forced_bsdiff);
  DiffOptions forced_zstd;
  forced_zstd.codec = CodecId::kZstd;
  add("forced zstd over 1 MiB", big5, big5_edit, forced_zstd);
  DiffOptions forced_lzma;
  forced_lzma.codec = CodecId::kLzma;
  add("forced lzma", small_text, small_edit, forced_lzma);
  DiffOptions forced_relcopy;
  forced_relcopy.codec = CodecId::kRelcopy;
  add("forced relcopy", small_text, small_edit, forced_relcopy);
  return cs;
}

const std::map<std::string, std::string> kPinned = {
    {"tiny file", "full/-/packed 3 a52d159f262b2c6d"},
    {"small text edit", "delta/relcopy/packed 18 a5603cec14eebf6f"},
    {"small text edit, no packs", "delta/zstd 37 f40ee02043eb0a17"},
    {"small text edit, tight budget", "delta/xdelta3/packed 38 69cf1e76f65b513f"},
    {"2 KB budget edge", "delta/xdelta3/packed 27 82b3255594139d67"},
    {"small random unrelated", "full/-/packed 20000 77594856e0ec9b68"},
    {"small binary churn", "delta/bsdiff/packed 88 35be4471c89ef7bf"},
    {"300 KiB one edit (tiny patch)", "delta/relcopy/packed 13 5fac5457409cd9df"},
    {"300 KiB one edit, no packs", "delta/xdelta3 40 eb8d01f2f7a29509"},
    {"300 KiB edited every 2 KB", "delta/relcopy/packed 1078 6cf025064b5adf49"},
    {"200 KiB one edit (below the floor)", "delta/relcopy/packed 13 0db552db53a6de34"},
    {"1.5 MiB churned", "delta/bsdiff/packed 92 21da947228109a26"},
    {"2 MiB text near-identical", "delta/relcopy/packed 34 4469a79169a446ec"},
    {"2 MiB text near-identical, no packs", "delta/xdelta3 64 26c093dad68c280c"},
    {"2 MiB text 7% new", "delta/xdelta3 150045 05c438fbd49f4b91"},
    {"2 MiB text 19% new", "delta/bsdiff 401011 30b63b49aa98a0d7"},  // zstd 400207 while it ran up to 4 MiB
    {"2 MiB text 19% new, no packs", "delta/bsdiff 401011 30b63b49aa98a0d7"},
    {"2.5 MiB text edited every 50 KB", "delta/relcopy/packed 1377 3cc0067e228cb1d0"},
    {"2.5 MiB text edited every 50 KB, tight budget", "delta/xdelta3/packed 1558 1ce74192f186594e"},
    {"two bases, the second closer", "delta/relcopy/packed 18 a5603cec14eebf6f"},
    {"two big bases, the second closer", "delta/relcopy/packed 34 4469a79169a446ec"},
    // 124 bytes before bsdiff's LZMA2 and bzip2 section forms.
    {"forced bsdiff on near-identical", "delta/bsdiff/packed 121 3247400e7e94a3a6"},
    // 1658 bytes at level 15, before text got level 19.
    {"forced zstd over 1 MiB", "delta/zstd/packed 1475 0cdf8e2b18b49253"},
    {"forced relcopy", "delta/relcopy/packed 18 a5603cec14eebf6f"},
    {"300 KiB text 10% new", "delta/lzma/packed 7729 d16b6243f9ace45a"},
    {"300 KiB text 10% new, no packs", "delta/lzma 7729 d16b6243f9ace45a"},
    {"60 KiB text 10% new (zstd below 64 KiB)", "delta/zstd/packed 7636 ced0dc517dcfd695"},
    {"forced lzma", "delta/lzma/packed 78 7fb657baa92d41ba"},
};

}  // namespace

TEST_CASE("auto: decisions pinned on representative inputs", "[delta]") {
  for (PinCase& c : PinCases()) {
    std::vector<Base> bases{{Sha256(c.base), c.base, false}};
    for (std::string& b : c.more_bases) bases.push_back({Sha256(b), b, false});
    auto r = EncodeFile(c.target, bases, c.options);
    REQUIRE(r.ok());
    std::string got = Describe(*r);
    INFO(c.name);
    auto it = kPinned.find(c.name);
    REQUIRE(it != kPinned.end());
    CHECK(got == it->second);
  }
}

// The policy's decisions from sizes alone (codec_policy.h), at the edges of
// each rule of docs/architecture.md, "The `auto` codec policy".
namespace {
using C = std::vector<CodecId>;
constexpr CodecId kX = CodecId::kXdelta3, kZ = CodecId::kZstd, kB = CodecId::kBsdiff, kR = CodecId::kRelcopy,
                  kL = CodecId::kLzma;
}  // namespace

TEST_CASE("auto policy: the codec table", "[delta]") {
  // Every codec has one row; the general ones come cheapest first.
  for (CodecId id : {kX, kZ, kL, kB, kR}) CHECK(TraitsOf(id).id == id);
  CHECK(kCodecTraits[0].id == kX);
  CHECK(TraitsOf(kX).two_forms);
  CHECK(TraitsOf(kR).two_forms);
  CHECK_FALSE(TraitsOf(kZ).two_forms);
  CHECK_FALSE(TraitsOf(kB).two_forms);
  CHECK_FALSE(TraitsOf(kR).general);
  CHECK(TraitsOf(CodecId::kGzip).id == CodecId::kGzip);
  CHECK(TraitsOf(CodecId::kGzip).two_forms);
  CHECK_FALSE(TraitsOf(CodecId::kGzip).general);  // never in CodecsFor: only GzipNext runs it
}

TEST_CASE("auto policy: the gzip codec runs on gzip and zip targets only and not under a fixed codec", "[delta]") {
  DiffOptions o;
  Plan plan{{kX, kB}};
  std::string gz = std::string("\x1f\x8b\x08\0", 4) + std::string(30, '\0');
  CHECK(GzipNext(o, plan, gz));
  CHECK_FALSE(GzipNext(o, plan, "plain text that is long enough to be a file"));
  CHECK_FALSE(GzipNext(o, plan, gz.substr(0, 10)));  // too short for a gzip file
  std::string deflate_not = gz;
  deflate_not[2] = 7;  // another method
  CHECK_FALSE(GzipNext(o, plan, deflate_not));
  std::string zip = std::string("PK\3\4", 4) + std::string(60, '\0');
  CHECK(GzipNext(o, plan, zip));
  CHECK_FALSE(GzipNext(o, plan, zip.substr(0, 20)));  // too short for a zip archive
  Plan zip_first{{CodecId::kGzip, kB}};
  CHECK_FALSE(GzipNext(o, zip_first, zip));  // already run first
  o.codec = CodecId::kXdelta3;
  CHECK_FALSE(GzipNext(o, plan, gz));
  for (CodecId id : CodecsFor(DiffOptions{}, 1000, 1000)) CHECK(id != CodecId::kGzip);
}

TEST_CASE("auto policy: a zip archive from a zip archive runs the gzip codec first", "[delta]") {
  DiffOptions o;
  std::string zip = std::string("PK\3\4", 4) + std::string(100, 'z');
  std::vector<Base> zip_base{{Digest{}, zip}}, text_base{{Digest{}, std::string(104, 'z')}};
  Plan p = PlanCodecs(zip, zip_base, o);
  REQUIRE(p.codecs.size() > 1);
  CHECK(p.codecs[0] == CodecId::kGzip);
  CHECK(PlanCodecs(zip, text_base, o).codecs[0] != CodecId::kGzip);
  o.codec = CodecId::kBsdiff;
  CHECK(PlanCodecs(zip, zip_base, o).codecs == std::vector<CodecId>{CodecId::kBsdiff});
}

TEST_CASE("auto policy: the time budget and zstd's input limit", "[delta]") {
  DiffOptions o;  // 60 s, packs on
  // Where zstd runs, xdelta3 does not (packs on).
  CHECK(CodecsFor(o, 100000, 65535) == C{kZ, kB});
  // From 64 KiB of target lzma takes zstd's place, within zstd's limits.
  CHECK(CodecsFor(o, 100000, 65536) == C{kL, kB});
  CHECK(CodecsFor(o, 512 << 10, 512 << 10) == C{kL, kB});        // 1 MiB: still runs
  CHECK(CodecsFor(o, 512 << 10, (512 << 10) + 1) == C{kX, kB});  // one byte more: not, so xdelta3 does
  CHECK(CodecsFor(o, (1 << 20) - 1000, 1000) == C{kZ, kB});      // a big base, a small target: zstd
  // A text target gets zstd up to 2 MiB, lzma up to 4 MiB; xdelta3 is
  // skipped only where zstd's limits hold.
  CHECK(CodecsFor(o, 512 << 10, (512 << 10) + 1, /*text=*/true) == C{kL, kB});
  CHECK(CodecsFor(o, 1 << 20, 1 << 20, /*text=*/true) == C{kL, kB});
  CHECK(CodecsFor(o, 1 << 20, (1 << 20) + 1, /*text=*/true) == C{kX, kL, kB});
  CHECK(CodecsFor(o, 2 << 20, 2 << 20, /*text=*/true) == C{kX, kL, kB});
  CHECK(CodecsFor(o, 2 << 20, (2 << 20) + 1, /*text=*/true) == C{kX, kB});
  CHECK(CodecsFor(o, 2000, 2000, /*text=*/true) == C{kZ, kB});
  CHECK(CodecsFor(o, 45000000, 45000000) == C{kX, kB});           // 60 s of bsdiff
  CHECK(CodecsFor(o, 45000000, 45000001) == C{kX});
  CHECK(CodecsFor(o, 500000000, 500000000) == C{kX});             // the cheapest always runs
  DiffOptions no_packs;
  no_packs.pack_small_blobs = false;
  CHECK(CodecsFor(no_packs, 100000, 100000) == C{kX, kL, kB});   // without packs xdelta3 stays
  CHECK(CodecsFor(no_packs, 100000, 1000) == C{kX, kZ, kB});
  DiffOptions tight;
  tight.time_budget_ms = 1;
  CHECK(CodecsFor(tight, 1000, 500) == C{kZ, kB});
  CHECK(CodecsFor(tight, 1000, 501) == C{kX});  // zstd misses the budget: xdelta3 is the fallback
  CHECK(CodecsFor(tight, 1000, 1400) == C{kX});
  CHECK(RelcopyFits(tight, 1000, 500));
  CHECK_FALSE(RelcopyFits(tight, 1000, 501));
  DiffOptions forced;
  forced.codec = kB;
  CHECK(CodecsFor(forced, 500000000, 500000000) == C{kB});
}

TEST_CASE("auto policy: PlanCodecs gives a text target lzma up to 4 MiB and a binary one up to 1 MiB", "[delta]") {
  DiffOptions o;
  std::string text_base(1536 << 10, 'a'), text(1536 << 10, 'b');  // 3 MiB in all
  for (size_t i = 0; i < text.size(); i += 61) text_base[i] = text[i] = '\n';
  std::string bin_base = text_base, bin = text;
  bin[100] = '\0';
  std::vector<Base> text_bases{{Digest{}, text_base, false}};
  std::vector<Base> bin_bases{{Digest{}, bin_base, false}};
  auto has_lzma = [](const Plan& p) { return std::find(p.codecs.begin(), p.codecs.end(), kL) != p.codecs.end(); };
  CHECK(has_lzma(PlanCodecs(text, text_bases, o)));
  CHECK_FALSE(has_lzma(PlanCodecs(bin, bin_bases, o)));
}

TEST_CASE("auto policy: big files are planned from their novelty", "[delta]") {
  DiffOptions o;
  const uint64_t mib = 1 << 20;
  auto plan = [&](uint64_t anchors, uint64_t missing, uint64_t target = 1 << 20, const DiffOptions* opt = nullptr) {
    return PlanFor(opt ? *opt : o, mib, mib, target, Novelty{anchors, missing});
  };
  // zstd never runs here: a measured target (1 MiB or more) and its base
  // exceed zstd's 1 MiB input limit.
  // Small targets are not measured: the budget alone decides.
  CHECK(plan(1000, 900, mib - 1).codecs == C{kX, kB});
  CHECK_FALSE(plan(1000, 900, mib - 1).standalone_first);
  // 10% new: xdelta3 is skipped; 9.9% is not.
  CHECK(plan(10000, 1000).codecs == C{kB});
  CHECK(plan(10000, 999).codecs == C{kX, kB});
  // No anchors at all: nothing is new, near-identical.
  CHECK(plan(0, 0).codecs == C{kR, kX, kB});
  // Near-identical (estimated patch <= 16 KiB, 32 bytes per new anchor):
  // relcopy first, even when novel by share.
  CHECK(plan(100000, 512).codecs == C{kR, kX, kB});
  CHECK(plan(1000, 512).codecs == C{kR, kB});
  CHECK(plan(100000, 513).codecs == C{kX, kB});
  DiffOptions no_packs;
  no_packs.pack_small_blobs = false;
  CHECK(plan(100000, 10, mib, &no_packs).codecs == C{kX, kB});
  // Estimated patch over 4 members (256 KiB): standalone forms first.
  CHECK_FALSE(plan(100000, 8192).standalone_first);
  CHECK(plan(100000, 8193).standalone_first);
  CHECK(plan(100000, 8193).codecs == C{kX, kB});
  // Targets from 256 KiB up are measured for that alone: the codecs stay as
  // the budget decides, novel or near-identical.
  const uint64_t mid = 256 << 10;
  CHECK(plan(100000, 8193, mid).standalone_first);
  CHECK_FALSE(plan(100000, 8192, mid).standalone_first);
  CHECK(plan(100000, 90000, mid).codecs == C{kX, kB});
  CHECK(plan(100000, 10, mid).codecs == C{kX, kB});
  CHECK_FALSE(plan(100000, 90000, mid - 1).standalone_first);
  // xdelta3 is never the one codec skipped, and relcopy needs its time.
  DiffOptions tight;
  tight.time_budget_ms = 1;
  CHECK(plan(1000, 900, mib, &tight).codecs == C{kX});
  CHECK(plan(1000, 0, mib, &tight).codecs == C{kX});
  // A fixed codec is never second-guessed.
  DiffOptions forced;
  forced.codec = kX;
  CHECK(plan(1000, 900, mib, &forced).codecs == C{kX});
  CHECK(plan(1000, 0, mib, &forced).codecs == C{kX});
  // relcopy's time counts the first base, not the largest.
  DiffOptions budget;
  budget.time_budget_ms = 1000;  // relcopy: 1.5 MB of input
  CHECK(PlanFor(budget, 10 * mib, 400000, mib, Novelty{1000, 0}).codecs == C{kR, kX});
  CHECK(PlanFor(budget, 10 * mib, 500000, mib, Novelty{1000, 0}).codecs == C{kX});
}

TEST_CASE("auto policy: the tiny-patch rule, relcopy's turn and its candidates", "[delta]") {
  DiffOptions o;
  CHECK(SkipRestAfterFirst(o, 256 << 10, 131));  // 131 * 2000 <= 262144
  CHECK_FALSE(SkipRestAfterFirst(o, 256 << 10, 132));
  CHECK_FALSE(SkipRestAfterFirst(o, (256 << 10) - 1, 1));  // below the floor
  CHECK(SkipRestAfterFirst(o, 30 << 20, 15728));
  DiffOptions forced;
  forced.codec = kX;
  CHECK_FALSE(SkipRestAfterFirst(forced, 30 << 20, 1));

  CHECK(RelcopyNext(o, false, kPackMemberMax, 1000, 1000));
  CHECK_FALSE(RelcopyNext(o, false, kPackMemberMax + 1, 1000, 1000));
  CHECK_FALSE(RelcopyNext(o, true, 10, 1000, 1000));
  CHECK_FALSE(RelcopyNext(forced, false, 10, 1000, 1000));
  DiffOptions no_packs;
  no_packs.pack_small_blobs = false;
  CHECK_FALSE(RelcopyNext(no_packs, false, 10, 1000, 1000));
  DiffOptions tight;
  tight.time_budget_ms = 1;
  CHECK_FALSE(RelcopyNext(tight, false, 10, 1000, 1000));

  CHECK(KeepCandidate(o, kR, 999, 1000));
  CHECK_FALSE(KeepCandidate(o, kR, 1000, 1000));
  CHECK(KeepCandidate(o, kX, 5000, 1000));
  DiffOptions forced_r;
  forced_r.codec = kR;
  CHECK(KeepCandidate(forced_r, kR, 5000, 1000));
}

// ChooseAlternates (pack members with a relcopy alternate): the raw forms of
// two files that got one edit are the same bytes, which the pack stores once.
TEST_CASE("ChooseAlternates: twins take their shared raw form and others keep their primary", "[delta]") {
  SpooledBlob with_alt, plain;
  with_alt.alt = SpooledAlternate{CodecId::kRelcopy, BlobRef{}, Digest{}};
  std::string shared = RandomBytes(700, 1);  // one edit's raw instructions, the same in both files
  auto member = [&](size_t entry, std::string bytes, std::string alt) {
    PackMember m;
    m.entry = entry;
    m.blob = alt.empty() ? &plain : &with_alt;
    m.bytes = std::move(bytes);
    m.alt = std::move(alt);
    return m;
  };
  std::vector<PackMember> ms;
  ms.push_back(member(1, RandomBytes(600, 2), shared));         // each primary smaller than the raw form alone
  ms.push_back(member(2, RandomBytes(600, 3), shared));
  ms.push_back(member(3, RandomBytes(300, 4), RandomBytes(900, 5)));  // an alternate that only costs more
  ms.push_back(member(4, RandomBytes(200, 6), ""));
  ChooseAlternates("", ms, 1 << 20);
  CHECK(ms[0].use_alt);
  CHECK(ms[1].use_alt);
  CHECK_FALSE(ms[2].use_alt);
  CHECK_FALSE(ms[3].use_alt);

  // Without room in the pack for the raw forms, the primaries stay.
  for (auto& m : ms) m.use_alt = false;
  ChooseAlternates("", ms, 600 + 600 + 300 + 200 + 100);
  for (auto& m : ms) CHECK_FALSE(m.use_alt);

  // One file alone gains nothing from its raw form.
  std::vector<PackMember> one;
  one.push_back(member(1, RandomBytes(600, 2), shared));
  ChooseAlternates("", one, 1 << 20);
  CHECK_FALSE(one[0].use_alt);

  // The pack's earlier bytes count: a raw form matching them is taken.
  std::vector<PackMember> after;
  after.push_back(member(5, RandomBytes(600, 7), shared));
  ChooseAlternates(shared, after, 1 << 20);
  CHECK(after[0].use_alt);

  // Neighbours whose big raw forms share most bytes (compressible text the
  // slow level packs much better than the fast one) take them together when,
  // at the pack's level, the pair is smaller so; whatever is chosen, the pack
  // is never bigger than with every primary.
  std::string text;
  std::mt19937_64 rng(5);
  while (text.size() < (48 << 10)) text += StrCat("w", rng() % 3000, rng() % 7 ? " " : "\n");
  auto z19 = [](std::string_view s) { return CdimgWriter::CompressPack(s, kPackLevel)->size(); };
  for (size_t primary : {size_t{2000}, size_t{9000}, size_t{40000}}) {
    INFO(primary);
    std::vector<PackMember> pair;
    pair.push_back(member(1, RandomBytes(primary, 8), text + "x"));
    pair.push_back(member(2, RandomBytes(primary, 9), text + "y"));
    pair.push_back(member(3, RandomBytes(300, 10), ""));
    ChooseAlternates("", pair, 1 << 20);
    std::string out, primaries;
    for (const auto& m : pair) out += m.use_alt ? m.alt : m.bytes, primaries += m.bytes;
    CHECK(z19(out) <= z19(primaries));
    CHECK(pair[0].use_alt == pair[1].use_alt);
    bool alts_smaller = z19(pair[0].alt + pair[1].alt) < z19(pair[0].bytes + pair[1].bytes);
    CHECK(pair[0].use_alt == alts_smaller);
    // Nor bigger than the pair as weighed with every other member's primary
    // (a candidate of its own: the fast level's one-at-a-time choices can
    // mislead).
    std::string pairs_only = alts_smaller ? pair[0].alt + pair[1].alt : pair[0].bytes + pair[1].bytes;
    CHECK(z19(out) <= z19(pairs_only + pair[2].bytes));
  }
}

TEST_CASE("EncodeFile: a packed winner carries bsdiff's raw form against the base by name as its alternate",
          "[delta]") {
  // Text with one edit: an entropy-coded patch wins alone; the alternate is
  // bsdiff's raw pack form against bases[0] (A's file by name), whatever
  // base won, so that two files with the same edit share it in a pack.
  std::string base;
  std::mt19937_64 rng(11);
  while (base.size() < (200 << 10)) base += StrCat("word", rng() % 5000, rng() % 3 ? " " : "\n");
  std::string target = base;
  target.replace(100000, 20, "an edit in the middle");
  target.replace(150000, 0, "and another one here");
  // Closer bases (B's own twin), which win: one a byte away, one with edits
  // of its own.
  std::string near_twin = target, far_twin = target;
  near_twin[1000] = '#';
  for (size_t at = 1000; at < 1400; at += 7) far_twin[at] = static_cast<char>('A' + at % 23);
  const uint64_t own_fast = FastPatchSize(base, target);
  for (int with_twin : {0, 1, 2}) {
    INFO(with_twin);
    std::vector<Base> bases{{Sha256(base), base, false}};
    if (with_twin == 1) bases.push_back({Sha256(near_twin), near_twin, true});
    if (with_twin == 2) bases.push_back({Sha256(far_twin), far_twin, true});
    auto r = EncodeFile(target, bases, DiffOptions{});
    REQUIRE(r.ok());
    REQUIRE(r->recipe.kind == Recipe::Kind::kDelta);
    REQUIRE(r->recipe.packed);
    CHECK(r->recipe.base == bases[with_twin ? 1 : 0].digest);
    INFO("winner " << r->blob.size() << " B, fast patch against bases[0] " << own_fast << " B");
    if (with_twin == 1) {
      // A winner under 1/16 of that fast patch: no raw form against bases[0].
      REQUIRE(r->blob.size() * 16 < own_fast);
      CHECK_FALSE((r->alt && r->alt->codec == CodecId::kBsdiff && r->alt->base == bases[0].digest));
      continue;
    }
    if (with_twin == 2) REQUIRE(r->blob.size() * 16 >= own_fast);
    REQUIRE(r->alt);
    CHECK(r->alt->codec == CodecId::kBsdiff);
    CHECK(r->alt->base == bases[0].digest);
    auto back = GetCodec(CodecId::kBsdiff).DecodeFromPack(base, r->alt->blob, target.size());
    REQUIRE(back.ok());
    CHECK(*back == target);
    CHECK_FALSE(GetCodec(CodecId::kBsdiff).Decode(base, r->alt->blob, target.size()).ok());  // a pack form only
  }
  DiffOptions forced;
  forced.codec = CodecId::kZstd;
  auto f = EncodeFile(target, {{Sha256(base), base, false}}, forced);
  REQUIRE(f.ok());
  CHECK_FALSE(f->alt);  // a fixed codec has no alternates
}

TEST_CASE("EncodeFile: zip archives get the zip form first and the other codecs when it cannot apply", "[delta]") {
  auto jar = [](int version, int level) {
    std::vector<testing::ZipEntry> entries;
    for (int i = 0; i < 8; ++i)
      entries.push_back({StrCat("C", i, ".class"), Text(4000, i) + StrCat("version ", version) + Text(4000, 50 + i),
                         level});
    return testing::MakeZip(entries);
  };
  std::string base = jar(1, 6), target = jar(2, 6);
  BlobResult r = Auto(base, target);
  REQUIRE(r.recipe.kind == Recipe::Kind::kDelta);
  CHECK(r.recipe.codec == CodecId::kGzip);
  // Stored members only: nothing to inflate, the zip form does not apply,
  // and the plan's next codec makes the delta.
  std::string stored_base = jar(1, 0), stored_target = jar(2, 0);
  BlobResult st = Auto(stored_base, stored_target);
  REQUIRE(st.recipe.kind == Recipe::Kind::kDelta);
  CHECK(st.recipe.codec != CodecId::kGzip);
  auto back = GetCodec(st.recipe.codec).DecodeForm(stored_base, st.blob, stored_target.size(), st.recipe.packed);
  REQUIRE(back.ok());
  CHECK(*back == stored_target);
}
