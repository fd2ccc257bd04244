// diff keeps memory bounded whatever the file sizes: a file over
// DiffOptions::max_delta_size keeps the new image's stored blob, checked and
// copied in pieces, so a diff of a pair with one big changed file has a peak
// RSS far below the file's size; patch then reproduces B exactly.
#include <catch2/catch.hpp>

#include <cstring>
#include <functional>
#include <optional>
#include <string>

#include "d4c/base/strcat.h"
#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "oci_fixture.h"

using namespace d4c;
using oci_test::Compression;
using oci_test::LayerBuilder;
using oci_test::ReadAll;
using oci_test::ScratchDir;

namespace {

constexpr uint64_t kLimit = 64ull << 20;  // DiffOptions::max_delta_size in this test (the default is higher)
constexpr uint64_t kBig = 96ull << 20;    // bytes of the big file: well over kLimit

// The bound on the diff child's peak RSS. AddressSanitizer adds its shadow,
// its allocator's caches and a bigger binary. Both stay far below what a
// diff holding the file whole takes: ~7x the file (1066 MiB with a 160 MiB file and
// max_delta_size above it); measured here: 12 MiB.
#if defined(__SANITIZE_ADDRESS__)
#define D4C_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define D4C_TEST_ASAN 1
#endif
#endif
#ifdef D4C_TEST_ASAN
constexpr uint64_t kPeakBoundMiB = 128;
#else
constexpr uint64_t kPeakBoundMiB = 64;
#endif

// A 1 MiB pseudo-random block repeated, each copy stamped with its number
// (compresses fast at any level); version 2 has a few spots changed.
std::string BigFile(int version) {
  std::string block(1 << 20, '\0');
  uint32_t x = 12345;
  for (char& c : block) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  std::string out;
  out.reserve(kBig);
  for (uint64_t i = 0; i < kBig >> 20; ++i) {
    out += block;
    std::memcpy(out.data() + (i << 20) + 7, &i, sizeof i);
  }
  if (version == 2)
    for (uint64_t spot : {uint64_t{3} << 20, uint64_t{77} << 20, kBig - 5000})
      std::memcpy(out.data() + spot, "changed in version two", 22);
  return out;
}

std::string SmallFile(int version) {
  std::string out;
  for (int i = 0; i < 2000; ++i) out += StrCat("line ", i, i == 1000 ? StrCat(" version ", version) : "", "\n");
  return out;
}

// The child's message and peak RSS (oci_test::RunInChild), or a failed test.
oci_test::ChildRun InChild(const std::function<std::string()>& f) {
  auto run = oci_test::RunInChild(f);
  INFO((run.ok() ? std::string() : std::string(run.status().message())));
  REQUIRE(run.ok());
  return *run;
}

std::string StatusText(const absl::Status& s) { return s.ok() ? "ok" : std::string(s.message()); }

std::optional<size_t> EntryOf(const CdimgImage& img, std::string_view path) { return img.Find(path); }

}  // namespace

TEST_CASE("diff: a big changed file costs no memory in proportion to its size", "[diff]") {
  ScratchDir dir;
  const std::string a = dir.path() + "/a.cdimg", b = dir.path() + "/b.cdimg";
  const std::string d = dir.path() + "/d.cdimg", c = dir.path() + "/c.cdimg";
  // The images are made in a child too: the parent's heap, inherited by a
  // forked child, would count in the diff child's RSS.
  oci_test::ChildRun made = InChild([&] {
    for (int v : {1, 2}) {
      LayerBuilder l;
      l.Dir("data").File("data/big.bin", BigFile(v)).File("data/small.txt", SmallFile(v));
      auto src = oci_test::MemoryImage({l}, Compression::kNone);
      ConvertOptions o;
      o.threads = 2;
      o.zstd_level = 3;
      auto st = ConvertImage(src, v == 1 ? a : b, o);
      if (!st.ok()) return StatusText(st.status());
    }
    return std::string("ok");
  });
  REQUIRE(made.msg == "ok");

  oci_test::ChildRun diffed = InChild([&] {
    auto old_chain = ImageChain::Open(a, {});
    if (!old_chain.ok()) return StatusText(old_chain.status());
    auto new_chain = ImageChain::Open(b, {});
    if (!new_chain.ok()) return StatusText(new_chain.status());
    DiffOptions o;
    o.threads = 2;
    o.zstd_level = 3;
    o.max_delta_size = kLimit;
    return StatusText(DiffImages(**old_chain, **new_chain, d, o).status());
  });
  REQUIRE(diffed.msg == "ok");
  WARN("diff of a pair with a " << (kBig >> 20) << " MiB changed file: child peak RSS " << diffed.peak_mib
                                << " MiB");
  // Held whole, base, new content, xdelta3's state and the round trip's
  // copy took ~7x the file; copied in pieces, a few MB beside the binary.
  CHECK(diffed.peak_mib < kPeakBoundMiB);

  auto delta = ImageChain::Open(d, {a});
  REQUIRE(delta.ok());
  auto bimg = ImageChain::Open(b, {});
  REQUIRE(bimg.ok());
  const CdimgImage& di = (*delta)->top();
  const CdimgImage& bi = (*bimg)->top();
  auto big = EntryOf(di, "data/big.bin"), small = EntryOf(di, "data/small.txt");
  REQUIRE(big);
  REQUIRE(small);
  auto bbig = EntryOf(bi, "data/big.bin");
  REQUIRE(bbig);
  // The big file: B's stored blob, the same bytes; the small one: a delta.
  CHECK(di.RecipeAt(*big).kind == Recipe::Kind::kFull);
  CHECK_FALSE(di.RecipeAt(*big).packed);
  auto blob_d = di.ReadBlob(di.RecipeAt(*big).blob);
  auto blob_b = bi.ReadBlob(bi.RecipeAt(*bbig).blob);
  REQUIRE(blob_d.ok());
  REQUIRE(blob_b.ok());
  CHECK(*blob_d == *blob_b);
  CHECK(di.RecipeAt(*small).kind == Recipe::Kind::kDelta);

  // patch at B's levels gives B's very bytes.
  auto base = ImageChain::Open(a, {});
  REQUIRE(base.ok());
  PatchOptions po;
  po.threads = 2;
  po.zstd_level = 3;
  po.meta_zstd_level = kConvertMetaLevel;
  auto patched = PatchImage(**base, d, c, po);
  INFO(StatusText(patched.status()));
  REQUIRE(patched.ok());
  CHECK(ReadAll(c) == ReadAll(b));
  auto cchain = ImageChain::Open(c, {});
  REQUIRE(cchain.ok());
  auto cbig = EntryOf((*cchain)->top(), "data/big.bin");
  REQUIRE(cbig);
  auto content = (*cchain)->ReadFile(*cbig);
  REQUIRE(content.ok());
  CHECK(*content == BigFile(2));
}

TEST_CASE("diff: max_delta_size above the file keeps the delta of a big file", "[diff]") {
  // The threshold is the only switch: files up to it are diffed as before.
  ScratchDir dir;
  std::string base = SmallFile(1) + std::string(300 << 10, 'x'), target = SmallFile(2) + std::string(300 << 10, 'x');
  const std::string a = dir.path() + "/a.cdimg", b = dir.path() + "/b.cdimg";
  for (int v : {1, 2}) {
    LayerBuilder l;
    l.File("f", v == 1 ? base : target);
    ConvertOptions o;
    o.threads = 2;
    o.zstd_level = 3;
    auto src = oci_test::MemoryImage({l});
    REQUIRE(ConvertImage(src, v == 1 ? a : b, o).ok());
  }
  auto old_chain = ImageChain::Open(a, {});
  auto new_chain = ImageChain::Open(b, {});
  REQUIRE(old_chain.ok());
  REQUIRE(new_chain.ok());
  for (uint64_t limit : {uint64_t{100} << 10, uint64_t{1} << 20}) {
    DYNAMIC_SECTION("max_delta_size " << limit) {
      DiffOptions o;
      o.threads = 2;
      o.zstd_level = 3;
      o.max_delta_size = limit;
      std::string d = StrCat(dir.path(), "/d", limit, ".cdimg");
      auto st = DiffImages(**old_chain, **new_chain, d, o);
      INFO(StatusText(st.status()));
      REQUIRE(st.ok());
      auto delta = ImageChain::Open(d, {a});
      REQUIRE(delta.ok());
      Recipe r = (*delta)->top().RecipeAt(*(*delta)->top().Find("f"));
      CHECK(r.kind == (limit < target.size() ? Recipe::Kind::kFull : Recipe::Kind::kDelta));
      CHECK(*(*delta)->ReadFile(*(*delta)->top().Find("f")) == target);
    }
  }
}
