// Pull's disk check (PullOptions::store_dir, fs_space): a plan that does not
// fit refuses before anything is downloaded, with the numbers; one that fits
// goes on. Free space is faked through the fs_space seam.
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <random>

#include "d4c/base/strcat.h"
#include "d4c/cdimg.h"
#include "d4c/registry/transfer.h"
#include "fake_registry.h"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::registry;
using d4c::registry_test::FakeRegistry;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-pull-space-test-", getpid(), "-", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// A full cdimg of one incompressible file of `n` bytes.
std::string WriteFull(const std::string& path, size_t n) {
  std::mt19937 rng(7);
  std::string big(n, '\0');
  for (auto& c : big) c = static_cast<char>(rng());
  std::vector<Entry> entries = {oci_test::DirEntry(""), oci_test::FileEntry("big", big)};
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::string z(ZSTD_compressBound(big.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), big.data(), big.size(), 3));
  auto ref = (*w)->AppendBlob(z);
  REQUIRE(ref.ok());
  std::vector<Recipe> recipes(entries.size());
  recipes[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  return path;
}

class NoLocal : public LocalImages {
 public:
  absl::StatusOr<std::set<std::string>> ImageIds() override { return std::set<std::string>{}; }
};

class CountingSink : public ImageSink {
 public:
  int accepted = 0;
  absl::Status Accept(const std::string&, const Artifact&, bool) override {
    ++accepted;
    return absl::OkStatus();
  }
  absl::Status AcceptHeld(const std::string&) override { return absl::OkStatus(); }
};

struct Setup {
  FakeRegistry r;
  std::string dl, store;
  uint64_t size = 0;
  Setup(const std::string& name) {
    std::string dir = TempDir(name);
    std::string cdimg = WriteFull(dir + "/v1.cdimg", 3 << 20);  // 3 MiB of noise: ~3 MiB cdimg
    size = fs::file_size(cdimg);
    PushOptions p;
    p.cdimg = cdimg;
    p.repository = "team/app";
    p.tag = "v1";
    REQUIRE(Push(p, r).ok());
    dl = dir + "/downloads";
    store = dir + "/root/store";
  }
  PullOptions Options(uint64_t dl_free, uint64_t store_free, bool same_fs) {
    PullOptions o;
    o.image = "team/app:v1";
    o.download_dir = dl;
    o.store_dir = store;
    o.space_margin = 1 << 20;
    std::string dl_dir = dl;
    o.fs_space = [=](const std::string& path) -> absl::StatusOr<FsSpace> {
      if (path == dl_dir) return FsSpace{dl_free, 1};
      return FsSpace{store_free, same_fs ? 1u : 2u};
    };
    return o;
  }
};

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("pull refuses before downloading when the store's filesystem is too small, with the numbers") {
  Setup s("store");
  NoLocal local;
  CountingSink sink;
  auto p = Pull(s.Options(100ull << 20, 2ull << 20, false), s.r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kResourceExhausted);
  std::string m(Msg(p.status().message()));
  INFO(m);
  uint64_t mb = (s.size + (1 << 20) - 1) >> 20;
  CHECK(m.find(StrCat(mb, " MB in ", s.dl, " (download), 100 MB free there")) != std::string::npos);
  CHECK(m.find(StrCat(mb, " MB in ", s.store, " (store), 2 MB free there")) != std::string::npos);
  CHECK(m.find("ctr-cli prune") != std::string::npos);
  CHECK(s.r.downloads.empty());
  CHECK(s.r.served == 0);
  CHECK(sink.accepted == 0);
  CHECK(FilesIn(s.dl) == 0);
}

TEST_CASE("pull refuses when download and store share a filesystem that holds only one copy") {
  Setup s("samefs");
  NoLocal local;
  CountingSink sink;
  // Room for the download, not for the download plus the store's copy.
  uint64_t free_bytes = s.size + (1 << 20) + (1 << 20);
  auto p = Pull(s.Options(free_bytes, free_bytes, true), s.r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kResourceExhausted);
  std::string m(Msg(p.status().message()));
  INFO(m);
  CHECK(m.find("one filesystem") != std::string::npos);
  CHECK(m.find(StrCat((2 * s.size + (1 << 20) - 1) >> 20, " MB at the peak")) != std::string::npos);
  CHECK(s.r.downloads.empty());
  CHECK(sink.accepted == 0);
}

TEST_CASE("pull that fits goes on, a dry run does not check") {
  Setup s("fits");
  NoLocal local;
  CountingSink sink;
  auto p = Pull(s.Options(100ull << 20, 100ull << 20, false), s.r, local, sink);
  INFO((p.ok() ? std::string() : std::string(Msg(p.status().message()))));
  REQUIRE(p.ok());
  CHECK(sink.accepted == 1);
  CHECK(s.r.served == s.size);
  // Dry runs do not check (nothing is written).
  PullOptions dry = s.Options(0, 0, false);
  dry.dry_run = true;
  CHECK(Pull(dry, s.r, local, sink).ok());
}
