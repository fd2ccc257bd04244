// diff / patch / merge on synthetic images converted from OCI layouts:
// round trips to convert's exact bytes, base selection (renames, dedup),
// merge size and correctness, delta chains, bad input, determinism.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>

#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/deflate.h"
#include "d4c/base/strcat.h"
#include "oci_fixture.h"

using namespace d4c;
using oci_test::LayerBuilder;
using oci_test::ReadAll;
using oci_test::Edit;
using oci_test::ScratchDir;
using oci_test::Text;

namespace {

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

DiffOptions Threads(int n, uint64_t memory_budget = DiffOptions{}.memory_budget) {
  DiffOptions o;
  o.threads = n;
  o.memory_budget = memory_budget;
  return o;
}

// Converts one layer into a full cdimg at dir/name.cdimg, the way ctr-cli does.
std::string Convert(const ScratchDir& dir, const std::string& name, const LayerBuilder& layer,
                    int level = ConvertOptions{}.zstd_level) {
  std::string layout = StrCat(dir.path(), "/oci-", name);
  REQUIRE(oci_test::WriteOciLayout(layout, {{name, {layer.Tar()}}}).ok());
  std::string out = StrCat(dir.path(), "/", name, ".cdimg");
  ConvertOptions co;
  co.threads = 2;
  co.zstd_level = level;
  auto st = ConvertImage(StrCat("oci:", layout, ":", name), out, co);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  return out;
}

std::unique_ptr<ImageChain> Open(const std::string& top, const std::vector<std::string>& bases = {}) {
  auto c = ImageChain::Open(top, bases);
  INFO(Msg(c.status().message()));
  REQUIRE(c.ok());
  return std::move(*c);
}

DeltaStats Diff(const std::string& a, const std::string& b, const std::string& out, DiffOptions o = {},
                const std::vector<std::string>& a_bases = {}) {
  auto old_chain = Open(a, a_bases);
  auto new_chain = Open(b);
  auto st = DiffImages(*old_chain, *new_chain, out, o);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  return *st;
}

// merge D1 (A→B) + D2 (B→C) at `out`, on A's image; must succeed.
DeltaStats Merge(const std::string& a, const std::string& d1, const std::string& d2, const std::string& out) {
  auto base = Open(a);
  auto st = MergeDeltas(*base, d1, d2, out, Threads(2));
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  return *st;
}

// At convert's level (the images here are converted at it) patch writes
// convert's very bytes, which most tests compare; the fast default level is
// tested on its own.
absl::StatusOr<DeltaStats> TryPatch(const std::string& a, const std::string& d, const std::string& out,
                                    const std::vector<std::string>& a_bases = {},
                                    int level = ConvertOptions{}.zstd_level) {
  auto base = Open(a, a_bases);
  PatchOptions o;
  o.threads = 2;
  o.zstd_level = level;
  o.meta_zstd_level = kConvertMetaLevel;
  return PatchImage(*base, d, out, o);
}

// Every entry and every file's bytes of `chain`'s top equal those of `want`.
void RequireSameTree(const ImageChain& chain, const std::string& want) {
  auto w = Open(want);
  const CdimgImage& got = chain.top();
  REQUIRE(got.header().image_id == w->top().header().image_id);
  REQUIRE(got.size() == w->top().size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO(got.PathAt(i));
    REQUIRE(got.EntryAt(i) == w->top().EntryAt(i));
    if (got.TypeAt(i) != EntryType::kRegular) continue;
    auto a = chain.ReadFile(i);
    auto b = w->ReadFile(i);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(*a == *b);
  }
}

// Image A and B of a typical update.
struct Pair {
  LayerBuilder a, b;
};

Pair TypicalUpdate() {
  std::string lib = Text(1, 4000), app = Text(2, 3000), cfg = Text(3, 20), gone = Text(4, 500);
  Pair p;
  p.a.Dir("usr").Dir("usr/lib").File("usr/lib/libapp.js", lib).File("usr/lib/app.js", app)
      .File("etc/app.conf", cfg).File("opt/old.txt", gone).File("empty", "").Symlink("bin", "usr/bin")
      .Hardlink("usr/lib/app-link.js", "usr/lib/app.js");
  p.b.Dir("usr").Dir("usr/lib").File("usr/lib/libapp.js", Edit(lib, 97, "v2 "))
      .File("usr/lib/app.js", Edit(app, 50, "// "))
      .File("etc/app.conf", cfg, 0600)  // metadata change only
      .File("opt/new.txt", Text(5, 300)).File("empty", "").Symlink("bin", "usr/local/bin")
      .Hardlink("usr/lib/app-link.js", "usr/lib/app.js");
  return p;
}

uint64_t BlobBytes(const DeltaStats& s, const std::string& key) {
  auto it = s.by_kind.find(key);
  return it == s.by_kind.end() ? 0 : it->second.blob_bytes;
}
// Files of a kind, stored alone or in a pack.
uint64_t Files(const DeltaStats& s, const std::string& key) {
  uint64_t n = 0;
  for (const std::string& k : {key, "packed " + key})
    if (auto it = s.by_kind.find(k); it != s.by_kind.end()) n += it->second.files;
  return n;
}
uint64_t DeltaFiles(const DeltaStats& s) {
  uint64_t n = 0;
  for (const auto& [k, b] : s.by_kind)
    if (k.rfind("delta/", 0) == 0 || k.rfind("packed delta/", 0) == 0) n += b.files;
  return n;
}

// D (a delta A -> B made on two threads) patched onto A gives B's cdimg, and
// a diff on one thread gives D's bytes.
void RequirePatchesToAndSameOnOneThread(const ScratchDir& tmp, const std::string& a, const std::string& b,
                                        const std::string& d) {
  std::string out = tmp.path() + "/b2.cdimg";
  REQUIRE(TryPatch(a, d, out).ok());
  CHECK(ReadAll(out) == ReadAll(b));
  std::string d1 = tmp.path() + "/d1.cdimg";
  Diff(a, b, d1, Threads(1));
  CHECK(ReadAll(d1) == ReadAll(d));
}

}  // namespace

TEST_CASE("diff then patch gives convert's exact bytes, for every codec", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  for (std::string codec : {"auto", "zstd", "xdelta3", "bsdiff", "relcopy", "auto-nopack", "xdelta3-nopack", "relcopy-nopack"}) {
    DYNAMIC_SECTION(codec) {
      DiffOptions o;
      bool nopack = codec.ends_with("-nopack");
      if (nopack) codec = codec.substr(0, codec.size() - 7);
      o.codec = *ParseCodecChoice(codec);
      o.pack_small_blobs = !nopack;
      std::string d = StrCat(tmp.path(), "/d-", codec, nopack ? "-nopack" : "", ".cdimg");
      DeltaStats s = Diff(a, b, d, o);
      CHECK(s.header.is_delta);
      CHECK(DeltaFiles(s) == 2);     // the two edited files
      CHECK(Files(s, "full") == 1);  // opt/new.txt
      CHECK(Files(s, "unchanged") == 1);
      CHECK(FileSize(d) < FileSize(b) / 4);
      if (codec != "auto") CHECK(Files(s, StrCat("delta/", codec)) == 2);
      CHECK((s.by_kind.count("packs") == 0) == nopack);
      std::string out = StrCat(tmp.path(), "/b-", codec, ".cdimg");
      auto ps = TryPatch(a, d, out);
      INFO(Msg(ps.status().message()));
      REQUIRE(ps.ok());
      CHECK(ps->header.image_id == s.header.image_id);
      REQUIRE(ReadAll(out) == ReadAll(b));
      RequireSameTree(*Open(d, {a}), b);
    }
  }
}

TEST_CASE("auto picks per file the smallest codec", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  uint64_t smallest = UINT64_MAX;
  for (std::string codec : {"zstd", "xdelta3", "bsdiff", "relcopy"}) {
    DiffOptions o;
    o.codec = *ParseCodecChoice(codec);
    DeltaStats s = Diff(a, b, StrCat(tmp.path(), "/d-", codec), o);
    smallest = std::min(smallest, s.header.blobs_length);
  }
  DeltaStats s = Diff(a, b, StrCat(tmp.path(), "/d-auto"), {});
  CHECK(s.header.blobs_length <= smallest);
}

// The stored blob of an entry (standalone, not packed).
std::string StoredBlob(const CdimgImage& img, const std::string& path) {
  Recipe r = img.RecipeAt(*img.Find(path));
  REQUIRE(!r.packed);
  auto blob = img.ReadBlob(r.blob);
  REQUIRE(blob.ok());
  return *blob;
}

TEST_CASE("diff copies B's own full blob instead of compressing again", "[delta]") {
  ScratchDir tmp;
  // Past a pack member's size, and unlike anything in A: stored whole.
  std::string fresh = Text(70, 3000), noise;
  uint32_t x = 3;
  for (int i = 0; i < 100000; ++i) noise.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 16));
  LayerBuilder la, lb;
  la.File("keep.txt", Text(71, 100)).File("noise", noise.substr(50000) + noise.substr(0, 50000));
  lb.File("keep.txt", Text(71, 100)).File("opt/fresh.txt", fresh).File("noise", noise);
  REQUIRE(fresh.size() > 64 * 1024);
  for (int level : {19, 3}) {
    DYNAMIC_SECTION("A and B converted at level " << level) {
      std::string a = Convert(tmp, StrCat("a", level), la, level);
      std::string b = Convert(tmp, StrCat("b", level), lb, level);
      std::string d = StrCat(tmp.path(), "/d", level, ".cdimg");
      DeltaStats s = Diff(a, b, d);  // diff's own level stays 19
      CHECK(Files(s, "full") == 1);
      auto delta = Open(d, {a});
      auto full_b = Open(b);
      // The very frame B stores: same bytes whatever level B was written at
      // (at 19 it is also what compressing again would give).
      CHECK(StoredBlob(delta->top(), "opt/fresh.txt") == StoredBlob(full_b->top(), "opt/fresh.txt"));
      if (level == 19) {
        auto again = CompressFullBlob(fresh, 19);
        REQUIRE(again.ok());
        CHECK(StoredBlob(delta->top(), "opt/fresh.txt") == *again);
      }
      // ReadFile hands out the frame it verified, and only for standalone full blobs.
      std::optional<std::string> frame;
      auto bytes = full_b->ReadFile(*full_b->top().Find("opt/fresh.txt"), &frame);
      REQUIRE(bytes.ok());
      CHECK(*bytes == fresh);
      REQUIRE(frame.has_value());
      CHECK(*frame == StoredBlob(full_b->top(), "opt/fresh.txt"));
      REQUIRE(delta->ReadFile(*delta->top().Find("noise"), &frame).ok());
      CHECK(!frame.has_value());  // a delta
      // patch at their level rebuilds B byte for byte
      auto base = Open(a);
      PatchOptions po;
      po.zstd_level = level;
      po.meta_zstd_level = kConvertMetaLevel;
      std::string out = StrCat(tmp.path(), "/b-again", level, ".cdimg");
      REQUIRE(PatchImage(*base, d, out, po).ok());
      CHECK(ReadAll(out) == ReadAll(b));
    }
  }
}

TEST_CASE("renamed and versioned paths are diffed against their old version", "[delta]") {
  ScratchDir tmp;
  std::string py = Text(10, 3000), js = Text(11, 3000), so = Text(12, 3000), moved = Text(13, 2000);
  LayerBuilder la, lb;
  la.File("usr/lib/python3.11/x.py", py).File("app/node_modules/pkg@1.2.3/index.js", js)
      .File("lib/libfoo.so.1.2", so).File("srv/a/b/data.txt", moved);
  lb.File("usr/lib/python3.12/x.py", Edit(py, 100, "#")).File("app/node_modules/pkg@1.2.4/index.js", Edit(js, 80, "/"))
      .File("lib/libfoo.so.1.3", Edit(so, 90, "!")).File("srv/c/b/data.txt", Edit(moved, 70, "~"));
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d = tmp.path() + "/d.cdimg";
  DeltaStats s = Diff(a, b, d);
  CHECK(DeltaFiles(s) == 4);
  CHECK(s.rename_bases == 4);
  CHECK(Files(s, "full") == 0);
  auto chain = Open(d, {a});
  auto old_img = Open(a);
  const CdimgImage& top = chain->top();
  for (auto [np, op] : std::vector<std::pair<std::string, std::string>>{
           {"usr/lib/python3.12/x.py", "usr/lib/python3.11/x.py"},
           {"lib/libfoo.so.1.3", "lib/libfoo.so.1.2"},
           {"srv/c/b/data.txt", "srv/a/b/data.txt"}}) {
    INFO(np);
    Recipe r = top.RecipeAt(*top.Find(np));
    REQUIRE(r.kind == Recipe::Kind::kDelta);
    CHECK(r.base == old_img->top().DigestAt(*old_img->top().Find(op)));
  }
  std::string out = tmp.path() + "/b2.cdimg";
  REQUIRE(TryPatch(a, d, out).ok());
  CHECK(ReadAll(out) == ReadAll(b));
}

TEST_CASE("a file renamed and changed at once is diffed against the file B dropped beside it", "[delta]") {
  ScratchDir tmp;
  // internal/cli.mjs becomes internal/legacy-cli.mjs, edited; a content-hashed
  // chunk is renamed and edited; an unrelated file of the same directory and
  // extension that B dropped is no base, nor is one that B keeps.
  std::string cli = Text(50, 4000), chunk = Text(51, 3000), kept = Text(52, 3000);
  LayerBuilder la, lb;
  la.File("app/internal/cli.mjs", cli).File("app/assets/chunk-3f2a9c.js", chunk)
      .File("app/assets/chunk-kept.js", kept).File("app/misc/old.txt", Text(53, 3000));
  lb.File("app/internal/legacy-cli.mjs", Edit(cli, 90, "//"))
      .File("app/assets/chunk-b71e04.js", Edit(chunk, 70, ";"))
      .File("app/assets/chunk-kept.js", kept)
      .File("app/misc/new.txt", Text(54, 3000));  // shares nothing with old.txt
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d = tmp.path() + "/d.cdimg";
  DeltaStats s = Diff(a, b, d);
  CHECK(s.rename_bases == 2);
  auto chain = Open(d, {a});
  auto old_img = Open(a);
  const CdimgImage& top = chain->top();
  for (auto [np, op] : std::vector<std::pair<std::string, std::string>>{
           {"app/internal/legacy-cli.mjs", "app/internal/cli.mjs"},
           {"app/assets/chunk-b71e04.js", "app/assets/chunk-3f2a9c.js"}}) {
    INFO(np);
    Recipe r = top.RecipeAt(*top.Find(np));
    REQUIRE(r.kind == Recipe::Kind::kDelta);
    CHECK(r.base == old_img->top().DigestAt(*old_img->top().Find(op)));
    CHECK(r.blob.length < 1000);  // a few edits of a 4000-line file
  }
  CHECK(top.RecipeAt(*top.Find("app/misc/new.txt")).kind == Recipe::Kind::kFull);
  RequireSameTree(*chain, b);
  std::string out = tmp.path() + "/b2.cdimg";
  REQUIRE(TryPatch(a, d, out).ok());
  CHECK(ReadAll(out) == ReadAll(b));

  SECTION("merge: changed A→B, renamed and changed B→C, re-diffed against A's file") {
    LayerBuilder l1, l2;
    l1.File("app/internal/cli.mjs", Edit(cli, 50, "B"));
    l2.File("app/internal/legacy-cli.mjs", Edit(Edit(cli, 50, "B"), 90, "C"));
    std::string a1 = Convert(tmp, "a1", la), b1 = Convert(tmp, "b1", l1), c1 = Convert(tmp, "c1", l2);
    std::string d1 = tmp.path() + "/m1.cdimg", d2 = tmp.path() + "/m2.cdimg", m = tmp.path() + "/m.cdimg";
    Diff(a1, b1, d1);
    Diff(b1, c1, d2);
    Merge(a1, d1, d2, m);
    auto base = Open(a1);
    auto mc = Open(m, {a1});
    Recipe r = mc->top().RecipeAt(*mc->top().Find("app/internal/legacy-cli.mjs"));
    REQUIRE(r.kind == Recipe::Kind::kDelta);
    CHECK(r.base == base->top().DigestAt(*base->top().Find("app/internal/cli.mjs")));
    RequireSameTree(*mc, c1);
  }
}

TEST_CASE("a new file no name leads to is diffed against the file of A that holds its content", "[delta]") {
  ScratchDir tmp;
  // A module split out of a bundle that B keeps (edited), in another
  // directory with another name; a notices file cut from a licence with
  // another extension; a new file that shares nothing is stored whole.
  std::string bundle = Text(70, 6000), license = Text(71, 3000), other = Text(72, 3000);
  std::string split = Edit(bundle.substr(bundle.size() / 4, bundle.size() / 3), 60, "//") + Text(73, 100);
  LayerBuilder la, lb;
  la.File("dist/index.mjs", bundle).File("LICENSE", license).File("lib/other.js", other);
  lb.File("dist/index.mjs", Edit(bundle, 80, ";"))
      .File("LICENSE", "MIT\n")
      .File("internal/experimental-cli-9f3a.mjs", split)
      .File("THIRD-PARTY-NOTICES.md", Edit(license, 50, "#"))
      .File("lib/other.js", other)
      .File("misc/new.txt", Text(74, 3000));
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d = tmp.path() + "/d.cdimg";
  DeltaStats s = Diff(a, b, d, Threads(2));
  auto chain = Open(d, {a});
  auto old_img = Open(a);
  const CdimgImage& top = chain->top();
  for (auto [np, op] : std::vector<std::pair<std::string, std::string>>{
           {"internal/experimental-cli-9f3a.mjs", "dist/index.mjs"}, {"THIRD-PARTY-NOTICES.md", "LICENSE"}}) {
    INFO(np);
    Recipe r = top.RecipeAt(*top.Find(np));
    REQUIRE(r.kind == Recipe::Kind::kDelta);
    CHECK(r.base == old_img->top().DigestAt(*old_img->top().Find(op)));
    CHECK(r.blob.length * 20 < top.SizeAt(*top.Find(np)));  // a few edits and 100 new lines
  }
  CHECK(top.RecipeAt(*top.Find("misc/new.txt")).kind == Recipe::Kind::kFull);
  CHECK(s.rename_bases == 2);
  RequireSameTree(*chain, b);
  RequirePatchesToAndSameOnOneThread(tmp, a, b, d);
}

TEST_CASE("a file whose new version follows its old twin is diffed against that twin", "[delta]") {
  ScratchDir tmp;
  // A bundle ships one module in two wrappers minified apart (flow.js,
  // flow.mjs). B's flow.js took the names A's flow.mjs had: A's flow.mjs
  // holds it, A's flow.js does not. lib/util.js changed on its own: its
  // base stays the file of its path, though util.cjs sits beside it.
  std::string js = Text(90, 4000), mjs = Text(91, 4000), util = Text(92, 3000), cjs = Text(93, 3000);
  LayerBuilder la, lb;
  la.File("plugins/flow.js", js).File("plugins/flow.mjs", mjs).File("lib/util.js", util).File("lib/util.cjs", cjs);
  lb.File("plugins/flow.js", Edit(mjs, 70, "//"))
      .File("plugins/flow.mjs", Edit(mjs, 90, ";"))
      .File("lib/util.js", Edit(util, 60, "#"))
      .File("lib/util.cjs", cjs);
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d = tmp.path() + "/d.cdimg";
  Diff(a, b, d, Threads(2));
  auto chain = Open(d, {a});
  auto old_img = Open(a);
  const CdimgImage& top = chain->top();
  const CdimgImage& old_top = old_img->top();
  for (auto [np, op] : std::vector<std::pair<std::string, std::string>>{{"plugins/flow.js", "plugins/flow.mjs"},
                                                                       {"plugins/flow.mjs", "plugins/flow.mjs"},
                                                                       {"lib/util.js", "lib/util.js"}}) {
    INFO(np);
    Recipe r = top.RecipeAt(*top.Find(np));
    REQUIRE(r.kind == Recipe::Kind::kDelta);
    CHECK(r.base == old_top.DigestAt(*old_top.Find(op)));
    CHECK(r.blob.length * 20 < top.SizeAt(*top.Find(np)));  // a few edits
  }
  RequireSameTree(*chain, b);
  RequirePatchesToAndSameOnOneThread(tmp, a, b, d);
}

TEST_CASE("moved and duplicated files cost no bytes", "[delta]") {
  ScratchDir tmp;
  std::string big = Text(20, 20000), other = Text(21, 100);
  LayerBuilder la, lb;
  la.File("data/big.bin", big).File("keep.txt", other);
  lb.File("moved/elsewhere.bin", big).File("copy/of/big.bin", big).File("keep.txt", other).File("k2.txt", other);
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d = tmp.path() + "/d.cdimg";
  DeltaStats s = Diff(a, b, d);
  CHECK(s.header.blobs_length == 0);
  CHECK(BlobBytes(s, "dedup") == 0);
  CHECK(Files(s, "dedup") == 3);
  CHECK(Files(s, "unchanged") == 1);
  CHECK(FileSize(d) < 2048);
  std::string out = tmp.path() + "/b2.cdimg";
  REQUIRE(TryPatch(a, d, out).ok());
  CHECK(ReadAll(out) == ReadAll(b));
}

TEST_CASE("small files and incompressible changes are stored whole", "[delta]") {
  ScratchDir tmp;
  std::string noise_a, noise_b;
  uint32_t x = 7;
  for (int i = 0; i < 50000; ++i) {
    x = x * 1103515245u + 12345u;
    noise_a.push_back(static_cast<char>(x >> 16));
    x = x * 1103515245u + 12345u;
    noise_b.push_back(static_cast<char>(x >> 16));
  }
  LayerBuilder la, lb;
  la.File("tiny", "abc").File("noise", noise_a);
  lb.File("tiny", "abd").File("noise", noise_b);
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  DeltaStats s = Diff(a, b, tmp.path() + "/d.cdimg");
  CHECK(Files(s, "full") == 2);
  CHECK(DeltaFiles(s) == 0);
}

TEST_CASE("merge A→B + B→C equals A→C and is not larger than both", "[delta]") {
  ScratchDir tmp;
  std::string twice = Text(30, 4000), once1 = Text(31, 3000), once2 = Text(32, 3000), same = Text(33, 1000);
  LayerBuilder la, lb, lc;
  la.File("twice.js", twice).File("once1.js", once1).File("once2.js", once2).File("same.txt", same)
      .File("dropped-later.txt", Text(34, 500));
  lb.File("twice.js", Edit(twice, 60, "B ")).File("once1.js", Edit(once1, 40, "B ")).File("once2.js", once2)
      .File("same.txt", same).File("dropped-later.txt", Text(35, 500)).File("added-in-b.txt", Text(36, 800));
  lc.File("twice.js", Edit(Edit(twice, 60, "B "), 70, "C ")).File("once1.js", Edit(once1, 40, "B "))
      .File("once2.js", Edit(once2, 45, "C ")).File("same.txt", same)
      .File("added-in-b.txt", Edit(Text(36, 800), 30, "C ")).File("added-in-c.txt", Text(37, 200));
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb), c = Convert(tmp, "c", lc);
  std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg", d = tmp.path() + "/d.cdimg";
  Diff(a, b, d1);
  Diff(b, c, d2);
  auto base = Open(a);
  auto st = MergeDeltas(*base, d1, d2, d, Threads(2));
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  CHECK(st->header.parent_id == base->top().header().image_id);
  CHECK(st->reencoded >= 2);  // twice.js, added-in-b.txt
  CHECK(FileSize(d) <= FileSize(d1) + FileSize(d2));
  std::string out = tmp.path() + "/c2.cdimg";
  REQUIRE(TryPatch(a, d, out).ok());
  CHECK(ReadAll(out) == ReadAll(c));

  SECTION("deterministic across thread counts") {
    std::string again = tmp.path() + "/d-again.cdimg";
    REQUIRE(MergeDeltas(*base, d1, d2, again, Threads(1)).ok());
    CHECK(ReadAll(again) == ReadAll(d));
  }
  SECTION("deltas in the wrong order are refused") {
    auto bad = MergeDeltas(*base, d2, d1, tmp.path() + "/x.cdimg", {});
    REQUIRE(!bad.ok());
    CHECK_THAT(Msg(bad.status().message()), Catch::Contains("wrong base"));
  }
  SECTION("merge finds A next to the deltas") {
    auto found = FindAncestors(d1, {}, {tmp.path()});
    REQUIRE(found.ok());
    REQUIRE(found->size() == 1);
    CHECK(CdimgImage::ReadHeader(found->front())->image_id == base->top().header().image_id);
  }
}

TEST_CASE("a chain of three deltas reads back every version", "[delta]") {
  ScratchDir tmp;
  std::vector<std::string> texts{Text(40, 3000), Text(41, 2000)};
  std::vector<std::string> imgs;
  for (int v = 0; v < 4; ++v) {
    LayerBuilder l;
    std::string t0 = texts[0], t1 = texts[1];
    for (int k = 0; k < v; ++k) t0 = Edit(t0, 50 + k, StrCat("v", k, " "));
    l.File("lib/main.js", t0).File(StrCat("pkg@1.0.", v, "/x.js"), Edit(t1, 90, StrCat(v)))
        .File(StrCat("added-", v), Text(50 + v, 100));
    imgs.push_back(Convert(tmp, StrCat("v", v), l));
  }
  // D1 = v0→v1; D2 = v1→v2 diffed against v1 *as the chain v0+D1*; same for D3.
  std::vector<std::string> deltas;
  std::vector<std::string> chain_paths{imgs[0]};
  for (int v = 1; v < 4; ++v) {
    std::string d = StrCat(tmp.path(), "/d", v, ".cdimg");
    std::string old_top = v == 1 ? imgs[0] : deltas.back();
    Diff(old_top, imgs[v], d, {}, chain_paths);
    chain_paths.push_back(d);
    deltas.push_back(d);
  }
  std::vector<std::string> bases{imgs[0], deltas[0], deltas[1]};
  auto chain = Open(deltas[2], bases);
  REQUIRE(chain->depth() == 4);
  RequireSameTree(*chain, imgs[3]);
  // patch from the chain gives v3's exact bytes too
  std::string out = tmp.path() + "/v3.cdimg";
  auto ps = TryPatch(deltas[1], deltas[2], out, {imgs[0], deltas[0]});
  INFO(Msg(ps.status().message()));
  REQUIRE(ps.ok());
  CHECK(ReadAll(out) == ReadAll(imgs[3]));
  auto found = FindAncestors(deltas[2], {}, {tmp.path()});
  REQUIRE(found.ok());
  CHECK(found->size() == 3);
}

TEST_CASE("patch against the wrong base names both image ids", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  std::string d = tmp.path() + "/d.cdimg";
  Diff(a, b, d);
  auto st = TryPatch(b, d, tmp.path() + "/x.cdimg");
  REQUIRE(!st.ok());
  std::string msg = Msg(st.status().message());
  CHECK_THAT(msg, Catch::Contains(DigestString(CdimgImage::ReadHeader(a)->image_id)));
  CHECK_THAT(msg, Catch::Contains(DigestString(CdimgImage::ReadHeader(b)->image_id)));
  CHECK_THAT(msg, Catch::Contains("wrong base"));
  CHECK(!std::filesystem::exists(tmp.path() + "/x.cdimg"));
}

// Bytes zstd cannot shrink much: a blob of several copy pieces (1 MiB).
std::string Noise(uint32_t seed, size_t n) {
  std::string out;
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 16));
  return out;
}

TEST_CASE("patch at the fast default level: B's id and bytes, unchanged blobs copied as stored", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string big = Noise(7, 3 << 20), grows = Text(81, 20000), grown = Edit(grows, 40, "++ ");
  p.a.Dir("srv").File("srv/big.bin", big).File("srv/grows.txt", grows);
  p.b.Dir("srv").File("srv/big.bin", big).File("srv/grows.txt", grown);
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  std::string d = tmp.path() + "/d.cdimg";
  Diff(a, b, d);
  PatchOptions o;
  CHECK(o.zstd_level == kPatchFastLevel);
  o.threads = 2;
  std::string out = tmp.path() + "/b-fast.cdimg";
  auto st = PatchImage(*Open(a), d, out, o);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  CHECK(st->header.image_id == CdimgImage::ReadHeader(b)->image_id);
  RequireSameTree(*Open(out), b);
  auto got = Open(out), img_a = Open(a), img_b = Open(b);
  // Unchanged content: A's stored frame, byte for byte (several pieces long).
  REQUIRE(StoredBlob(img_a->top(), "srv/big.bin").size() > (2u << 20));
  CHECK(StoredBlob(got->top(), "srv/big.bin") == StoredBlob(img_a->top(), "srv/big.bin"));
  CHECK(StoredBlob(got->top(), "etc/app.conf") == StoredBlob(img_a->top(), "etc/app.conf"));
  // Changed content: compressed anew at the fast level, so not convert's bytes.
  auto fast = CompressFullBlob(grown, kPatchFastLevel);
  REQUIRE(fast.ok());
  CHECK(StoredBlob(got->top(), "srv/grows.txt") == *fast);
  CHECK(StoredBlob(img_b->top(), "srv/grows.txt") != *fast);
  CHECK(ReadAll(out) != ReadAll(b));
  CHECK(st->by_kind.at("full/copied").files == 2);       // etc/app.conf, srv/big.bin
  CHECK(st->by_kind.at("full/copied").content_bytes > big.size());
  CHECK(st->by_kind.at("full/rebuilt").files == 4);      // the three edited files, opt/new.txt (packed in the delta)
  // At convert's level the same delta gives convert's very bytes.
  std::string out19 = tmp.path() + "/b-19.cdimg";
  REQUIRE(TryPatch(a, d, out19).ok());
  CHECK(ReadAll(out19) == ReadAll(b));

  SECTION("a corrupt blob of the base fails the copy naming the file; no output") {
    Recipe r = img_a->top().RecipeAt(*img_a->top().Find("srv/big.bin"));
    std::string bytes = ReadAll(a);
    int failures = 0;
    for (uint64_t at : {uint64_t{100}, r.blob.length / 2, r.blob.length - 3}) {
      std::string bad_bytes = bytes;
      bad_bytes[img_a->top().header().blobs_offset + r.blob.offset + at] ^= 0x10;
      std::string bad = tmp.path() + "/bad-a.cdimg", x = tmp.path() + "/x.cdimg";
      std::ofstream(bad, std::ios::binary) << bad_bytes;
      auto bst = PatchImage(*Open(bad), d, x, o);
      INFO(at);
      REQUIRE(!bst.ok());
      ++failures;
      CHECK_THAT(Msg(bst.status().message()), Catch::Contains("bad-a.cdimg: /srv/big.bin: "));
      CHECK(!std::filesystem::exists(x));
      // the writer had copied the blob before its check failed: its temp file is gone too
      for (const auto& f : std::filesystem::directory_iterator(tmp.path()))
        CHECK(f.path().filename().string().rfind("x.cdimg", 0) != 0);
    }
    CHECK(failures == 3);
  }
}

// A changed file zstd compresses with its workers (over
// kFullBlobWorkersAbove) is compressed into patch's spool as a stream, never
// held whole: the same bytes as compressing it whole, at any level.
TEST_CASE("patch streams a big rebuilt file into its spool: the bytes of compressing it whole", "[delta]") {
  ScratchDir tmp;
  std::string big = Text(82, 150000), edited = Edit(big, 5000, "-- changed --");
  REQUIRE(edited.size() > kFullBlobWorkersAbove);
  LayerBuilder la, lb;
  la.Dir("srv").File("srv/big.txt", big).File("srv/small.txt", "v1");
  lb.Dir("srv").File("srv/big.txt", edited).File("srv/small.txt", "v2");
  std::string a = Convert(tmp, "a", la, 3), b = Convert(tmp, "b", lb, 3);
  std::string d = tmp.path() + "/d.cdimg";
  DiffOptions o;
  o.codec = CodecId::kXdelta3;  // the quickest on 9 MB
  Diff(a, b, d, o);
  // At convert's level: convert's very bytes.
  std::string out3 = tmp.path() + "/b-3.cdimg";
  auto st = TryPatch(a, d, out3, {}, 3);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  CHECK(st->by_kind.at("full/rebuilt").files == 2);
  CHECK(ReadAll(out3) == ReadAll(b));
  // At the fast level: the blob CompressFullBlob gives.
  PatchOptions fast;
  fast.threads = 2;
  std::string out1 = tmp.path() + "/b-fast.cdimg";
  REQUIRE(PatchImage(*Open(a), d, out1, fast).ok());
  auto got = Open(out1);
  RequireSameTree(*got, b);
  auto want = CompressFullBlob(edited, kPatchFastLevel);
  REQUIRE(want.ok());
  CHECK(StoredBlob(got->top(), "srv/big.txt") == *want);
}

// Some bits of a codec's framing do not matter (they decode to the same
// bytes); every other flip must fail, naming the file. Never wrong bytes.
TEST_CASE("a flipped bit in a delta's blob fails patch naming the file", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  std::string d = tmp.path() + "/d.cdimg";
  Diff(a, b, d);
  auto chain = Open(d, {a});
  const CdimgImage& top = chain->top();
  const uint64_t blobs_at = top.header().blobs_offset;
  const std::string good = ReadAll(d), want = ReadAll(b);
  for (std::string path : {"usr/lib/libapp.js", "opt/new.txt"}) {
    DYNAMIC_SECTION(path) {
      Recipe r = top.RecipeAt(*top.Find(path));
      REQUIRE((r.kind == Recipe::Kind::kDelta || r.kind == Recipe::Kind::kFull));
      // a packed entry's bytes are its pack (shared with other entries); the
      // last pack of a delta lies inside the meta frame (compact meta)
      BlobRef where = r.packed ? top.PackBlob(r.pack) : r.blob;
      const bool inline_pack = r.packed && where.length == 0;
      if (inline_pack) where = {top.header().blobs_length, top.header().meta_length};
      int failures = 0;
      for (uint64_t at = 0; at < where.length; at += 1 + where.length / 24) {
        std::string bytes = good;
        bytes[blobs_at + where.offset + at] ^= static_cast<char>(1 << (at % 8));
        std::string bad = tmp.path() + "/bad.cdimg", out = tmp.path() + "/x.cdimg";
        std::ofstream(bad, std::ios::binary) << bytes;
        auto st = TryPatch(a, bad, out);
        INFO(StrCat(RecipeKindName(r.kind), " ", CodecName(r.codec), r.packed ? " pack" : " blob", " byte ", at,
                    " of ", where.length));
        if (st.ok()) {
          REQUIRE(ReadAll(out) == want);
          std::filesystem::remove(out);
          continue;
        }
        ++failures;
        if (inline_pack) CHECK_THAT(Msg(st.status().message()), Catch::Contains("bad.cdimg: not a valid cdimg"));
        else if (r.packed) CHECK_THAT(Msg(st.status().message()), Catch::Contains("bad.cdimg: /"));
        else CHECK_THAT(Msg(st.status().message()), Catch::Contains("/" + path));
        CHECK(!std::filesystem::exists(out));
      }
      CHECK(failures > 0);
    }
  }
}

// Bytes all over a small delta (lead, packs, config+index, tail): patch either
// fails with an error naming the delta or writes exactly B.
TEST_CASE("a flipped bit anywhere in a packed delta never gives wrong bytes", "[delta]") {
  ScratchDir tmp;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  std::string d = tmp.path() + "/d.cdimg";
  DeltaStats s = Diff(a, b, d);
  REQUIRE(s.by_kind.count("packs") == 1);
  const std::string good = ReadAll(d), want = ReadAll(b);
  std::string bad = tmp.path() + "/bad.cdimg", out = tmp.path() + "/x.cdimg";
  // lead and tail whole, the rest sampled (each patch costs a level-19 compression)
  std::vector<size_t> positions;
  for (size_t at = 0; at < good.size(); ++at)
    if (at < 10 || at + 80 > good.size() || at % 11 == 0) positions.push_back(at);
  int failures = 0;
  for (size_t at : positions) {
    std::string bytes = good;
    bytes[at] ^= static_cast<char>(1 << (at % 8));
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
    auto st = TryPatch(a, bad, out);
    INFO(StrCat("byte ", at, " of ", good.size()));
    if (st.ok()) {
      REQUIRE(ReadAll(out) == want);
      std::filesystem::remove(out);
      continue;
    }
    ++failures;
    CHECK_THAT(Msg(st.status().message()), Catch::Contains("bad.cdimg"));
    CHECK(!std::filesystem::exists(out));
  }
  CHECK(failures > static_cast<int>(positions.size()) * 9 / 10);
}

TEST_CASE("diff output does not depend on the thread count", "[delta]") {
  ScratchDir tmp;
  LayerBuilder la, lb;
  for (int i = 0; i < 24; ++i) {
    std::string t = Text(60 + i, 200 + 150 * i);
    la.File(StrCat("f", i, ".txt"), t);
    lb.File(StrCat("f", i, ".txt"), i % 3 ? Edit(t, 20 + i, "x") : t);
  }
  // Files with 2 KiB of new random bytes: packed patches filling several
  // packs, compressed a window at a time by the writer's threads.
  auto noise = [](uint32_t seed, size_t n) {
    std::string out(n, '\0');
    uint32_t x = seed * 2654435761u + 7;
    for (char& c : out) c = static_cast<char>((x = x * 1103515245u + 12345u) >> 24);
    return out;
  };
  for (int i = 0; i < 600; ++i) {
    la.File(StrCat("p", i, ".bin"), Text(1000 + i, 60) + noise(2000 + i, 2048));
    lb.File(StrCat("p", i, ".bin"), Text(1000 + i, 60) + noise(3000 + i, 2048));
  }
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb);
  std::string d1 = tmp.path() + "/d1", d2 = tmp.path() + "/d2", d3 = tmp.path() + "/d3";
  Diff(a, b, d1, Threads(1));
  Diff(a, b, d2, Threads(2));
  Diff(a, b, d3, Threads(2, 1));  // one job at a time
  CHECK(ReadAll(d1) == ReadAll(d2));
  CHECK(ReadAll(d1) == ReadAll(d3));
  auto d = Open(d1, {a});
  CHECK(d->top().pack_count() > 4);  // more than one window of two threads
  RequireSameTree(*d, b);
}

TEST_CASE("FindAncestors says which image is missing", "[delta]") {
  ScratchDir tmp, other;
  Pair p = TypicalUpdate();
  std::string a = Convert(tmp, "a", p.a), b = Convert(tmp, "b", p.b);
  std::string d = other.path() + "/d.cdimg";
  Diff(a, b, d);
  auto none = FindAncestors(d, {}, {other.path()});
  REQUIRE(!none.ok());
  CHECK_THAT(Msg(none.status().message()), Catch::Contains(DigestString(CdimgImage::ReadHeader(a)->image_id)));
  auto given = FindAncestors(d, {a}, {});
  REQUIRE(given.ok());
  CHECK(*given == std::vector<std::string>{a});
  CHECK(FindAncestors(a, {}, {})->empty());
}

TEST_CASE("the ancestor search follows only the chain it needs", "[delta]") {
  // dir: a.cdimg (A, full) and d1.cdimg (A→B), the chain patch needs below
  // d1; beside them a delta X→A (same image id as a.cdimg, sorted first, its
  // parent X absent), a delta X→B, a garbage file and a truncated copy of A.
  ScratchDir dir, other;
  Pair p = TypicalUpdate();
  LayerBuilder lc = p.b;
  lc.File("opt/c.txt", Text(6, 200));
  LayerBuilder lx;
  lx.File("x.txt", Text(7, 100));
  std::string a = Convert(dir, "a", p.a);
  std::string b = Convert(other, "b", p.b), c = Convert(other, "c", lc), x = Convert(other, "x", lx);
  std::string d1 = dir.path() + "/d1.cdimg", d2 = other.path() + "/d2.cdimg";
  Diff(a, b, d1);
  Diff(b, c, d2);
  Diff(x, a, dir.path() + "/0-a-from-x.cdimg");
  Diff(x, b, dir.path() + "/1-b-from-x.cdimg");
  {
    std::ofstream(dir.path() + "/00-garbage.cdimg") << "not a cdimg";
    std::string whole = ReadAll(a);
    std::ofstream(dir.path() + "/01-truncated.cdimg") << whole.substr(0, whole.size() / 2);
  }
  std::string a_id = DigestString(CdimgImage::ReadHeader(a)->image_id);
  std::string x_id = DigestString(CdimgImage::ReadHeader(x)->image_id);

  auto found = FindAncestors(d1, {}, {dir.path()});
  INFO(Msg(found.status().message()));
  REQUIRE(found.ok());
  CHECK(*found == std::vector<std::string>{a});
  std::string out = other.path() + "/c2.cdimg";
  auto ps = TryPatch(d1, d2, out, *found);
  INFO(Msg(ps.status().message()));
  REQUIRE(ps.ok());
  CHECK(ReadAll(out) == ReadAll(c));
  // A --base file that is not on the chain is ignored as well.
  auto given = FindAncestors(d1, {dir.path() + "/1-b-from-x.cdimg", dir.path() + "/00-garbage.cdimg"},
                             {dir.path()});
  REQUIRE(given.ok());
  CHECK(*given == std::vector<std::string>{a});

  SECTION("a missing real ancestor is named, with where the search looked and the fix") {
    std::filesystem::rename(a, other.path() + "/a-moved.cdimg");
    auto missing = FindAncestors(d1, {}, {dir.path()});
    REQUIRE(!missing.ok());
    CHECK(missing.status().code() == absl::StatusCode::kNotFound);
    std::string msg = Msg(missing.status().message());
    CHECK_THAT(msg, Catch::StartsWith(d1 + ": needs its parent image " + a_id));
    CHECK_THAT(msg, Catch::Contains(dir.path() + "/0-a-from-x.cdimg needs image " + x_id));
    CHECK_THAT(msg, Catch::Contains("*.cdimg files in " + dir.path()));
    CHECK_THAT(msg, Catch::Contains("pass the missing cdimg with --base"));
  }
}

namespace {

// A gzip file of `raw` made by zlib at level 9 (as many tools do), or with
// `stored` a stream of stored blocks that no recipe of the gzip codec
// reproduces.
std::string GzFile(std::string_view raw, bool stored = false) {
  std::string stream;
  if (stored) {
    for (size_t at = 0; at < raw.size() || at == 0; at += 65535) {
      size_t n = std::min<size_t>(65535, raw.size() - at);
      bool last = at + n >= raw.size();
      stream += {static_cast<char>(last ? 1 : 0), static_cast<char>(n & 0xff), static_cast<char>(n >> 8),
                 static_cast<char>(~n & 0xff), static_cast<char>((~n >> 8) & 0xff)};
      stream += raw.substr(at, n);
      if (last) break;
    }
  } else {
    auto z = deflate::Zlib(raw, {9, 8}, UINT32_MAX);
    REQUIRE(z.ok());
    stream = *z;
  }
  std::string g = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 2, 3};
  g += stream;
  uint32_t crc = deflate::Crc32(raw), n = static_cast<uint32_t>(raw.size());
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(crc >> (8 * i)));
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(n >> (8 * i)));
  return g;
}

}  // namespace

TEST_CASE("gzip files get the gzip codec where it rebuilds them, patch, merge and reads are exact", "[delta]") {
  ScratchDir tmp;
  std::string log = Text(40, 3000), man = Text(41, 2000), other = Text(42, 3000);
  std::string log_b = Text(43, 20) + log, log_c = Text(44, 20) + log_b;
  LayerBuilder la, lb, lc;
  la.File("changelog.gz", GzFile(log)).File("man.gz", GzFile(man, true)).File("plain.txt", other);
  lb.File("changelog.gz", GzFile(log_b)).File("man.gz", GzFile(Edit(man, 50, "B "), true))
      .File("plain.txt", Edit(other, 40, "B "));
  lc.File("changelog.gz", GzFile(log_c)).File("man.gz", GzFile(Edit(man, 50, "B "), true))
      .File("plain.txt", Edit(other, 40, "B "));
  std::string a = Convert(tmp, "a", la), b = Convert(tmp, "b", lb), c = Convert(tmp, "c", lc);
  for (bool pack : {true, false}) {
    DYNAMIC_SECTION("packs " << pack) {
      DiffOptions o;
      o.pack_small_blobs = pack;
      std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg";
      DeltaStats s = Diff(a, b, d1, o);
      CHECK(Files(s, "delta/gzip") == 1);  // changelog.gz; man.gz has no recipe, plain.txt is not gzip
      CHECK(DeltaFiles(s) + Files(s, "full") == 3);
      auto img = Open(d1, {a});
      Recipe r = img->top().RecipeAt(*img->top().Find("changelog.gz"));
      CHECK(r.codec == CodecId::kGzip);
      CHECK(r.packed == pack);
      // The inflated text gained 20 lines: the patch is far below the file.
      CHECK(BlobBytes(s, pack ? "packed delta/gzip" : "delta/gzip") * 10 < GzFile(log_b).size());
      std::string out = tmp.path() + "/b2.cdimg";
      REQUIRE(TryPatch(a, d1, out).ok());
      CHECK(ReadAll(out) == ReadAll(b));
      RequireSameTree(*Open(d1, {a}), b);
      // --codec gzip: the gzip codec where it applies, the file whole elsewhere.
      DiffOptions only = o;
      only.codec = CodecId::kGzip;
      std::string d3 = tmp.path() + "/only.cdimg";
      DeltaStats s3 = Diff(a, b, d3, only);
      CHECK(Files(s3, "delta/gzip") == 1);
      CHECK(DeltaFiles(s3) == 1);
      CHECK(Files(s3, "full") == 2);
      REQUIRE(TryPatch(a, d3, out).ok());
      CHECK(ReadAll(out) == ReadAll(b));
      // Merge keeps gzip entries decodable.
      Diff(b, c, d2, o);
      std::string d = tmp.path() + "/d.cdimg";
      Merge(a, d1, d2, d);
      std::string c2 = tmp.path() + "/c2.cdimg";
      REQUIRE(TryPatch(a, d, c2).ok());
      CHECK(ReadAll(c2) == ReadAll(c));
    }
  }
}

// One module shipped twice (x.js and x.mjs, two wrappers of one code): each
// change shows in both, and x.mjs is diffed against B's own x.js.
TEST_CASE("twin files: a delta's base may be an earlier file of B itself", "[delta]") {
  ScratchDir tmp;
  auto js = [](const std::string& code) { return "(function (module) {\n" + code + "})(module);\n"; };
  auto mjs = [](const std::string& code) { return "var m = {};\n" + code + "export default m;\n"; };
  std::string core_a = Text(40, 3000);
  std::string core_b = Edit(core_a, 7, "B ") + Text(41, 1500);   // much that A lacks
  std::string core_c = Edit(core_b, 11, "C ") + Text(42, 1000);
  auto image = [&](const std::string& core) {
    LayerBuilder l;
    l.Dir("plugins").File("plugins/x.d.ts", Text(43, 40)).File("plugins/x.js", js(core))
        .File("plugins/x.mjs", mjs(core)).File("plugins/y.js", Text(44, 300));
    return l;
  };
  std::string a = Convert(tmp, "a", image(core_a)), b = Convert(tmp, "b", image(core_b)),
              c = Convert(tmp, "c", image(core_c));
  std::string d1 = tmp.path() + "/d1.cdimg", d2 = tmp.path() + "/d2.cdimg";
  Diff(a, b, d1);
  Diff(b, c, d2);

  auto index_of = [](const CdimgImage& img, const std::string& path) {
    for (size_t i = 0; i < img.size(); ++i)
      if (img.PathAt(i) == path) return i;
    FAIL("no entry " << path);
    return size_t{0};
  };
  for (auto [delta, bases, target] : {std::tuple{d1, std::vector<std::string>{a}, b},
                                      std::tuple{d2, std::vector<std::string>{a, d1}, c}}) {
    INFO(delta);
    auto chain = Open(delta, bases);
    const CdimgImage& top = chain->top();
    size_t x_js = index_of(top, "plugins/x.js"), x_mjs = index_of(top, "plugins/x.mjs");
    Recipe r_js = top.RecipeAt(x_js), r_mjs = top.RecipeAt(x_mjs);
    REQUIRE(r_mjs.kind == Recipe::Kind::kDelta);
    CHECK(r_mjs.base == top.DigestAt(x_js));  // B's own x.js, not A's x.mjs
    REQUIRE(r_js.kind == Recipe::Kind::kDelta);
    CHECK(r_mjs.blob.length * 4 < r_js.blob.length);  // the change is paid once
    RequireSameTree(*chain, target);  // ImageChain::ReadFile
  }

  std::string b2 = tmp.path() + "/b2.cdimg";
  REQUIRE(TryPatch(a, d1, b2).ok());
  CHECK(ReadAll(b2) == ReadAll(b));
  std::string c2 = tmp.path() + "/c2.cdimg";
  REQUIRE(TryPatch(b, d2, c2).ok());
  CHECK(ReadAll(c2) == ReadAll(c));

  SECTION("merge and compose of two such deltas patch onto A to C's bytes") {
    auto base = Open(a);
    std::string merged = tmp.path() + "/merged.cdimg", composed = tmp.path() + "/composed.cdimg";
    auto m = MergeDeltas(*base, d1, d2, merged, Threads(2));
    INFO(Msg(m.status().message()));
    REQUIRE(m.ok());
    {  // x.mjs changed twice: re-encoded against A and C's own x.js, paid once
      auto chain = Open(merged, {a});
      const CdimgImage& top = chain->top();
      size_t x_js = index_of(top, "plugins/x.js");
      Recipe r = top.RecipeAt(index_of(top, "plugins/x.mjs"));
      REQUIRE(r.kind == Recipe::Kind::kDelta);
      CHECK(r.base == top.DigestAt(x_js));
      CHECK(r.blob.length * 4 < top.RecipeAt(x_js).blob.length);
    }
    auto k = ComposeDeltas(*base, d1, d2, composed, Threads(2));
    INFO(Msg(k.status().message()));
    REQUIRE(k.ok());
    for (const std::string& d : {merged, composed}) {
      INFO(d);
      std::string out = d + ".patched";
      auto p = TryPatch(a, d, out);
      INFO(Msg(p.status().message()));
      REQUIRE(p.ok());
      CHECK(ReadAll(out) == ReadAll(c));
      RequireSameTree(*Open(d, {a}), c);
    }
  }
}
