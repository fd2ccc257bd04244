// store_report (d4c/snap/store_report.h): scanning a store of real cdimgs,
// chain depth and bytes, names from image records, users from snapshots,
// broken records, and what removing image snapshots would free.
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"
#include "d4c/cdimg.h"
#include "d4c/metadata_keys.h"
#include "d4c/snap/store_report.h"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::snap;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-store-report-test-", getpid(), "-", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<Entry> Tree(int v, const std::string& big) {
  return {oci_test::DirEntry(""), oci_test::FileEntry("big", big), oci_test::FileEntry(StrCat("v", v), "")};
}

std::string HexOf(const std::string& path) {
  auto h = CdimgImage::ReadHeader(path);
  REQUIRE(h.ok());
  return DigestHex(h->image_id);
}

// Writes into `store` under its store name <hex>.cdimg; returns the hex id.
std::string WriteFull(const std::string& store, const std::vector<Entry>& entries, const std::string& big) {
  std::string tmp = store + "/full.tmp";
  auto w = CdimgWriter::Create(tmp, {});
  REQUIRE(w.ok());
  std::string z(ZSTD_compressBound(big.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), big.data(), big.size(), 3));
  auto ref = (*w)->AppendBlob(z);
  REQUIRE(ref.ok());
  std::vector<Recipe> recipes(entries.size());
  recipes[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  std::string hex = HexOf(tmp);
  fs::rename(tmp, store + "/" + hex + ".cdimg");
  return hex;
}

// A delta from the full image at `parent_full` (a delta's id is its tree's,
// so a delta from v2's full image is the delta from v2).
std::string WriteDelta(const std::string& store, const std::string& parent_full, const std::vector<Entry>& entries) {
  std::string tmp = store + "/delta.tmp";
  auto parent = CdimgImage::Open(parent_full);
  INFO((parent.ok() ? std::string() : std::string(Msg(parent.status().message()))));
  REQUIRE(parent.ok());
  auto w = CdimgWriter::Create(tmp, {parent->get()});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(entries.size());
  recipes[1].kind = Recipe::Kind::kBase;
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  std::string hex = HexOf(tmp);
  fs::rename(tmp, store + "/" + hex + ".cdimg");
  return hex;
}

uint64_t SizeIn(const std::string& store, const std::string& hex) { return fs::file_size(store + "/" + hex + ".cdimg"); }

ImageRecord Named(const std::string& name, const std::string& hex) {
  ImageRecord r;
  r.name = name;
  r.labels[keys::kImageId] = "sha256:" + hex;
  return r;
}

SnapshotRecord ImageSnap(const std::string& hex) {
  return {"sha256:" + hex, "", SnapshotRecord::Kind::kCommitted, {}};
}

// A store with v1 (full), v1->v2, v2->v3 and an unrelated full image w.
struct Store {
  std::string dir, v1, v2, v3, w;
  Store() {
    dir = TempDir("store");
    std::mt19937 rng(3);
    std::string big(20000, '\0'), other(5000, '\0');
    for (auto& c : big) c = static_cast<char>(rng());
    for (auto& c : other) c = static_cast<char>(rng());
    std::string scratch = TempDir("scratch");
    v1 = WriteFull(dir, Tree(1, big), big);
    v2 = WriteDelta(dir, dir + "/" + v1 + ".cdimg", Tree(2, big));
    std::string v2full = WriteFull(scratch, Tree(2, big), big);
    REQUIRE(v2full == v2);
    v3 = WriteDelta(dir, scratch + "/" + v2full + ".cdimg", Tree(3, big));
    w = WriteFull(dir, Tree(9, other), other);
  }
};

const Store& S() {
  static Store s;
  return s;
}

}  // namespace

TEST_CASE("ScanStore reads every image's kind and parent, skips copies in progress") {
  std::string dir = TempDir("scan");
  for (const auto& hex : {S().v1, S().v2}) fs::copy_file(S().dir + "/" + hex + ".cdimg", dir + "/" + hex + ".cdimg");
  std::ofstream(dir + "/.import-1234.tmp") << "half a copy";
  std::string bad(64, 'a');
  std::ofstream(dir + "/" + bad + ".cdimg") << "not a cdimg";
  auto scan = ScanStore(dir);
  REQUIRE(scan.ok());
  REQUIRE(scan->size() == 3);
  std::map<std::string, StoreEntry> by;
  for (const auto& e : *scan) by[e.id_hex] = e;
  CHECK_FALSE(by.at(S().v1).is_delta);
  CHECK(by.at(S().v1).parent_hex.empty());
  CHECK(by.at(S().v1).file_bytes == SizeIn(S().dir, S().v1));
  CHECK(by.at(S().v2).is_delta);
  CHECK(by.at(S().v2).parent_hex == S().v1);
  CHECK_FALSE(by.at(bad).error.empty());
  // A missing store is an empty one.
  auto none = ScanStore(dir + "/nope");
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("BuildStoreReport: depth and chain bytes, names, users, broken records") {
  auto scan = ScanStore(S().dir);
  REQUIRE(scan.ok());
  std::string gone(64, 'b');
  std::vector<ImageRecord> images = {Named("docker.io/library/app:v1", S().v1), Named("docker.io/library/app:v3", S().v3),
                                     Named("docker.io/library/app:latest", S().v3), Named("docker.io/library/lost:1", gone)};
  ImageRecord plain;  // an image of another snapshotter: no label
  plain.name = "docker.io/library/busybox:latest";
  images.push_back(plain);
  std::vector<SnapshotRecord> snaps = {ImageSnap(S().v1), ImageSnap(S().v3),
                                       {"ctr1", "sha256:" + S().v3, SnapshotRecord::Kind::kActive, {}},
                                       {"view1", "sha256:" + S().v3, SnapshotRecord::Kind::kView, {}},
                                       {"other", "sha256:" + gone, SnapshotRecord::Kind::kActive, {}}};
  auto r = BuildStoreReport(*scan, images, snaps);
  REQUIRE(r.images.size() == 4);
  uint64_t s1 = SizeIn(S().dir, S().v1), s2 = SizeIn(S().dir, S().v2), s3 = SizeIn(S().dir, S().v3),
           sw = SizeIn(S().dir, S().w);
  CHECK(r.total_bytes == s1 + s2 + s3 + sw);
  const StoreEntry* e1 = r.Find(S().v1);
  const StoreEntry* e2 = r.Find(S().v2);
  const StoreEntry* e3 = r.Find(S().v3);
  const StoreEntry* ew = r.Find(S().w);
  REQUIRE((e1 && e2 && e3 && ew));
  CHECK(e1->depth == 0);
  CHECK(e2->depth == 1);
  CHECK(e3->depth == 2);
  CHECK(e1->chain_bytes == s1);
  CHECK(e2->chain_bytes == s1 + s2);
  CHECK(e3->chain_bytes == s1 + s2 + s3);
  CHECK(e1->children == std::vector<std::string>{S().v2});
  CHECK(e2->children == std::vector<std::string>{S().v3});
  CHECK(e3->children.empty());
  CHECK(e1->names == std::vector<std::string>{"docker.io/library/app:v1"});
  CHECK(e2->names.empty());
  CHECK(e3->names == std::vector<std::string>{"docker.io/library/app:latest", "docker.io/library/app:v3"});
  CHECK(e1->image_snapshot);
  CHECK_FALSE(e2->image_snapshot);
  CHECK(e3->users == std::vector<std::string>{"ctr1", "view1"});
  CHECK(e1->users.empty());
  CHECK(e3->missing_ancestor.empty());
  REQUIRE(r.broken.size() == 1);
  CHECK(r.broken[0].name == "docker.io/library/lost:1");
  CHECK(r.broken[0].image_id == "sha256:" + gone);
  CHECK(r.broken[0].reason.find("not in the snapshotter's store") != std::string::npos);
}

TEST_CASE("BuildStoreReport: a delta whose parent left the store is broken, chain bytes count what is there") {
  std::string dir = TempDir("orphan");
  fs::copy_file(S().dir + "/" + S().v2 + ".cdimg", dir + "/" + S().v2 + ".cdimg");
  fs::copy_file(S().dir + "/" + S().v3 + ".cdimg", dir + "/" + S().v3 + ".cdimg");
  auto scan = ScanStore(dir);
  REQUIRE(scan.ok());
  auto r = BuildStoreReport(*scan, {Named("docker.io/library/app:v3", S().v3)}, {ImageSnap(S().v3)});
  const StoreEntry* e3 = r.Find(S().v3);
  REQUIRE(e3);
  CHECK(e3->missing_ancestor == S().v1);
  CHECK(e3->depth == 1);
  CHECK(e3->chain_bytes == SizeIn(dir, S().v2) + SizeIn(dir, S().v3));
  REQUIRE(r.broken.size() == 1);
  CHECK(r.broken[0].reason.find(S().v1) != std::string::npos);
}

TEST_CASE("StillNeeded: removing an image keeps what a remaining image's chain needs") {
  auto scan = ScanStore(S().dir);
  REQUIRE(scan.ok());
  // v1 and v3 loaded (v2 an intermediate of v3's pull), w held by another namespace.
  auto r = BuildStoreReport(*scan, {Named("app:v1", S().v1), Named("app:v3", S().v3)}, {ImageSnap(S().v1), ImageSnap(S().v3)});
  std::set<std::string> all = {S().v1, S().v2, S().v3, S().w};
  CHECK(StillNeeded(r, {}) == all);
  // rm v1: v3's chain still needs it.
  CHECK(StillNeeded(r, {S().v1}) == all);
  // rm v3: v2 and v3 go, v1 stays (its own snapshot), w stays (not ours).
  CHECK(StillNeeded(r, {S().v3}) == std::set<std::string>{S().v1, S().w});
  // both: only w.
  CHECK(StillNeeded(r, {S().v1, S().v3}) == std::set<std::string>{S().w});
}
