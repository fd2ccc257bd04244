// cdimg writer/reader: round trips, lookups, determinism and hostile files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "d4c/cdimg.h"
#include "d4c/base/strcat.h"
#include "oci_fixture.h"

using namespace d4c;
using oci_test::ReadAll;

namespace {

std::string TempPath(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / StrCat("d4c-format-test-", getpid());
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

Entry Dir(std::string path, uint32_t mode = 0755) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kDirectory;
  e.mode = mode;
  return e;
}

Entry File(std::string path, const std::string& content, uint32_t mode = 0644) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kRegular;
  e.mode = mode;
  e.size = content.size();
  e.digest = Sha256(content);
  e.mtime_sec = 1700000000;
  e.mtime_nsec = 123456789;
  return e;
}

std::string Zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

void SortByPath(std::vector<Entry>* entries) {
  std::sort(entries->begin(), entries->end(), [](const Entry& x, const Entry& y) { return PathLess(x.path, y.path); });
}

// Recipes for `entries`: the empty recipe for an empty regular file, `f(e)`
// for every other regular file (f may change the entry).
template <class F>
std::vector<Recipe> RegularRecipes(std::vector<Entry>* entries, F f) {
  std::vector<Recipe> recipes(entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    Entry& e = (*entries)[i];
    if (e.type != EntryType::kRegular) continue;
    if (e.size == 0) recipes[i].kind = Recipe::Kind::kEmpty;
    else recipes[i] = f(e);
  }
  return recipes;
}

struct Built {
  std::vector<Entry> entries;
  std::map<std::string, std::string> content;
};

// A small tree exercising every entry type and field.
Built SampleTree() {
  Built b;
  b.entries.push_back(Dir(""));
  b.entries.push_back(Dir("bin"));
  b.content["bin/app"] = std::string(10000, 'x') + "tail";
  b.entries.push_back(File("bin/app", b.content["bin/app"], 04755));
  b.entries.back().xattrs = {{"security.capability", std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8)},
                             {"user.note", "hello"}};
  Entry link;
  link.path = "bin/app2";
  link.type = EntryType::kHardlink;
  link.link_target = "bin/app";
  b.entries.push_back(link);
  Entry sym;
  sym.path = "bin/sh";
  sym.type = EntryType::kSymlink;
  sym.mode = 0777;
  sym.link_target = "busybox";
  b.entries.push_back(sym);
  b.entries.push_back(Dir("bin-extra"));
  b.entries.push_back(Dir("dev"));
  Entry null;
  null.path = "dev/null";
  null.type = EntryType::kCharDevice;
  null.mode = 0666;
  null.dev_major = 1;
  null.dev_minor = 3;
  b.entries.push_back(null);
  Entry fifo;
  fifo.path = "dev/pipe";
  fifo.type = EntryType::kFifo;
  fifo.mode = 0600;
  b.entries.push_back(fifo);
  b.entries.push_back(File("empty", ""));
  b.content["empty"] = "";
  b.entries.push_back(Dir("tmp", 01777));
  b.content["tmp/\xff\xfe-latin1"] = "non-utf8 name";
  b.entries.push_back(File("tmp/\xff\xfe-latin1", b.content["tmp/\xff\xfe-latin1"]));
  SortByPath(&b.entries);
  return b;
}

std::string WriteSample(const Built& b, const std::string& name,
                        const std::string& config = R"({"architecture":"amd64"})") {
  std::string path = TempPath(name);
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(b.entries.size());
  for (size_t i = 0; i < b.entries.size(); ++i) {
    const Entry& e = b.entries[i];
    if (e.type != EntryType::kRegular) continue;
    if (e.size == 0) {
      recipes[i].kind = Recipe::Kind::kEmpty;
      continue;
    }
    auto ref = (*w)->AppendBlob(Zstd(b.content.at(e.path)));
    REQUIRE(ref.ok());
    recipes[i] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  }
  REQUIRE((*w)->Finish(config, b.entries, recipes).ok());
  return path;
}

void WriteAllTo(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

}  // namespace

TEST_CASE("paths sort component-wise so subtrees are contiguous") {
  CHECK(PathLess("a", "a/b"));
  CHECK(PathLess("a/b", "a-b"));
  CHECK(PathLess("a/z/z", "a-"));
  CHECK(PathLess("", "a"));
  CHECK(ComparePaths("x/y", "x/y") == 0);
}

TEST_CASE("cdimg round trip keeps every field and finds paths") {
  Built b = SampleTree();
  std::string path = WriteSample(b, "sample.cdimg");
  auto img = CdimgImage::Open(path);
  REQUIRE(img.ok());
  REQUIRE((*img)->size() == b.entries.size());
  for (size_t i = 0; i < b.entries.size(); ++i) {
    CHECK((*img)->EntryAt(i) == b.entries[i]);
    auto found = (*img)->Find(b.entries[i].path);
    REQUIRE(found.has_value());
    CHECK(*found == i);
  }
  CHECK_FALSE((*img)->Find("bin/nope").has_value());
  CHECK_FALSE((*img)->Find("bin/ap").has_value());
  CHECK((*img)->header().image_id == ComputeImageId(b.entries));
  CHECK((*img)->config() == R"({"architecture":"amd64"})");
  // bin's subtree is bin/app, bin/app2, bin/sh and stops before bin-extra
  size_t bin = *(*img)->Find("bin");
  CHECK((*img)->PathAt((*img)->SubtreeEnd(bin)) == "bin-extra");
  CHECK((*img)->SubtreeEnd(0) == (*img)->size());
  size_t app = *(*img)->Find("bin/app");
  Recipe r = (*img)->RecipeAt(app);
  REQUIRE(r.kind == Recipe::Kind::kFull);
  auto blob = (*img)->ReadBlob(r.blob);
  REQUIRE(blob.ok());
  std::string out(b.content["bin/app"].size(), '\0');
  CHECK(ZSTD_decompress(out.data(), out.size(), blob->data(), blob->size()) == out.size());
  CHECK(out == b.content["bin/app"]);
}

TEST_CASE("writing the same tree twice gives identical bytes") {
  Built b = SampleTree();
  CHECK(ReadAll(WriteSample(b, "a.cdimg")) == ReadAll(WriteSample(b, "b.cdimg")));
}

TEST_CASE("image id changes with any metadata change") {
  Built b = SampleTree();
  Digest id = ComputeImageId(b.entries);
  auto changed = b.entries;
  changed[1].mtime_nsec += 1;
  CHECK(ComputeImageId(changed) != id);
  changed = b.entries;
  changed[2].xattrs[1].value = "other";
  CHECK(ComputeImageId(changed) != id);
}

TEST_CASE("writer rejects invalid trees with a message naming the entry") {
  Built b = SampleTree();
  SECTION("missing parent") {
    b.entries.push_back(File("zzz/orphan", "x"));
    b.content["zzz/orphan"] = "x";
  }
  SECTION("dot-dot component") {
    b.entries.push_back(File("zz/../etc", "x"));
    b.content["zz/../etc"] = "x";
  }
  SECTION("dangling hardlink") {
    Entry l;
    l.path = "zlink";
    l.type = EntryType::kHardlink;
    l.link_target = "nowhere";
    b.entries.push_back(l);
  }
  std::sort(b.entries.begin(), b.entries.end(), [](const Entry& x, const Entry& y) { return PathLess(x.path, y.path); });
  auto w = CdimgWriter::Create(TempPath("bad.cdimg"), {});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(b.entries.size());
  for (size_t i = 0; i < b.entries.size(); ++i)
    if (b.entries[i].type == EntryType::kRegular)
      recipes[i].kind = b.entries[i].size ? Recipe::Kind::kBase : Recipe::Kind::kEmpty;
  auto s = (*w)->Finish("{}", b.entries, recipes);
  REQUIRE_FALSE(s.ok());
  std::string msg(s.message());
  CHECK((msg.find("orphan") != std::string::npos || msg.find("..") != std::string::npos ||
         msg.find("zlink") != std::string::npos));
}

TEST_CASE("truncated files are rejected at every length") {
  std::string good = ReadAll(WriteSample(SampleTree(), "t.cdimg"));
  std::string path = TempPath("trunc.cdimg");
  for (size_t len = 0; len < good.size(); len += (len < 300 ? 1 : 7)) {
    WriteAllTo(path, good.substr(0, len));
    auto img = CdimgImage::Open(path);
    INFO("length " << len);
    CHECK_FALSE(img.ok());
  }
}

TEST_CASE("flipped bits in header, config or index are detected") {
  Built b = SampleTree();
  std::string good = ReadAll(WriteSample(b, "f.cdimg"));
  auto hdr = CdimgImage::ReadHeader(TempPath("f.cdimg"));
  REQUIRE(hdr.ok());
  CHECK(hdr->version == 2);
  CHECK(hdr->blobs_offset == 10);
  CHECK(hdr->header_length < 64);  // lead + tail of a full image
  uint64_t meta_start = hdr->blobs_offset + hdr->blobs_length;
  std::string path = TempPath("flip.cdimg");
  std::vector<size_t> positions;
  for (size_t i = 0; i < hdr->blobs_offset; ++i) positions.push_back(i);
  for (size_t i = meta_start; i < good.size(); ++i) positions.push_back(i);
  auto orig = CdimgImage::Open(TempPath("f.cdimg"));
  REQUIRE(orig.ok());
  int accepted = 0;
  for (size_t pos : positions) {
    for (int bit : {0, 4, 7}) {
      std::string bad = good;
      bad[pos] ^= static_cast<char>(1 << bit);
      WriteAllTo(path, bad);
      INFO("flipped byte " << pos << " bit " << bit);
      auto img = CdimgImage::Open(path);
      if (img.ok()) {
        // a bit zstd ignores (e.g. the frame header's unused bit): same content, never other bytes
        CHECK(pos >= meta_start);
        CHECK((*img)->config() == (*orig)->config());
        CHECK((*img)->metadata() == (*orig)->metadata());
        ++accepted;
        continue;
      }
      CHECK_THAT(std::string(img.status().message()), Catch::Contains(path));
    }
  }
  CHECK(accepted <= 8);  // a handful of ignored framing bits, not whole regions
}

// Rewrites the tail of a full image with other fields and a valid checksum,
// so that only the range checks stand in the way.
std::string ResealTail(const std::string& good, uint64_t meta_len, uint64_t config_len, uint64_t index_len) {
  size_t tail_len = static_cast<uint8_t>(good.back());
  std::string lead = good.substr(0, 10);
  std::string tail = good.substr(good.size() - 1 - tail_len, 32);  // image id
  auto put = [&](uint64_t v) {
    while (v >= 0x80) {
      tail.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    tail.push_back(static_cast<char>(v));
  };
  put(meta_len);
  put(config_len);
  put(index_len);
  Digest d = Sha256(lead + tail);
  tail.append(reinterpret_cast<const char*>(d.data()), 4);
  tail.push_back(static_cast<char>(tail.size()));
  return good.substr(0, good.size() - 1 - tail_len) + tail;
}

TEST_CASE("oversized fields are rejected before allocating") {
  std::string good = ReadAll(WriteSample(SampleTree(), "o.cdimg"));
  auto hdr = CdimgImage::ReadHeader(TempPath("o.cdimg"));
  REQUIRE(hdr.ok());
  std::string path = TempPath("over.cdimg");
  uint64_t m = hdr->meta_length, c = hdr->config_length, x = hdr->index_raw_length;
  // the resealed original opens: the helper itself is right
  WriteAllTo(path, ResealTail(good, m, c, x));
  REQUIRE(CdimgImage::Open(path).ok());
  struct Case {
    uint64_t m, c, x;
  };
  for (Case k : {Case{~0ull - 5, c, x}, Case{m, ~0ull - 5, x}, Case{m, c, ~0ull - 5}, Case{m, c, 1ull << 40},
                 Case{m, 17ull << 20, x}, Case{m + 1, c, x}, Case{m - 1, c, x}, Case{m, c + 1, x},
                 Case{m, c, x - 1}}) {
    WriteAllTo(path, ResealTail(good, k.m, k.c, k.x));
    auto img = CdimgImage::Open(path);
    INFO("meta " << k.m << " config " << k.c << " index " << k.x);
    REQUIRE_FALSE(img.ok());
    CHECK(std::string(img.status().message()).find("cdimg") != std::string::npos);
  }
}

TEST_CASE("other format versions are rejected naming both versions") {
  std::string good = ReadAll(WriteSample(SampleTree(), "v.cdimg"));
  std::string path = TempPath("v1.cdimg");
  for (int v : {0, 1, 3, 255}) {
    std::string bad = good;
    bad[8] = static_cast<char>(v);
    WriteAllTo(path, bad);
    auto img = CdimgImage::Open(path);
    REQUIRE_FALSE(img.ok());
    CHECK(img.status().code() == absl::StatusCode::kUnimplemented);
    CHECK_THAT(std::string(img.status().message()), Catch::Contains(StrCat("format version ", v)));
    CHECK_THAT(std::string(img.status().message()), Catch::Contains("reads version 2"));
  }
  // a version 1 file (256-byte header: u32 version 1 at offset 8)
  std::string v1(300, '\0');
  std::memcpy(v1.data(), "D4CCDIMG\x01", 9);
  WriteAllTo(path, v1);
  auto img = CdimgImage::ReadHeader(path);
  REQUIRE_FALSE(img.ok());
  CHECK_THAT(std::string(img.status().message()), Catch::Contains("format version 1 is not supported"));
}

TEST_CASE("not a cdimg and missing file give clear errors") {
  std::string path = TempPath("junk.cdimg");
  WriteAllTo(path, std::string(1000, 'j'));
  auto img = CdimgImage::Open(path);
  REQUIRE_FALSE(img.ok());
  CHECK(std::string(img.status().message()).find("bad magic") != std::string::npos);
  auto missing = CdimgImage::Open(TempPath("does-not-exist.cdimg"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a delta image needs the right parent") {
  Built b = SampleTree();
  std::string parent_path = WriteSample(b, "parent.cdimg");
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  Built c = b;
  c.entries.erase(c.entries.begin() + 3);  // drop the hardlink
  std::vector<Recipe> recipes(c.entries.size());
  for (size_t i = 0; i < c.entries.size(); ++i)
    if (c.entries[i].type == EntryType::kRegular)
      recipes[i].kind = c.entries[i].size ? Recipe::Kind::kBase : Recipe::Kind::kEmpty;
  std::string child_path = TempPath("child.cdimg");
  auto w = CdimgWriter::Create(child_path, {parent->get()});
  REQUIRE(w.ok());
  REQUIRE((*w)->Finish("{}", c.entries, recipes).ok());
  auto hdr = CdimgImage::ReadHeader(child_path);
  REQUIRE(hdr.ok());
  CHECK(hdr->is_delta);
  CHECK(hdr->parent_id == (*parent)->header().image_id);
  // config and index compressed against the parent's: far smaller than the parent's
  CHECK(hdr->meta_length * 3 < (*parent)->header().meta_length);
  auto child = CdimgImage::Open(child_path, parent->get());
  REQUIRE(child.ok());
  CHECK((*child)->size() == c.entries.size());
  auto orphan = CdimgImage::Open(child_path);
  REQUIRE_FALSE(orphan.ok());
  CHECK(std::string(orphan.status().message()).find("needs its parent") != std::string::npos);
  auto wrong = CdimgImage::Open(child_path, child->get());
  REQUIRE_FALSE(wrong.ok());
  CHECK(std::string(wrong.status().message()).find("parent is") != std::string::npos);
}

// Compact meta (delta images): packed config digests, base reference 0 for a
// same-path base, the last pack inside the meta frame.
TEST_CASE("compact meta delta round trips config, bases and the inline pack") {
  Built b = SampleTree();
  std::string hex(64, 'a');
  std::string parent_config = StrCat(R"({"rootfs":{"diff_ids":["sha256:)", hex, R"("]}})");
  std::string parent_path = WriteSample(b, "cparent.cdimg", parent_config);
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  CHECK_FALSE((*parent)->header().compact_meta);  // full images keep the plain form

  // The child: bin/app and tmp/<latin1> changed, as packed deltas; one against
  // the same path (reference 0), one against some other content (the table).
  Built c = b;
  std::string members;
  Digest other = Sha256("other base");
  std::vector<Recipe> recipes = RegularRecipes(&c.entries, [&](Entry& e) {
    Digest old = e.digest;
    e.digest = Sha256(e.path + " v2");
    std::string patch = StrCat("patch of ", e.path);
    Recipe r{Recipe::Kind::kDelta, CodecId::kRelcopy, e.path == "bin/app" ? old : other,
             {members.size(), patch.size()}};
    r.packed = true;
    members += patch;
    return r;
  });
  const std::string child_config = StrCat("\x01{\"a\":\"sha256:", std::string(64, 'b'), "\",\"b\":\"sha256:",
                                          std::string(63, 'c'), "g\",\"c\":\"sha256:", std::string(64, 'D'),
                                          "\",\"d\":\"\x01\x01sha256:", std::string(65, 'e'), "\",\"e\":\"sha256:");
  std::string child_path = TempPath("cchild.cdimg");
  auto w = CdimgWriter::Create(child_path, {parent->get()});
  REQUIRE(w.ok());
  REQUIRE((*w)->Finish(child_config, c.entries, recipes, members).ok());
  auto hdr = CdimgImage::ReadHeader(child_path);
  REQUIRE(hdr.ok());
  CHECK(hdr->compact_meta);
  CHECK(hdr->blobs_length == 0);  // the only pack is inline
  auto child = CdimgImage::Open(child_path, parent->get());
  INFO(child.status().ToString());
  REQUIRE(child.ok());
  const CdimgImage& img = **child;
  CHECK(img.config() == child_config);
  REQUIRE(img.pack_count() == 1);
  CHECK(img.PackBlob(0).length == 0);
  CHECK(img.PackRawLength(0) == members.size());
  for (size_t i = 0; i < c.entries.size(); ++i) {
    if (recipes[i].kind != Recipe::Kind::kDelta) continue;
    INFO(c.entries[i].path);
    Recipe r = img.RecipeAt(i);
    CHECK(r.base == recipes[i].base);
    CHECK(r.codec == CodecId::kRelcopy);
    auto payload = img.ReadPayload(r);
    REQUIRE(payload.ok());
    CHECK(*payload == StrCat("patch of ", c.entries[i].path));
  }

  SECTION("writing it again gives the same bytes") {
    std::string again = TempPath("cchild2.cdimg");
    auto w2 = CdimgWriter::Create(again, {parent->get()});
    REQUIRE(w2.ok());
    REQUIRE((*w2)->Finish(child_config, c.entries, recipes, members).ok());
    CHECK(ReadAll(again) == ReadAll(child_path));
  }
  SECTION("helpers make both meta forms side by side: the same bytes as one after the other") {
    std::string again = TempPath("cchild-helpers.cdimg");
    SpawningHelpers helpers(1);
    CdimgWriter::Options o{parent->get()};
    o.helpers = &helpers;
    auto w2 = CdimgWriter::Create(again, o);
    REQUIRE(w2.ok());
    REQUIRE((*w2)->Finish(child_config, c.entries, recipes, members).ok());
    CHECK(ReadAll(again) == ReadAll(child_path));
  }
  SECTION("the meta section in either form reads back the same image; LZMA damage is refused") {
    using MetaForm = CdimgWriter::Options::MetaForm;
    std::string paths[2] = {TempPath("cform-zstd.cdimg"), TempPath("cform-lzma.cdimg")};
    MetaForm forms[2] = {MetaForm::kZstd, MetaForm::kLzma};
    for (int f = 0; f < 2; ++f) {
      CdimgWriter::Options o{parent->get()};
      o.meta_form = forms[f];
      auto wf = CdimgWriter::Create(paths[f], o);
      REQUIRE(wf.ok());
      REQUIRE((*wf)->Finish(child_config, c.entries, recipes, members).ok());
      auto h = CdimgImage::ReadHeader(paths[f]);
      REQUIRE(h.ok());
      CHECK(h->lzma_meta == (f == 1));
      CHECK(h->image_id == hdr->image_id);
      auto again = CdimgImage::Open(paths[f], parent->get());
      INFO(again.status().ToString());
      REQUIRE(again.ok());
      CHECK((*again)->config() == child_config);
      CHECK((*again)->metadata() == img.metadata());
      for (size_t i = 0; i < c.entries.size(); ++i) {
        if (recipes[i].kind != Recipe::Kind::kDelta) continue;
        auto payload = (*again)->ReadPayload((*again)->RecipeAt(i));
        REQUIRE(payload.ok());
        CHECK(*payload == StrCat("patch of ", c.entries[i].path));
      }
    }
    // The default writes the smaller of the two.
    CHECK(ReadAll(child_path).size() == std::min(ReadAll(paths[0]).size(), ReadAll(paths[1]).size()));
    // Any damaged byte of the LZMA section is refused (its CRC-32, the
    // stream's own checks, the content length) or leaves the image as it was.
    auto h = CdimgImage::ReadHeader(paths[1]);
    REQUIRE(h.ok());
    std::string good = ReadAll(paths[1]);
    std::string path = TempPath("cform-bad.cdimg");
    uint64_t meta_start = h->blobs_offset + h->blobs_length;
    for (size_t pos = meta_start; pos < meta_start + h->meta_length; ++pos) {
      std::string bad = good;
      bad[pos] ^= 0x10;
      WriteAllTo(path, bad);
      auto img2 = CdimgImage::Open(path, parent->get());
      if (img2.ok()) CHECK((*img2)->metadata() == img.metadata());
      else CHECK(img2.status().code() == absl::StatusCode::kDataLoss);
    }
    // Against another parent the prefix differs: an error, never another tree.
    auto other_parent = CdimgImage::Open(WriteSample(b, "cparent2.cdimg", "{}"));
    REQUIRE(other_parent.ok());
    CHECK_FALSE(CdimgImage::Open(paths[1], other_parent->get()).ok());
    // The flag needs compact meta (a full image cannot set it).
    std::string full = ReadAll(parent_path);
    full[9] |= 8;
    WriteAllTo(path, full);
    CHECK_FALSE(CdimgImage::ReadHeader(path).ok());
  }
  SECTION("the compact flag is not optional") {
    std::string bytes = ReadAll(child_path);
    std::string path = TempPath("cflag.cdimg");
    bytes[9] ^= 2;  // the header checksum fails first; the flag alone would too
    WriteAllTo(path, bytes);
    CHECK_FALSE(CdimgImage::Open(path, parent->get()).ok());
    std::string full = ReadAll(parent_path);
    full[9] |= 2;
    WriteAllTo(path, full);
    CHECK_FALSE(CdimgImage::ReadHeader(path).ok());
  }
  SECTION("flipped bits in the meta frame are detected") {
    std::string good = ReadAll(child_path);
    std::string path = TempPath("cflip.cdimg");
    uint64_t meta_start = hdr->blobs_offset + hdr->blobs_length;
    int accepted = 0;
    for (size_t pos = meta_start; pos < meta_start + hdr->meta_length; ++pos) {
      for (int bit : {0, 4, 7}) {
        std::string bad = good;
        bad[pos] ^= static_cast<char>(1 << bit);
        WriteAllTo(path, bad);
        auto img2 = CdimgImage::Open(path, parent->get());
        if (!img2.ok()) continue;
        CHECK((*img2)->config() == child_config);
        CHECK((*img2)->metadata() == img.metadata());
        ++accepted;
      }
    }
    CHECK(accepted <= 8);
  }
}

TEST_CASE("a pack copied as stored (AppendStoredPack) gives the image AppendPack gives") {
  std::string one = std::string(3000, 'a') + "one", two = std::string(2000, 'b') + "two";
  std::vector<Entry> entries = {Dir(""), File("one", one), File("two", two)};
  std::vector<Recipe> recipes(3);
  for (size_t i : {1, 2}) {
    recipes[i].kind = Recipe::Kind::kFull;
    recipes[i].packed = true;
    recipes[i].pack = 0;
  }
  recipes[1].blob = {0, one.size()};
  recipes[2].blob = {one.size(), two.size()};
  std::string first = TempPath("pack-first.cdimg"), copy = TempPath("pack-copy.cdimg");
  {
    auto w = CdimgWriter::Create(first, {});
    REQUIRE(w.ok());
    REQUIRE((*w)->AppendPack(one + two).ok());
    REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  }
  auto img = CdimgImage::Open(first);
  REQUIRE(img.ok());
  REQUIRE((*img)->pack_count() == 1);
  auto stored = (*img)->ReadBlob((*img)->PackBlob(0));
  REQUIRE(stored.ok());
  {
    auto w = CdimgWriter::Create(copy, {});
    REQUIRE(w.ok());
    // The frame header must record the raw length given.
    auto bad = (*w)->AppendStoredPack(*stored, one.size());
    CHECK(bad.status().code() == absl::StatusCode::kDataLoss);
    CHECK(bad.status().message().find("copied pack") != std::string::npos);
    CHECK((*w)->AppendStoredPack(*stored, 0).status().code() == absl::StatusCode::kInvalidArgument);
    auto p = (*w)->AppendStoredPack(*stored, one.size() + two.size());
    REQUIRE(p.ok());
    CHECK(*p == 0);
    REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  }
  CHECK(ReadAll(copy) == ReadAll(first));
  auto back = CdimgImage::Open(copy);
  REQUIRE(back.ok());
  CHECK(*(*back)->ReadPayload((*back)->RecipeAt(2)) == two);
}

// Placed packs (flag bit 2, written by merge --compose): a packed entry names
// its pack and offset, a pack may hold bytes no entry owns, and a chained
// patch may leave its steps in packs; the reader copies them in.
TEST_CASE("placed packs: members anywhere in their pack, chained patch steps left in packs") {
  Built b = SampleTree();
  std::string parent_path = WriteSample(b, "pparent.cdimg");
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  const std::string app2 = std::string(3000, 'y') + "second version of app",
                    app3 = std::string(3000, 'y') + "third version of the app", latin2 = "latin1 v2",
                    new_a = "a new file", new_b = "another new file";
  auto step2 = GetCodec(CodecId::kRelcopy).EncodeForPack(app2, app3);
  REQUIRE(step2.ok());
  // pack 0 (stored): dead bytes, app2 (a stored step), etc/a, etc/b, dead
  // bytes; pack 1 (inline): the relcopy step, then tmp/<latin1>.
  const std::string pack0 = "dead" + app2 + new_a + new_b + "more dead bytes", pack1 = *step2 + latin2;
  auto chain = [&](uint64_t offset) {
    std::vector<ChainStep> steps(2);
    steps[0].stored = steps[0].located = true;
    steps[0].out_size = steps[0].patch_length = app2.size();
    steps[0].offset = offset;
    steps[1] = {CodecId::kRelcopy, true, app3.size(), {}, step2->size()};
    steps[1].located = true;
    steps[1].pack = 1;
    return MakeChainPatch(steps, false);
  };
  Built c = b;
  c.entries.push_back(Dir("etc"));
  c.entries.push_back(File("etc/a", new_a));
  c.entries.push_back(File("etc/b", new_b));
  SortByPath(&c.entries);
  std::map<std::string, std::string> content = {{"bin/app", app3}, {"tmp/\xff\xfe-latin1", latin2},
                                                {"etc/a", new_a}, {"etc/b", new_b}};
  std::vector<Recipe> recipes = RegularRecipes(&c.entries, [&](Entry& e) {
    const std::string& now = content.at(e.path);
    Digest old = e.digest;
    e.size = now.size();
    e.digest = Sha256(now);
    Recipe r{Recipe::Kind::kFull, CodecId::kZstd, {}, {}, true, 0};
    if (e.path == "bin/app") {
      r = {Recipe::Kind::kDelta, CodecId::kChain, old, {}};  // the blob is set below
    } else if (e.path == "etc/a") {
      r.blob = {4 + app2.size(), new_a.size()};
    } else if (e.path == "etc/b") {
      r.blob = {4 + app2.size() + new_a.size(), new_b.size()};  // right after etc/a
    } else {
      r.pack = 1;
      r.blob = {step2->size(), latin2.size()};
    }
    return r;
  });
  const size_t app = static_cast<size_t>(
      std::find_if(c.entries.begin(), c.entries.end(), [](const Entry& e) { return e.path == "bin/app"; }) -
      c.entries.begin());
  auto write = [&](const std::string& name, std::vector<Recipe> rs, uint64_t step_offset, bool placed) {
    std::string path = TempPath(name);
    auto w = CdimgWriter::Create(path, {.parent = parent->get(), .placed_packs = placed});
    REQUIRE(w.ok());
    auto ref = (*w)->AppendBlob(chain(step_offset));
    REQUIRE(ref.ok());
    rs[app].blob = *ref;
    REQUIRE((*w)->AppendPack(pack0).ok());
    return std::pair{path, (*w)->Finish("{}", c.entries, rs, pack1)};
  };
  auto [path, st] = write("placed.cdimg", recipes, 4, true);
  INFO(st.ToString());
  REQUIRE(st.ok());
  auto img = CdimgImage::Open(path, parent->get());
  INFO(img.status().ToString());
  REQUIRE(img.ok());
  const CdimgImage& out = **img;
  CHECK(out.header().placed_packs);
  recipes[app].blob = {0, chain(4).size()};  // the first standalone blob
  REQUIRE(out.pack_count() == 2);
  CHECK(out.PackRawLength(0) == pack0.size());
  CHECK(out.PackRawLength(1) == pack1.size());
  for (size_t i = 0; i < c.entries.size(); ++i) {
    if (c.entries[i].type != EntryType::kRegular || c.entries[i].size == 0) continue;
    INFO(c.entries[i].path);
    Recipe r = out.RecipeAt(i);
    CHECK(r == recipes[i]);
    auto payload = out.ReadPayload(r);
    INFO(payload.status().ToString());
    REQUIRE(payload.ok());
    std::string bytes = *payload;
    if (r.kind == Recipe::Kind::kDelta) {
      // The steps come copied in; the codec then needs no image.
      auto steps = ParseChainPatch(bytes, false);
      REQUIRE(steps.ok());
      CHECK_FALSE((*steps)[0].located);
      CHECK_FALSE((*steps)[1].located);
      CHECK((*steps)[0].stored);
      auto rebuilt = GetCodec(CodecId::kChain).DecodeForm("unused base", bytes, app3.size(), false);
      INFO(rebuilt.status().ToString());
      REQUIRE(rebuilt.ok());
      bytes = *rebuilt;
    }
    CHECK(bytes == content.at(c.entries[i].path));
  }
  // The codec itself refuses a step it cannot read.
  auto raw = GetCodec(CodecId::kChain).DecodeForm("base", chain(4), app3.size(), false);
  CHECK(raw.status().code() == absl::StatusCode::kDataLoss);
  CHECK(raw.status().message().find("only the image reader") != std::string::npos);

  SECTION("a step outside its pack is an error naming the step") {
    auto [bad_path, bad_st] = write("placed-bad-step.cdimg", recipes, pack0.size() - 10, true);
    REQUIRE(bad_st.ok());  // the index does not know where steps lie
    auto bad = CdimgImage::Open(bad_path, parent->get());
    REQUIRE(bad.ok());
    auto p = (*bad)->ReadPayload((*bad)->RecipeAt(app));
    CHECK(p.status().code() == absl::StatusCode::kDataLoss);
    CHECK(p.status().message().find("chained patch step 1") != std::string::npos);
  }
  SECTION("the writer refuses a member outside its pack") {
    std::vector<Recipe> rs = recipes;
    for (size_t i = 0; i < c.entries.size(); ++i)
      if (c.entries[i].path == "etc/b") rs[i].blob.offset = pack0.size() - 3;
    auto [p, s] = write("placed-bad-member.cdimg", rs, 4, true);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.message().find("outside pack 0") != std::string::npos);
  }
  SECTION("without the flag, members must fill packs in entry order") {
    auto [p, s] = write("unplaced.cdimg", recipes, 4, false);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.message().find("entry order") != std::string::npos);
  }
  SECTION("a full image cannot have placed packs") {
    auto w = CdimgWriter::Create(TempPath("placed-full.cdimg"), {.placed_packs = true});
    CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
  }
}
