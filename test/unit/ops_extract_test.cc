// ExtractImage: the tree written to disk is exactly the image's tree (types,
// full modes, owners, mtimes, link targets, hard links, xattrs, bytes), for a
// full image and for a delta chain; bad targets fail with the directory named.
// Extract needs root (ownership, device nodes); as another user the test
// checks the refusal instead.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/extract.h"
#include "d4c/base/strcat.h"
#include "oci_fixture.h"
#include "tree_scan.h"

using namespace d4c;
using oci_test::LayerBuilder;
using oci_test::ScratchDir;

namespace {

std::string ConvertLayer(const ScratchDir& dir, const std::string& name, const LayerBuilder& layer) {
  std::string layout = StrCat(dir.path(), "/oci-", name);
  REQUIRE(oci_test::WriteOciLayout(layout, {{name, {layer.Tar()}}}).ok());
  std::string out = StrCat(dir.path(), "/", name, ".cdimg");
  ConvertOptions co;
  co.threads = 2;
  co.zstd_level = 3;
  auto st = ConvertImage(StrCat("oci:", layout, ":", name), out, co);
  INFO(std::string(st.status().message()));
  REQUIRE(st.ok());
  return out;
}

// Every kind of entry a container image can carry.
LayerBuilder RichLayer(const std::string& version) {
  LayerBuilder l;
  l.Dir("bin").Dir("etc").Dir("srv", 01777).Dir("data", 0750).Owner(1000, 1001);
  l.File("bin/tool", "#!/bin/sh\necho " + version + "\n", 04755);
  l.File("bin/group-tool", "sgid\n", 02711).Owner(0, 50);
  l.File("etc/config", "key=" + version + "\n" + std::string(70000, 'c'), 0640).Owner(1000, 1001).Mtime(1234567, 890);
  l.File("etc/empty", "", 0600);
  l.File("data/blob", std::string(300000, 'x') + version, 0644).WithXattr("user.d4c.note", "kept " + version);
  l.Symlink("bin/sh", "tool");
  l.Symlink("etc/dangling", "/nowhere/at/all");
  l.Hardlink("bin/tool-again", "bin/tool");
  l.Fifo("srv/pipe", 0620);
  l.Device("srv/null", EntryType::kCharDevice, 1, 3, 0666);
  l.Device("srv/loop9", EntryType::kBlockDevice, 7, 9, 0660);
  return l;
}

std::vector<Entry> TreeOf(const ImageChain& chain) {
  std::vector<Entry> out;
  for (size_t i = 0; i < chain.top().size(); ++i) out.push_back(chain.top().EntryAt(i));
  return out;
}

void RequireSameTree(const ImageChain& chain, const std::string& dir) {
  auto scanned = testing::ScanTree(dir);
  INFO(std::string(scanned.status().message()));
  REQUIRE(scanned.ok());
  auto diffs = testing::DiffTrees(TreeOf(chain), *scanned);
  std::string all;
  for (const auto& d : diffs) all += d + "\n";
  INFO(all);
  CHECK(diffs.empty());
}

}  // namespace

TEST_CASE("extract: a full image gives exactly its tree on disk", "[extract]") {
  ScratchDir dir;
  auto image = ConvertLayer(dir, "v1", RichLayer("1"));
  auto chain = ImageChain::Open(image, {});
  REQUIRE(chain.ok());
  std::string out = StrCat(dir.path(), "/rootfs");
  auto stats = ExtractImage(**chain, out, ExtractOptions{.threads = 2});
  if (geteuid() != 0) {
    REQUIRE(stats.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK_THAT(std::string(stats.status().message()), Catch::Contains("must run as root"));
    return;
  }
  INFO(std::string(stats.status().message()));
  REQUIRE(stats.ok());
  CHECK(stats->entries == (*chain)->top().size());
  RequireSameTree(**chain, out);
  // The properties that matter most, stated directly as well.
  struct stat st;
  REQUIRE(lstat((out + "/bin/tool").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 04755);
  CHECK(st.st_nlink == 2);
  struct stat st2;
  REQUIRE(lstat((out + "/bin/tool-again").c_str(), &st2) == 0);
  CHECK(st2.st_ino == st.st_ino);
  REQUIRE(lstat((out + "/srv/null").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(oci_test::ReadAll(out + "/etc/config").starts_with("key=1\n"));
}

TEST_CASE("extract: a delta chain gives the new version's tree", "[extract]") {
  if (geteuid() != 0) return;  // covered by the refusal check above
  ScratchDir dir;
  auto v1 = ConvertLayer(dir, "v1", RichLayer("1"));
  auto v2 = ConvertLayer(dir, "v2", RichLayer("2"));
  std::string delta = StrCat(dir.path(), "/d12.cdimg");
  auto old_chain = ImageChain::Open(v1, {});
  auto full = ImageChain::Open(v2, {});
  REQUIRE(old_chain.ok());
  REQUIRE(full.ok());
  DiffOptions o;
  o.threads = 2;
  auto d = DiffImages(**old_chain, **full, delta, o);
  INFO(std::string(d.status().message()));
  REQUIRE(d.ok());
  auto chain = ImageChain::Open(delta, {v1});
  REQUIRE(chain.ok());
  CHECK((*chain)->top().header().image_id == (*full)->top().header().image_id);
  std::string out = StrCat(dir.path(), "/rootfs");
  auto stats = ExtractImage(**chain, out, ExtractOptions{.threads = 2});
  INFO(std::string(stats.status().message()));
  REQUIRE(stats.ok());
  RequireSameTree(**full, out);
  CHECK(oci_test::ReadAll(out + "/data/blob") == std::string(300000, 'x') + "2");
}

TEST_CASE("extract: refuses a target that is not an empty directory, naming it", "[extract]") {
  if (geteuid() != 0) return;
  ScratchDir dir;
  auto image = ConvertLayer(dir, "v1", RichLayer("1"));
  auto chain = ImageChain::Open(image, {});
  REQUIRE(chain.ok());
  std::string out = StrCat(dir.path(), "/busy");
  std::filesystem::create_directories(out);
  std::ofstream(out + "/keep") << "precious";
  auto stats = ExtractImage(**chain, out, ExtractOptions{});
  REQUIRE_FALSE(stats.ok());
  CHECK(stats.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(stats.status().message()), Catch::Contains(out));
  CHECK(oci_test::ReadAll(out + "/keep") == "precious");  // nothing already there is touched
}

namespace {

// Entries of `dir` whose name contains `part`.
std::vector<std::string> Named(const std::string& dir, const std::string& part) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST_CASE("extract: a failure midway leaves no partial tree", "[extract]") {
  if (geteuid() != 0) return;
  ScratchDir dir;
  auto image = ConvertLayer(dir, "v1", RichLayer("1"));
  auto chain = ImageChain::Open(image, {});
  REQUIRE(chain.ok());
  // The second file read fails as a corrupt blob would: the first file and
  // every directory, link and device are on disk by then.
  std::atomic<int> reads{0};
  (*chain)->SetReadFaultForTesting([&](const CdimgImage&, const Recipe&) {
    return ++reads == 2 ? absl::DataLossError("injected: content does not match its sha256") : absl::OkStatus();
  });

  SECTION("an absent target is never created, and no temporary directory remains") {
    std::string out = StrCat(dir.path(), "/rootfs");
    auto stats = ExtractImage(**chain, out, ExtractOptions{.threads = 1});
    REQUIRE_FALSE(stats.ok());
    CHECK(stats.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(stats.status().message()), Catch::Contains("injected"));
    CHECK(reads >= 2);
    CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(out)));
    CHECK(Named(dir.path(), "rootfs").empty());
    CHECK(Named(dir.path(), "extract").empty());
  }
  SECTION("an empty target is emptied again, with its mode and times unchanged") {
    std::string out = StrCat(dir.path(), "/empty-target");
    REQUIRE(mkdir(out.c_str(), 0711) == 0);
    REQUIRE(chmod(out.c_str(), 0711) == 0);
    timespec ts[2] = {{1111, 0}, {2222, 0}};
    REQUIRE(utimensat(AT_FDCWD, out.c_str(), ts, 0) == 0);
    auto stats = ExtractImage(**chain, out, ExtractOptions{.threads = 1});
    REQUIRE_FALSE(stats.ok());
    CHECK(std::filesystem::is_empty(out));
    struct stat st;
    REQUIRE(lstat(out.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0711);
    CHECK(st.st_mtim.tv_sec == 2222);
    CHECK(Named(dir.path(), "extract").empty());
  }
}

TEST_CASE("extract: success renames the finished tree into place", "[extract]") {
  if (geteuid() != 0) return;
  ScratchDir dir;
  auto image = ConvertLayer(dir, "v1", RichLayer("1"));
  auto chain = ImageChain::Open(image, {});
  REQUIRE(chain.ok());
  std::string out = StrCat(dir.path(), "/rootfs/");  // a trailing slash names the same directory
  auto stats = ExtractImage(**chain, out, ExtractOptions{.threads = 2});
  INFO(std::string(stats.status().message()));
  REQUIRE(stats.ok());
  RequireSameTree(**chain, out);
  CHECK(Named(dir.path(), "extract").empty());
}
