// Push and Pull (transfer.h) against an in-memory registry, with fake local
// images and a recording sink: what is uploaded or skipped, the catalog, the
// chain chosen, bytes moved, resumed downloads, refused files, hand-over order.
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "d4c/cdimg.h"
#include "d4c/registry/transfer.h"
#include "d4c/base/strcat.h"
#include "fake_registry.h"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::registry;
using d4c::registry_test::FakeRegistry;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const std::string& name) {
  static int n = 0;
  auto dir = fs::temp_directory_path() / StrCat("d4c-transfer-test-", getpid(), "-", ++n, "-", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

class FakeLocal : public LocalImages {
 public:
  std::set<std::string> ids;
  absl::StatusOr<std::set<std::string>> ImageIds() override { return ids; }
};

// Records the hand-over; copies each file (the CLI's sink copies into a store).
class RecordingSink : public ImageSink {
 public:
  struct Got {
    std::string image_id, parent_id, bytes;
    bool wanted;
  };
  std::vector<Got> got;
  std::vector<std::string> held;
  std::string fail_wanted;  // if set, Accept of the wanted image fails with this
  absl::Status Accept(const std::string& path, const Artifact& a, bool wanted) override {
    if (wanted && !fail_wanted.empty()) return absl::InternalError(fail_wanted);
    got.push_back({a.image_id, a.parent_id, oci_test::ReadAll(path), wanted});
    return absl::OkStatus();
  }
  absl::Status AcceptHeld(const std::string& image_id) override {
    held.push_back(image_id);
    return absl::OkStatus();
  }
};

// Versions 1..3 of a tiny tree: the same incompressible 20000-byte file
// plus an empty marker file "vN". Full images carry the big file; deltas
// take it from their parent, so they are far smaller.
std::vector<Entry> Tree(int v, const std::string& big) {
  return {oci_test::DirEntry(""), oci_test::FileEntry("big", big), oci_test::FileEntry(StrCat("v", v), "")};
}

std::string WriteFull(const std::string& path, const std::vector<Entry>& entries, const std::string& big) {
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::string z(ZSTD_compressBound(big.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), big.data(), big.size(), 3));
  auto ref = (*w)->AppendBlob(z);
  REQUIRE(ref.ok());
  std::vector<Recipe> recipes(entries.size());
  recipes[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish("{}", entries, recipes).ok());
  return path;
}

std::string WriteDelta(const std::string& path, const std::string& parent_path, const std::vector<Entry>& entries,
                       const std::string& pad = "") {
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  auto w = CdimgWriter::Create(path, {parent->get()});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(entries.size());
  recipes[1].kind = Recipe::Kind::kBase;
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish(StrCat("{\"pad\":\"", pad, "\"}"), entries, recipes).ok());
  return path;
}

std::string IdOf(const std::string& path) {
  auto h = CdimgImage::ReadHeader(path);
  REQUIRE(h.ok());
  return "sha256:" + DigestHex(h->image_id);
}

uint64_t SizeOf(const std::string& p) { return fs::file_size(p); }

// v1 full, v1->v2, v2->v3, the skip-delta v1->v3 and v3 full, written once.
struct Series {
  std::string dir, v1, d12, d23, d13, v3full;
  std::string id1, id2, id3;
  Series() {
    dir = TempDir("series");
    std::mt19937 rng(42);
    std::string big(20000, '\0');
    for (auto& c : big) c = static_cast<char>(rng());
    v1 = WriteFull(dir + "/v1.cdimg", Tree(1, big), big);
    std::string v2full = WriteFull(dir + "/v2.cdimg", Tree(2, big), big);
    v3full = WriteFull(dir + "/v3.cdimg", Tree(3, big), big);
    d12 = WriteDelta(dir + "/d12.cdimg", v1, Tree(2, big));
    d23 = WriteDelta(dir + "/d23.cdimg", v2full, Tree(3, big));
    d13 = WriteDelta(dir + "/d13.cdimg", v1, Tree(3, big));
    id1 = IdOf(v1);
    id2 = IdOf(v2full);
    id3 = IdOf(v3full);
  }
};

const Series& S() {
  static Series s;
  return s;
}

PushResult MustPush(FakeRegistry& r, const std::string& file, const std::string& tag) {
  PushOptions o;
  o.cdimg = file;
  o.repository = "team/app";
  o.tag = tag;
  auto p = Push(o, r);
  INFO((p.ok() ? std::string() : Msg(p.status().message())));
  REQUIRE(p.ok());
  return *p;
}

// The registry after pushing the series as the e2e test does.
FakeRegistry Pushed() {
  FakeRegistry r;
  MustPush(r, S().v1, "v1");
  MustPush(r, S().d12, "v2");
  MustPush(r, S().d23, "v3");
  MustPush(r, S().d13, "");
  return r;
}

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

PullOptions PullOf(const std::string& image, const std::string& dir) {
  PullOptions o;
  o.image = image;
  o.download_dir = dir;
  return o;
}

}  // namespace

TEST_CASE("push uploads a cdimg once, tags it and lists it in the catalog") {
  FakeRegistry r;
  PushResult p = MustPush(r, S().v1, "v1");
  CHECK(p.blob_uploaded);
  CHECK(p.config_uploaded);
  CHECK(p.artifact.image_id == S().id1);
  CHECK(p.artifact.parent_id.empty());
  CHECK(p.artifact.size == SizeOf(S().v1));
  CHECK(p.artifact.blob_digest == *Sha256DigestOfFile(S().v1));
  CHECK(r.blobs.at(p.artifact.blob_digest) == oci_test::ReadAll(S().v1));
  CHECK(p.bytes_uploaded == SizeOf(S().v1) + ArtifactConfig(p.artifact).size());
  CHECK(p.catalog_changed);
  CHECK(p.catalog_entries == 1);
  // the tag and the d4c-… tag name the same artifact manifest
  REQUIRE(r.manifests.count("v1"));
  REQUIRE(r.manifests.count(ArtifactTag(p.artifact)));
  CHECK(r.manifests.at("v1").digest == p.artifact.manifest_digest);
  CHECK(r.manifests.at(ArtifactTag(p.artifact)).digest == p.artifact.manifest_digest);

  PushResult d = MustPush(r, S().d12, "v2");
  CHECK(d.artifact.parent_id == S().id1);
  CHECK(d.artifact.image_id == S().id2);
  CHECK(d.catalog_entries == 2);

  // the same file again: nothing uploaded, catalog untouched
  size_t uploads = r.uploads.size();
  std::string catalog_before = r.manifests.at(kCatalogTag).body;
  PushResult again = MustPush(r, S().d12, "v2");
  CHECK_FALSE(again.blob_uploaded);
  CHECK_FALSE(again.config_uploaded);
  CHECK(again.bytes_uploaded == 0);
  CHECK_FALSE(again.catalog_changed);
  CHECK(again.catalog_entries == 2);
  CHECK(r.uploads.size() == uploads);
  CHECK(r.manifests.at(kCatalogTag).body == catalog_before);
}

TEST_CASE("push re-lists tagged artifacts a concurrent push dropped from the catalog") {
  FakeRegistry r = Pushed();
  auto c = FetchCatalog(r, "team/app");
  REQUIRE(c.ok());
  REQUIRE(c->artifacts.size() == 4);
  Catalog stale{{c->artifacts[0]}};
  REQUIRE(r.PutManifest("team/app", kCatalogTag, kOciIndexType, SerializeCatalog(stale)).ok());
  PushResult p = MustPush(r, S().d23, "v3");
  CHECK(p.catalog_adopted == 2);
  CHECK(p.catalog_entries == 4);
  auto after = FetchCatalog(r, "team/app");
  REQUIRE(after.ok());
  CHECK(after->artifacts.size() == 4);
}

TEST_CASE("push refuses bad names and missing files, naming them") {
  FakeRegistry r;
  PushOptions o;
  o.cdimg = S().v1;
  o.repository = "Bad Name";
  auto p = Push(o, r);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(p.status().message()).find("Bad Name") != std::string::npos);
  o.repository = "ok";
  o.cdimg = S().dir + "/no-such.cdimg";
  p = Push(o, r);
  REQUIRE_FALSE(p.ok());
  CHECK(Msg(p.status().message()).find("no-such.cdimg") != std::string::npos);
  CHECK(r.uploads.empty());
}

TEST_CASE("pull into an empty client: a full image, then the cheapest delta, handed over in order") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  RecordingSink sink;
  std::string dir = TempDir("dl-empty");
  int planned = 0;
  PullOptions o = PullOf("team/app:v3", dir);
  o.planned = [&](const PullResult& p) {
    ++planned;
    CHECK(p.bytes_downloaded == 0);
    CHECK(sink.got.empty());  // before any hand-over
  };
  auto p = Pull(o, r, local, sink);
  INFO((p.ok() ? std::string() : Msg(p.status().message())));
  REQUIRE(p.ok());
  CHECK(planned == 1);
  uint64_t best = std::min(SizeOf(S().d13), SizeOf(S().d12) + SizeOf(S().d23));
  CHECK(p->wanted.image_id == S().id3);
  CHECK(p->plan.from.empty());
  CHECK(p->plan.bytes == SizeOf(S().v1) + best);
  CHECK(p->bytes_downloaded == p->plan.bytes);
  CHECK(r.served == p->plan.bytes);
  CHECK(p->local_images == 0);
  CHECK(p->full_image_size == 0);  // v3 was pushed only as deltas
  CHECK(p->handed_over);
  REQUIRE(sink.got.size() == p->plan.steps.size());
  CHECK(sink.got.front().image_id == S().id1);
  CHECK(sink.got.front().bytes == oci_test::ReadAll(S().v1));
  CHECK_FALSE(sink.got.front().wanted);
  CHECK(sink.got.back().image_id == S().id3);
  CHECK(sink.got.back().wanted);
  for (size_t i = 1; i < sink.got.size(); ++i) CHECK(sink.got[i].parent_id == sink.got[i - 1].image_id);
  CHECK(sink.held.empty());
  CHECK(FilesIn(dir) == 0);  // handed over: nothing left in the download directory
}

TEST_CASE("pull from a held image: the cheapest chain from it, only what is new") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  local.ids = {S().id1};
  RecordingSink sink;
  auto p = Pull(PullOf("team/app:v3", TempDir("dl-v1")), r, local, sink);
  REQUIRE(p.ok());
  uint64_t s13 = SizeOf(S().d13), chain = SizeOf(S().d12) + SizeOf(S().d23);
  CHECK(p->plan.from == S().id1);
  CHECK(p->plan.bytes == std::min(s13, chain));
  if (s13 < chain) {
    REQUIRE(sink.got.size() == 1);
    CHECK(sink.got[0].bytes == oci_test::ReadAll(S().d13));
  }
  CHECK(sink.got.back().wanted);
  CHECK(sink.got.back().image_id == S().id3);
  CHECK(p->local_images == 1);
  // v2 with v1 and v3 held: only the v1->v2 delta is new
  local.ids.insert(S().id3);
  RecordingSink sink2;
  p = Pull(PullOf("team/app:v2", TempDir("dl-v2")), r, local, sink2);
  REQUIRE(p.ok());
  CHECK(p->bytes_downloaded == SizeOf(S().d12));
  REQUIRE(sink2.got.size() == 1);
  CHECK(sink2.got[0].bytes == oci_test::ReadAll(S().d12));
}

TEST_CASE("pull of a held image downloads nothing and says so to the sink") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  local.ids = {S().id1, S().id3};
  RecordingSink sink;
  auto p = Pull(PullOf("team/app:v3", ""), r, local, sink);  // no download dir needed
  REQUIRE(p.ok());
  CHECK(p->plan.steps.empty());
  CHECK(p->bytes_downloaded == 0);
  CHECK(r.downloads.empty());
  CHECK(sink.got.empty());
  CHECK(sink.held == std::vector<std::string>{S().id3});
}

TEST_CASE("a dry run plans and stops: no download, no hand-over") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  RecordingSink sink;
  std::string dir = TempDir("dl-dry");
  PullOptions o = PullOf("team/app:v1", dir);
  o.dry_run = true;
  auto p = Pull(o, r, local, sink);
  REQUIRE(p.ok());
  CHECK(p->plan.bytes == SizeOf(S().v1));
  CHECK(p->full_image_size == SizeOf(S().v1));
  CHECK_FALSE(p->handed_over);
  CHECK(r.downloads.empty());
  CHECK(sink.got.empty());
  CHECK(sink.held.empty());
  CHECK(FilesIn(dir) == 0);
}

TEST_CASE("an interrupted pull hands nothing over and the next one resumes") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  std::string dir = TempDir("dl-cut");
  std::string v1_digest = *Sha256DigestOfFile(S().v1);
  r.cut_after[v1_digest] = 5000;
  RecordingSink sink;
  auto p = Pull(PullOf("team/app:v1", dir), r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kUnavailable);
  CHECK(Msg(p.status().message()).find("download of blob") != std::string::npos);
  CHECK(sink.got.empty());
  std::string partial = StrCat(dir, "/", v1_digest.substr(7), ".cdimg.partial");
  REQUIRE(fs::exists(partial));
  CHECK(fs::file_size(partial) == 5000);

  r.cut_after.clear();
  r.served = 0;
  p = Pull(PullOf("team/app:v1", dir), r, local, sink);
  REQUIRE(p.ok());
  CHECK(p->bytes_downloaded == SizeOf(S().v1) - 5000);
  CHECK(r.served == SizeOf(S().v1) - 5000);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].bytes == oci_test::ReadAll(S().v1));
  CHECK(FilesIn(dir) == 0);
}

TEST_CASE("a file that is not the image the catalog names is refused") {
  FakeRegistry r = Pushed();
  // the catalog entry of v1->v2 points at the blob of v2->v3
  auto c = FetchCatalog(r, "team/app");
  REQUIRE(c.ok());
  std::string d23 = *Sha256DigestOfFile(S().d23);
  for (auto& a : c->artifacts)
    if (a.image_id == S().id2) {
      a.blob_digest = d23;
      a.size = SizeOf(S().d23);
    }
  REQUIRE(r.PutManifest("team/app", kCatalogTag, kOciIndexType, SerializeCatalog(*c)).ok());
  FakeLocal local;
  local.ids = {S().id1};
  RecordingSink sink;
  auto p = Pull(PullOf("team/app:v2", TempDir("dl-lie")), r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kDataLoss);
  std::string m = Msg(p.status().message());
  CHECK(m.find(d23) != std::string::npos);
  CHECK(m.find("catalog says " + S().id2) != std::string::npos);
  CHECK(sink.got.empty());
}

TEST_CASE("a missing tag fails naming it") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  RecordingSink sink;
  auto p = Pull(PullOf("team/app:nope", TempDir("dl-nope")), r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kNotFound);
  CHECK(Msg(p.status().message()).find("team/app:nope") != std::string::npos);
  CHECK(r.downloads.empty());
  CHECK(sink.got.empty());
}

TEST_CASE("a sink error stops the pull, what was not accepted stays downloaded") {
  FakeRegistry r = Pushed();
  FakeLocal local;
  RecordingSink sink;
  std::string dir = TempDir("dl-sinkfail");
  sink.fail_wanted = "containerd is down";
  auto p = Pull(PullOf("team/app:v2", dir), r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(Msg(p.status().message()) == "containerd is down");
  // the full v1 was accepted (and removed); the v1->v2 delta waits for the next run
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].image_id == S().id1);
  CHECK(FilesIn(dir) == 1);
  CHECK(fs::exists(StrCat(dir, "/", Sha256DigestOfFile(S().d12)->substr(7), ".cdimg")));
  // the next run downloads nothing again and hands the delta over
  sink.fail_wanted.clear();
  local.ids = {S().id1};
  uint64_t served = r.served;
  auto again = Pull(PullOf("team/app:v2", dir), r, local, sink);
  REQUIRE(again.ok());
  CHECK(again->bytes_downloaded == 0);
  CHECK(r.served == served);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].bytes == oci_test::ReadAll(S().d12));
  CHECK(FilesIn(dir) == 0);
}
