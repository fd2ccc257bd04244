// ImageChain's read path: errors keep their code through the layers (an I/O
// error stays one and goes away on the next read), only bad bytes are
// DataLoss.
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include "thread_helpers.h"
#include "d4c/cdimg.h"
#include "d4c/chain.h"
#include "d4c/codec.h"
#include "d4c/base/strcat.h"

using namespace d4c;

namespace {

std::string TempDir() {
  auto dir = std::filesystem::temp_directory_path() / StrCat("d4c-chain-test-", getpid());
  std::filesystem::create_directories(dir);
  return dir.string();
}

Entry Dir(std::string path) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kDirectory;
  e.mode = 0755;
  return e;
}

Entry File(std::string path, const std::string& content) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kRegular;
  e.mode = 0644;
  e.size = content.size();
  e.digest = Sha256(content);
  return e;
}

std::string Zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

const std::string kOld = std::string(5000, 'a') + "old tail";
const std::string kNew = std::string(5000, 'a') + "new tail!";

// base.cdimg: /conf (kOld, full) and /bad (its blob holds other bytes of the
// same size); top.cdimg, a delta of it: /conf is kNew as an xdelta3 patch
// against kOld, /bad unchanged.
struct Images {
  std::string base, top;
};

Images Write() {
  Images im{TempDir() + "/base.cdimg", TempDir() + "/top.cdimg"};
  std::vector<Entry> es{Dir(""), File("bad", "the right bytes"), File("conf", kOld)};
  {
    auto w = CdimgWriter::Create(im.base, {});
    REQUIRE(w.ok());
    std::vector<Recipe> rs(es.size());
    auto bad = (*w)->AppendBlob(Zstd("the WRONG bytes"));
    auto conf = (*w)->AppendBlob(Zstd(kOld));
    REQUIRE(bad.ok());
    REQUIRE(conf.ok());
    rs[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *bad};
    rs[2] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *conf};
    REQUIRE((*w)->Finish("{}", es, rs).ok());
  }
  auto parent = CdimgImage::Open(im.base);
  REQUIRE(parent.ok());
  es[2] = File("conf", kNew);
  auto w = CdimgWriter::Create(im.top, {.parent = parent->get()});
  REQUIRE(w.ok());
  auto patch = GetCodec(CodecId::kXdelta3).Encode(kOld, kNew);
  REQUIRE(patch.ok());
  auto ref = (*w)->AppendBlob(*patch);
  REQUIRE(ref.ok());
  std::vector<Recipe> rs(es.size());
  rs[1] = {Recipe::Kind::kBase, CodecId::kZstd, {}, {}};
  rs[2] = {Recipe::Kind::kDelta, CodecId::kXdelta3, Sha256(kOld), *ref};
  REQUIRE((*w)->Finish("{}", es, rs).ok());
  return im;
}

}  // namespace

TEST_CASE("chain: a transient read error keeps its code and the next read succeeds") {
  Images im = Write();
  auto chain = ImageChain::Open(im.top, {im.base});
  REQUIRE(chain.ok());
  const CdimgImage& top = (*chain)->top();
  size_t conf = *top.Find("conf");

  // The first read of the base image's blob fails as pread's EIO does
  // (format/io.cc), the second time as an allocation failure; then reads work.
  std::atomic<int> faults{2};
  (*chain)->SetReadFaultForTesting([&](const CdimgImage& img, const Recipe&) -> absl::Status {
    if (img.path() != im.base || faults <= 0) return absl::OkStatus();
    return --faults == 1 ? absl::InternalError(StrCat(im.base, ": read: Input/output error"))
                         : absl::ResourceExhaustedError("cannot allocate 5008 bytes");
  });
  auto r = (*chain)->ReadFile(conf);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kInternal);
  // The message names the file read, the base it needed, and the cause.
  CHECK_THAT(Msg(r.status().message()),
             Catch::Contains(StrCat(im.top, ": /conf: ")) && Catch::Contains(StrCat(im.base, ": /conf: ")) &&
                 Catch::Contains("Input/output error"));

  r = (*chain)->ReadFile(conf);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);

  r = (*chain)->ReadFile(conf);
  REQUIRE(r.ok());
  CHECK(*r == kNew);
  CHECK(faults == 0);
}

TEST_CASE("chain: content that fails its digest is DataLoss, every time") {
  Images im = Write();
  auto chain = ImageChain::Open(im.top, {im.base});
  REQUIRE(chain.ok());
  size_t bad = *(*chain)->top().Find("bad");
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = (*chain)->ReadFile(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(Msg(r.status().message()),
               Catch::Contains(StrCat(im.base, ": /bad: ")) && Catch::Contains("does not match its sha256"));
  }
  // The other files of the chain are not affected.
  auto conf = (*chain)->ReadFile(*(*chain)->top().Find("conf"));
  REQUIRE(conf.ok());
  CHECK(*conf == kNew);
}

namespace {

using d4c::testing::ThreadHelpers;

std::string Bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>((seed = seed * 1103515245 + 12345) >> 16 & 0x1F);
  return s;
}

// base.cdimg holds /big (`old`); top.cdimg, a delta of it, /big = `now` as a
// bsdiff patch, with one byte of the patch flipped at `damage` (if set).
// `stored` (if set): the bytes base.cdimg's blob holds instead of `old`
// (whose digest the entry keeps).
Images WriteBsdiffPair(const std::string& old, const std::string& now, std::optional<size_t> damage,
                       const std::optional<std::string>& stored = std::nullopt) {
  Images im{TempDir() + "/bs-base.cdimg", TempDir() + "/bs-top.cdimg"};
  std::vector<Entry> es{Dir(""), File("big", old)};
  {
    auto w = CdimgWriter::Create(im.base, {});
    REQUIRE(w.ok());
    auto blob = (*w)->AppendBlob(Zstd(stored.value_or(old)));
    REQUIRE(blob.ok());
    std::vector<Recipe> rs(es.size());
    rs[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *blob};
    REQUIRE((*w)->Finish("{}", es, rs).ok());
  }
  auto parent = CdimgImage::Open(im.base);
  REQUIRE(parent.ok());
  es[1] = File("big", now);
  auto w = CdimgWriter::Create(im.top, {.parent = parent->get()});
  REQUIRE(w.ok());
  auto patch = GetCodec(CodecId::kBsdiff).Encode(old, now);
  REQUIRE(patch.ok());
  if (damage) (*patch)[*damage % patch->size()] ^= 0x21;
  auto ref = (*w)->AppendBlob(*patch);
  REQUIRE(ref.ok());
  std::vector<Recipe> rs(es.size());
  rs[1] = {Recipe::Kind::kDelta, CodecId::kBsdiff, Sha256(old), *ref};
  REQUIRE((*w)->Finish("{}", es, rs).ok());
  return im;
}

}  // namespace

// Patch rebuilds a big changed file with idle threads helping (the patch's
// streams decode beside the base, the sha256 check runs beside what is done
// with the bytes): the same bytes and errors as a plain read.
TEST_CASE("chain: a read with helpers gives ReadFile's bytes and errors, and uses only verified bytes") {
  const std::string old = Bytes(300000, 1);
  std::string now = old;
  for (size_t k = 100; k < now.size(); k += 1009) now[k] = static_cast<char>(now[k] + 3);
  now.insert(150000, Bytes(5000, 2));
  ThreadHelpers helpers;
  {
    Images im = WriteBsdiffPair(old, now, std::nullopt);
    auto chain = ImageChain::Open(im.top, {im.base});
    REQUIRE(chain.ok());
    size_t big = *(*chain)->top().Find("big");
    std::string seen;
    auto r = (*chain)->ReadFile(big, helpers, [&](std::string_view b) {
      seen = b;
      return absl::OkStatus();
    });
    REQUIRE(r.ok());
    CHECK(*r == now);
    CHECK(seen == now);
    // What `use` fails with is the read's error.
    r = (*chain)->ReadFile(big, helpers, [](std::string_view) { return absl::ResourceExhaustedError("no room"); });
    CHECK(r.status() == absl::ResourceExhaustedError("no room"));
    // A base that cannot be read: its error, `use` never called.
    (*chain)->SetReadFaultForTesting([&](const CdimgImage& img, const Recipe&) -> absl::Status {
      return img.path() == im.base ? absl::InternalError("base: read: Input/output error") : absl::OkStatus();
    });
    bool used = false;
    r = (*chain)->ReadFile(big, helpers, [&](std::string_view) {
      used = true;
      return absl::OkStatus();
    });
    CHECK(r.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains(StrCat(im.top, ": /big: ")) &&
                                                      Catch::Contains("Input/output error"));
    CHECK_FALSE(used);
  }
  // Damaged patches: the plain read's error, with helpers too.
  for (size_t damage : {size_t{25}, size_t{400}, size_t{2000}, size_t{1} << 30}) {
    Images im = WriteBsdiffPair(old, now, damage);
    auto chain = ImageChain::Open(im.top, {im.base});
    REQUIRE(chain.ok());
    size_t big = *(*chain)->top().Find("big");
    auto plain = (*chain)->ReadFile(big);
    auto helped = (*chain)->ReadFile(big, helpers, [](std::string_view) { return absl::OkStatus(); });
    INFO("damage at " << damage);
    REQUIRE_FALSE(plain.ok());
    CHECK(plain.status().code() == absl::StatusCode::kDataLoss);
    CHECK(helped.status() == plain.status());
  }
  // Bytes that do not match their digest are refused though `use` succeeded.
  {
    Images im = Write();
    auto chain = ImageChain::Open(im.top, {im.base});
    REQUIRE(chain.ok());
    auto r = (*chain)->ReadFile(*(*chain)->top().Find("bad"), helpers, [](std::string_view) { return absl::OkStatus(); });
    CHECK(r.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("does not match its sha256"));
  }
}

// A delta's base is not checked against its digest before the patch is
// applied (the rebuilt file is); when the rebuild then fails, the base is
// checked and named as the cause, with and without helpers.
TEST_CASE("chain: a bad base of a delta is named, not the patch") {
  const std::string old = Bytes(300000, 1);
  std::string now = old;
  for (size_t k = 100; k < now.size(); k += 1009) now[k] = static_cast<char>(now[k] + 3);
  std::string damaged = old;
  for (size_t k = 5000; k < 6000; ++k) damaged[k] = static_cast<char>(damaged[k] ^ 0x40);
  Images im = WriteBsdiffPair(old, now, std::nullopt, damaged);
  auto chain = ImageChain::Open(im.top, {im.base});
  REQUIRE(chain.ok());
  size_t big = *(*chain)->top().Find("big");
  ThreadHelpers helpers;
  bool used = false;
  auto plain = (*chain)->ReadFile(big);
  auto helped = (*chain)->ReadFile(big, helpers, [&](std::string_view) {
    used = true;
    return absl::OkStatus();
  });
  for (const auto* r : {&plain, &helped}) {
    REQUIRE_FALSE(r->ok());
    CHECK(r->status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(r->status().message()),
               Catch::Contains(StrCat(im.top, ": /big: ")) && Catch::Contains(StrCat(im.base, ": /big: ")) &&
                   Catch::Contains("does not match its sha256"));
  }
  CHECK_FALSE(used);
  // The base read on its own fails the same way.
  auto base = (*chain)->ReadByDigest(Sha256(old));
  CHECK(base.status().code() == absl::StatusCode::kDataLoss);
}
