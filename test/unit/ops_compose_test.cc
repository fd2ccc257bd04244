// merge from two deltas alone (ComposeDeltas): files changed by both deltas
// become chained patches (codec 6), nothing of A but its index is read.
// Synthetic images for the cases, the real corpus (typescript, biome: three
// consecutive versions) for the sizes; bad and hostile input.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "d4c/base/strcat.h"
#include "d4c/chain.h"
#include "d4c/codec.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "oci_fixture.h"

using namespace d4c;
using oci_test::LayerBuilder;
using oci_test::ReadAll;
using oci_test::Edit;
using oci_test::ScratchDir;
using oci_test::Text;

namespace {

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

std::string ConvertRef(const std::string& ref, const std::string& out, int level) {
  ConvertOptions co;
  co.threads = 2;
  co.zstd_level = level;
  auto st = ConvertImage(ref, out, co);
  INFO(ref << ": " << Msg(st.status().message()));
  REQUIRE(st.ok());
  return out;
}

std::string Convert(const ScratchDir& dir, const std::string& name, const LayerBuilder& layer) {
  std::string layout = StrCat(dir.path(), "/oci-", name);
  REQUIRE(oci_test::WriteOciLayout(layout, {{name, {layer.Tar()}}}).ok());
  return ConvertRef(StrCat("oci:", layout, ":", name), StrCat(dir.path(), "/", name, ".cdimg"),
                    ConvertOptions{}.zstd_level);
}

std::unique_ptr<ImageChain> Open(const std::string& top, const std::vector<std::string>& bases = {}) {
  auto c = ImageChain::Open(top, bases);
  INFO(Msg(c.status().message()));
  REQUIRE(c.ok());
  return std::move(*c);
}

DeltaStats Diff(const std::string& a, const std::string& b, const std::string& out, DiffOptions o = {},
                const std::vector<std::string>& a_bases = {}) {
  auto st = DiffImages(*Open(a, a_bases), *Open(b), out, o);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  return *st;
}

absl::StatusOr<DeltaStats> Compose(const std::string& a, const std::string& d1, const std::string& d2,
                                   const std::string& out, DiffOptions o = {}) {
  o.threads = 2;
  return ComposeDeltas(*Open(a), d1, d2, out, o);
}

// Patched at convert's levels, so the output is convert's bytes (docs/design.md).
absl::StatusOr<DeltaStats> TryPatch(const std::string& a, const std::string& d, const std::string& out,
                                    int level = ConvertOptions{}.zstd_level) {
  PatchOptions o;
  o.threads = 2;
  o.zstd_level = level;
  o.meta_zstd_level = kConvertMetaLevel;
  return PatchImage(*Open(a), d, out, o);
}

uint64_t Files(const DeltaStats& s, const std::string& key) {
  uint64_t n = 0;
  for (const std::string& k : {key, "packed " + key})
    if (auto it = s.by_kind.find(k); it != s.by_kind.end()) n += it->second.files;
  return n;
}

// A with files changed in D1 only, in D2 only, in both, added in B then
// changed, added in C, dropped.
struct Triple {
  std::string a, b, c;
};
Triple MakeTriple(const ScratchDir& tmp) {
  std::string twice = Text(30, 4000), once1 = Text(31, 3000), once2 = Text(32, 3000), same = Text(33, 1000);
  LayerBuilder la, lb, lc;
  la.File("twice.js", twice).File("once1.js", once1).File("once2.js", once2).File("same.txt", same)
      .File("dropped-later.txt", Text(34, 500));
  lb.File("twice.js", Edit(twice, 60, "B ")).File("once1.js", Edit(once1, 40, "B ")).File("once2.js", once2)
      .File("same.txt", same).File("dropped-later.txt", Text(35, 500)).File("added-in-b.txt", Text(36, 800));
  lc.File("twice.js", Edit(Edit(twice, 60, "B "), 70, "C ")).File("once1.js", Edit(once1, 40, "B "))
      .File("once2.js", Edit(once2, 45, "C ")).File("same.txt", same)
      .File("added-in-b.txt", Edit(Text(36, 800), 30, "C ")).File("added-in-c.txt", Text(37, 200));
  return {Convert(tmp, "a", la), Convert(tmp, "b", lb), Convert(tmp, "c", lc)};
}

std::string CorpusRoot() {
  const char* env = std::getenv("D4C_CORPUS");
  return env && *env ? env : "/var/cache/d4c-corpus";
}

bool IsDir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

TEST_CASE("compose: merge without A's files equals A→C and is not larger than both", "[delta][compose]") {
  ScratchDir tmp;
  Triple t = MakeTriple(tmp);
  for (bool pack : {true, false}) {
    DYNAMIC_SECTION("packs " << pack) {
      DiffOptions o;
      o.pack_small_blobs = pack;
      std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg", d = tmp.path() + "/d.cdimg";
      Diff(t.a, t.b, d1, o);
      Diff(t.b, t.c, d2, o);
      auto st = Compose(t.a, d1, d2, d, o);
      INFO(Msg(st.status().message()));
      REQUIRE(st.ok());
      CHECK(st->header.parent_id == CdimgImage::ReadHeader(t.a)->image_id);
      CHECK(st->header.image_id == CdimgImage::ReadHeader(t.c)->image_id);
      // twice.js; added-in-b.txt (full in D1, a delta in D2): its full blob
      // becomes the chain's first step, a packed member (raw content) as a
      // stored step left in its pack, a standalone blob as a zstd patch.
      CHECK(Files(*st, "delta/chain") == 2);
      CHECK(st->reencoded == 0);
      {
        auto img2 = Open(d, {t.a});
        CHECK(img2->top().header().placed_packs);
        Recipe rb = img2->top().RecipeAt(*img2->top().Find("added-in-b.txt"));
        REQUIRE(rb.codec == CodecId::kChain);
        auto stored = img2->top().ReadStoredPayload(rb);
        REQUIRE(stored.ok());
        auto steps = ParseChainPatch(*stored, rb.packed);
        REQUIRE(steps.ok());
        REQUIRE(steps->size() == 2);
        CHECK((*steps)[0].stored == pack);
        CHECK((*steps)[0].located == pack);
        CHECK((*steps)[1].located == pack);  // D2's packed patch, in D2's copied pack
        if (!pack) CHECK((*steps)[0].codec == CodecId::kZstd);
      }
      CHECK(FileSize(d) <= FileSize(d1) + FileSize(d2));
      auto img = Open(d, {t.a});
      Recipe r = img->top().RecipeAt(*img->top().Find("twice.js"));
      CHECK(r.codec == CodecId::kChain);
      CHECK(r.base == img->image(0).DigestAt(*img->image(0).Find("twice.js")));
      std::string out = tmp.path() + "/c2.cdimg";
      auto ps = TryPatch(t.a, d, out);
      INFO(Msg(ps.status().message()));
      REQUIRE(ps.ok());
      CHECK(ReadAll(out) == ReadAll(t.c));

      // Deterministic across thread counts.
      std::string again = tmp.path() + "/d-again.cdimg";
      DiffOptions one = o;
      one.threads = 1;
      REQUIRE(ComposeDeltas(*Open(t.a), d1, d2, again, one).ok());
      CHECK(ReadAll(again) == ReadAll(d));

      // The A-aware merge reads a composed delta as an input (its chained
      // patch decodes against A).
      LayerBuilder ld;
      ld.File("twice.js", Edit(Edit(Edit(Text(30, 4000), 60, "B "), 70, "C "), 80, "D ")).File("same.txt", Text(33, 1000));
      std::string dimg = Convert(tmp, pack ? "dp" : "ds", ld);
      std::string d3 = tmp.path() + "/d3.cdimg";
      Diff(t.c, dimg, d3, o);
      std::string rediff = tmp.path() + "/rediff.cdimg";
      auto ms = MergeDeltas(*Open(t.a), d, d3, rediff, o);
      INFO(Msg(ms.status().message()));
      REQUIRE(ms.ok());
      REQUIRE(TryPatch(t.a, rediff, out).ok());
      CHECK(ReadAll(out) == ReadAll(dimg));
      // Composing the composed delta again: three steps in one chain.
      std::string twice_again = tmp.path() + "/dd.cdimg";
      auto cs = Compose(t.a, d, d3, twice_again, o);
      INFO(Msg(cs.status().message()));
      REQUIRE(cs.ok());
      CHECK(FileSize(twice_again) <= FileSize(d) + FileSize(d3));
      auto img3 = Open(twice_again, {t.a});
      Recipe r3 = img3->top().RecipeAt(*img3->top().Find("twice.js"));
      REQUIRE(r3.codec == CodecId::kChain);
      auto payload = img3->top().ReadPayload(r3);
      REQUIRE(payload.ok());
      auto steps = ParseChainPatch(*payload, r3.packed);
      REQUIRE(steps.ok());
      CHECK(steps->size() == 3);
      REQUIRE(TryPatch(t.a, twice_again, out).ok());
      CHECK(ReadAll(out) == ReadAll(dimg));
    }
  }
}

TEST_CASE("compose: the packs of both deltas are copied as stored and members and steps keep their place",
          "[delta][compose]") {
  // B adds 80 + 40 small files (8000 bytes each): D1 stores them as packed
  // members, 32 to a 256 KiB pack, in path order: packs 0 and 1 hold only
  // new/ files, pack 2 new/ and part/ files, pack 3 (inline) part/ files. C
  // changes part/03 and part/20 (packs 2 and 3) and keeps the rest.
  ScratchDir tmp;
  auto file = [](uint32_t seed) { return Text(seed, 140).substr(0, 8000); };
  LayerBuilder la, lb, lc;
  la.File("keep.txt", Text(1, 50));
  lb.File("keep.txt", Text(1, 50));
  lc.File("keep.txt", Text(1, 50));
  for (int k = 0; k < 80; ++k) {
    std::string name = StrCat("new/f", k < 10 ? "0" : "", k, ".txt");
    lb.File(name, file(100 + k));
    lc.File(name, file(100 + k));
  }
  for (int k = 0; k < 40; ++k) {
    std::string name = StrCat("part/f", k < 10 ? "0" : "", k, ".txt");
    lb.File(name, file(300 + k));
    lc.File(name, k == 3 || k == 20 ? Edit(file(300 + k), 7, "C ") : file(300 + k));
  }
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb), c = Convert(tmp, "c", lc);
  std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg", d = tmp.path() + "/d.cdimg";
  Diff(a, b, d1);
  Diff(b, c, d2);
  auto st = Compose(a, d1, d2, d);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  CHECK(st->reencoded == 0);  // nothing rebuilt, nothing compressed again but small packs

  auto i1 = Open(d1, {a});
  auto i2 = Open(d2, {b});
  auto io = Open(d, {a});
  const CdimgImage& p1 = i1->top();
  const CdimgImage& p2 = i2->top();
  const CdimgImage& out = io->top();
  CHECK(out.header().placed_packs);
  REQUIRE(p1.pack_count() == 4);
  REQUIRE(p1.PackBlob(3).length == 0);  // inline
  auto stored = [](const CdimgImage& img, uint32_t p) {
    auto bytes = img.ReadBlob(img.PackBlob(p));
    REQUIRE(bytes.ok());
    return *bytes;
  };
  // D1's stored packs first, in order, as they are stored; then D2's.
  for (uint32_t p = 0; p < 3; ++p) CHECK(stored(out, p) == stored(p1, p));
  uint32_t next = 3;
  for (uint32_t p = 0; p < p2.pack_count(); ++p)
    if (p2.PackBlob(p).length > 0) CHECK(stored(out, next++) == stored(p2, p));
  // Unchanged members keep their pack number and range.
  for (const char* path : {"new/f00.txt", "new/f63.txt", "new/f64.txt", "part/f02.txt"}) {
    INFO(path);
    Recipe r = out.RecipeAt(*out.Find(path));
    CHECK(r == p1.RecipeAt(*p1.Find(path)));
  }
  // A changed file is a chain of steps left where they are: D1's member as a
  // stored step, D2's packed patch.
  for (const char* path : {"part/f03.txt", "part/f20.txt"}) {
    INFO(path);
    Recipe r = out.RecipeAt(*out.Find(path));
    REQUIRE(r.codec == CodecId::kChain);
    auto chain = out.ReadStoredPayload(r);
    REQUIRE(chain.ok());
    CHECK(chain->size() < 40);  // headers and places only
    auto steps = ParseChainPatch(*chain, r.packed);
    REQUIRE(steps.ok());
    REQUIRE(steps->size() == 2);
    Recipe r1 = p1.RecipeAt(*p1.Find(path));
    CHECK((*steps)[0].stored);
    CHECK((*steps)[0].located);
    CHECK((*steps)[0].offset == r1.blob.offset);
    if (r1.pack < 3) CHECK((*steps)[0].pack == r1.pack);
    CHECK((*steps)[1].located);
    CHECK((*steps)[1].codec == p2.RecipeAt(*p2.Find(path)).codec);
  }
  CHECK(FileSize(d) <= FileSize(d1) + FileSize(d2));

  // Patching onto A gives C; deterministic across thread counts.
  std::string patched = tmp.path() + "/c2.cdimg";
  auto ps = TryPatch(a, d, patched);
  INFO(Msg(ps.status().message()));
  REQUIRE(ps.ok());
  CHECK(ReadAll(patched) == ReadAll(c));
  std::string again = tmp.path() + "/d-again.cdimg";
  DiffOptions one;
  one.threads = 1;
  REQUIRE(ComposeDeltas(*Open(a), d1, d2, again, one).ok());
  CHECK(ReadAll(again) == ReadAll(d));

  // A C without part/ changes (and a new small file, packed before them):
  // every stored pack of D1 is copied.
  LayerBuilder lc2;
  lc2.File("keep.txt", Text(1, 50)).File("extra.txt", Text(2, 10));
  for (int k = 0; k < 80; ++k) lc2.File(StrCat("new/f", k < 10 ? "0" : "", k, ".txt"), file(100 + k));
  for (int k = 0; k < 40; ++k) lc2.File(StrCat("part/f", k < 10 ? "0" : "", k, ".txt"), file(300 + k));
  std::string c2 = Convert(tmp, "c2", lc2), d2b = tmp.path() + "/d2b.cdimg", db = tmp.path() + "/db.cdimg";
  Diff(b, c2, d2b);
  auto st2 = Compose(a, d1, d2b, db);
  INFO(Msg(st2.status().message()));
  REQUIRE(st2.ok());
  CHECK(st2->reencoded == 0);
  auto iob = Open(db, {a});
  REQUIRE(iob->top().pack_count() >= 4);
  for (uint32_t p = 0; p < 3; ++p) {
    INFO("D1 pack " << p);
    bool found = false;
    for (uint32_t q = 0; q < iob->top().pack_count(); ++q)
      found |= iob->top().PackBlob(q).length > 0 && stored(iob->top(), q) == stored(p1, p);
    CHECK(found);
  }
  ps = TryPatch(a, db, patched);
  INFO(Msg(ps.status().message()));
  REQUIRE(ps.ok());
  CHECK(ReadAll(patched) == ReadAll(c2));
}

TEST_CASE("compose: bad input gives clear errors, never wrong bytes", "[delta][compose]") {
  ScratchDir tmp;
  Triple t = MakeTriple(tmp);
  DiffOptions o;
  o.pack_small_blobs = false;  // standalone blobs: a flipped byte hits one file's blob
  std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg";
  Diff(t.a, t.b, d1, o);
  Diff(t.b, t.c, d2, o);
  SECTION("deltas in the wrong order") {
    auto st = Compose(t.a, d2, d1, tmp.path() + "/x.cdimg", o);
    REQUIRE(!st.ok());
    CHECK_THAT(Msg(st.status().message()), Catch::Contains("wrong base"));
  }
  SECTION("a truncated delta") {
    std::string bytes = ReadAll(d2);
    std::string cut = tmp.path() + "/cut.cdimg";
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    auto st = Compose(t.a, d1, cut, tmp.path() + "/x.cdimg", o);
    REQUIRE(!st.ok());
    CHECK_THAT(Msg(st.status().message()), Catch::Contains("cut.cdimg"));
  }
  SECTION("a damaged full blob is found by its digest check") {
    auto img = Open(d1, {t.a});
    const CdimgImage& top = img->top();
    Recipe r = top.RecipeAt(*top.Find("added-in-b.txt"));
    REQUIRE(r.kind == Recipe::Kind::kFull);
    std::string bytes = ReadAll(d1);
    bytes[top.header().blobs_offset + r.blob.offset + r.blob.length / 2] ^= 0x40;
    std::string bad = tmp.path() + "/bad1.cdimg";
    std::ofstream(bad, std::ios::binary) << bytes;
    auto st = Compose(t.a, bad, d2, tmp.path() + "/x.cdimg", o);
    REQUIRE(!st.ok());
    CHECK_THAT(Msg(st.status().message()), Catch::Contains("added-in-b.txt"));
  }
  SECTION("a damaged patch inside a chained patch fails where it is applied") {
    std::string d = tmp.path() + "/d.cdimg";
    REQUIRE(Compose(t.a, d1, d2, d, o).ok());
    auto img = Open(d, {t.a});
    const CdimgImage& top = img->top();
    Recipe r = top.RecipeAt(*top.Find("twice.js"));
    REQUIRE(r.codec == CodecId::kChain);
    REQUIRE(!r.packed);
    std::string bytes = ReadAll(d);
    bytes[top.header().blobs_offset + r.blob.offset + r.blob.length - 3] ^= 0x01;
    std::string bad = tmp.path() + "/bad.cdimg";
    std::ofstream(bad, std::ios::binary) << bytes;
    auto ps = TryPatch(t.a, bad, tmp.path() + "/c2.cdimg");
    REQUIRE(!ps.ok());
    CHECK_THAT(Msg(ps.status().message()), Catch::Contains("twice.js"));
  }
}

TEST_CASE("chained patch: layout checks and decoding", "[codec][compose]") {
  std::string a = Text(60, 300), b = Edit(a, 20, "B "), c = Edit(b, 25, "C ");
  auto p1 = GetCodec(CodecId::kXdelta3).Encode(a, b);
  auto p2 = GetCodec(CodecId::kRelcopy).EncodeForPack(b, c);
  REQUIRE(p1.ok());
  REQUIRE(p2.ok());
  std::vector<ChainStep> steps{{CodecId::kXdelta3, false, b.size(), *p1, p1->size()},
                               {CodecId::kRelcopy, true, c.size(), *p2, p2->size()}};
  const DeltaCodec& chain = GetCodec(CodecId::kChain);
  CHECK(std::string(CodecName(CodecId::kChain)) == "chain");
  CHECK(chain.Encode(a, c).status().code() == absl::StatusCode::kFailedPrecondition);
  for (bool pack : {false, true}) {
    std::string patch = MakeChainPatch(steps, pack);
    auto out = chain.DecodeForm(a, patch, c.size(), pack);
    INFO(Msg(out.status().message()));
    REQUIRE(out.ok());
    CHECK(*out == c);
    // Each form is read only as itself.
    CHECK_THAT(Msg(chain.DecodeForm(a, patch, c.size(), !pack).status().message()), Catch::Contains("stored"));
    CHECK_THAT(Msg(chain.DecodeForm(a, patch, c.size() + 1, pack).status().message()),
               Catch::Contains("last step"));
  }
  std::string good = MakeChainPatch(steps, false);
  auto bad = [&](std::string p, const std::string& why) {
    auto out = chain.Decode(a, p, c.size());
    INFO(why);
    REQUIRE(!out.ok());
    CHECK(out.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(Msg(out.status().message()), Catch::Contains(why));
  };
  bad("", "empty");
  bad(std::string(1, '\x07') + good.substr(1), "form byte");
  std::string one = good;
  one[1] = 1;
  bad(one, "step count 1");
  std::string many = good;
  many[1] = 65;
  bad(many, "step count 65");
  std::string nested = good;
  nested[2] = 6;  // a step may not itself be a chain
  bad(nested, "step codec id 6");
  bad(good + "x", "do not add up");
  bad(good.substr(0, good.size() - 1), "do not add up");
  std::vector<ChainStep> huge = steps;
  huge[0].out_size = (1ull << 30) + 1;
  bad(MakeChainPatch(huge, false), "exceeds 1 GiB");
  std::string damaged = good;
  damaged[damaged.size() - 2] ^= 0x20;  // inside the relcopy step: wrong bytes or an error, never a crash
  auto out = chain.Decode(a, damaged, c.size());
  if (out.ok()) CHECK(out->size() == c.size());
}

TEST_CASE("compose on the corpus: three consecutive versions", "[delta][compose][corpus]") {
  std::string root = CorpusRoot();
  struct Series {
    std::string name;
    std::vector<std::string> tags;
  };
  for (const Series& s : {Series{"typescript", {"5.4.2", "5.4.3", "5.4.4", "5.4.5"}},
                          Series{"biome", {"1.9.2", "1.9.3", "1.9.4"}}}) {
    if (!IsDir(StrCat(root, "/", s.name, "/oci"))) {
      WARN("corpus series " << s.name << " not found under " << root << "; skipping");
      continue;
    }
    DYNAMIC_SECTION(s.name) {
      ScratchDir tmp;
      constexpr int kLevel = 3;  // fast converts; diff and patch use the same level
      std::vector<std::string> img, delta;
      for (const std::string& tag : s.tags)
        img.push_back(ConvertRef(StrCat("oci:", root, "/", s.name, "/oci:", tag), StrCat(tmp.path(), "/", tag, ".cdimg"),
                                 kLevel));
      DiffOptions o;
      o.zstd_level = kLevel;
      o.threads = 2;
      for (size_t v = 1; v < img.size(); ++v) {
        delta.push_back(StrCat(tmp.path(), "/d", v, ".cdimg"));
        Diff(img[v - 1], img[v], delta.back(), o);
      }
      std::string d13 = tmp.path() + "/d13.cdimg";
      auto st = Compose(img[0], delta[0], delta[1], d13, o);
      INFO(Msg(st.status().message()));
      REQUIRE(st.ok());
      uint64_t chain_bytes = FileSize(delta[0]) + FileSize(delta[1]);
      WARN(s.name << " " << s.tags[0] << "->" << s.tags[2] << ": composed " << FileSize(d13) << " bytes, chain "
                  << chain_bytes << ", chained patches " << Files(*st, "delta/chain"));
      CHECK(FileSize(d13) <= chain_bytes);
      std::string out = tmp.path() + "/out.cdimg";
      auto ps = TryPatch(img[0], d13, out, kLevel);
      INFO(Msg(ps.status().message()));
      REQUIRE(ps.ok());
      CHECK(ReadAll(out) == ReadAll(img[2]));
      if (img.size() > 3) {  // a composed delta composed again
        std::string d14 = tmp.path() + "/d14.cdimg";
        auto st2 = Compose(img[0], d13, delta[2], d14, o);
        INFO(Msg(st2.status().message()));
        REQUIRE(st2.ok());
        CHECK(FileSize(d14) <= FileSize(d13) + FileSize(delta[2]));
        REQUIRE(TryPatch(img[0], d14, out, kLevel).ok());
        CHECK(ReadAll(out) == ReadAll(img[3]));
      }
    }
  }
}
