// The referrers layout (docs/registry.md): push publishes the runnable image a
// full cdimg was converted from and attaches cdimgs to it as OCI referrers
// (referrers API, or the tag schema where the registry lacks it); pull plans
// from the referrers of the one image it wants. Also: the catalog-layout
// fallback, the bounded planning reads, and refusing a cdimg that does not
// belong to the image given.
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <random>

#include "d4c/cdimg.h"
#include "d4c/registry/catalog.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/transfer.h"
#include "d4c/base/strcat.h"
#include "fake_registry.h"
#include "nlohmann/json.hpp"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::registry;
using d4c::registry_test::FakeRegistry;
using d4c::registry_test::MemorySourceImage;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const std::string& name) {
  static int n = 0;
  auto dir = fs::temp_directory_path() / StrCat("d4c-referrers-test-", getpid(), "-", ++n, "-", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Version v of a tiny tree: one shared incompressible file plus a marker "vN".
std::vector<Entry> Tree(int v, const std::string& big) {
  return {oci_test::DirEntry(""), oci_test::FileEntry("big", big), oci_test::FileEntry(StrCat("v", v), "")};
}

std::string Config(int v) { return StrCat("{\"architecture\":\"amd64\",\"os\":\"linux\",\"v\":", v, "}"); }

void WriteFull(const std::string& path, int v, const std::string& big) {
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::string z(ZSTD_compressBound(big.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), big.data(), big.size(), 3));
  auto ref = (*w)->AppendBlob(z);
  REQUIRE(ref.ok());
  auto entries = Tree(v, big);
  std::vector<Recipe> recipes(entries.size());
  recipes[1] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish(Config(v), entries, recipes).ok());
}

void WriteDelta(const std::string& path, const std::string& parent_path, int v, const std::string& big) {
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  auto w = CdimgWriter::Create(path, {parent->get()});
  REQUIRE(w.ok());
  auto entries = Tree(v, big);
  std::vector<Recipe> recipes(entries.size());
  recipes[1].kind = Recipe::Kind::kBase;
  recipes[2].kind = Recipe::Kind::kEmpty;
  REQUIRE((*w)->Finish(Config(v), entries, recipes).ok());
}

std::string IdOf(const std::string& path) {
  auto h = CdimgImage::ReadHeader(path);
  REQUIRE(h.ok());
  return "sha256:" + DigestHex(h->image_id);
}

// Releases 1..n: full[v] (config Config(v)), delta[v] from v-1, the image each
// full cdimg was converted from (two layers of their own), the ids.
struct Releases {
  std::string dir;
  std::vector<std::string> full, delta, id;
  std::vector<std::unique_ptr<MemorySourceImage>> image;
  explicit Releases(int n) {
    dir = TempDir(StrCat("releases", n));
    std::mt19937 rng(7);
    std::string big(20000, '\0');
    for (auto& c : big) c = static_cast<char>(rng());
    full.resize(n + 1);
    delta.resize(n + 1);
    id.resize(n + 1);
    image.resize(n + 1);
    for (int v = 1; v <= n; ++v) {
      full[v] = StrCat(dir, "/v", v, ".cdimg");
      WriteFull(full[v], v, big);
      id[v] = IdOf(full[v]);
      if (v > 1) {
        delta[v] = StrCat(dir, "/d", v - 1, "-", v, ".cdimg");
        WriteDelta(delta[v], full[v - 1], v, big);
      }
      image[v] = std::make_unique<MemorySourceImage>(
          Config(v), std::vector<std::string>{StrCat("base layer of ", v), StrCat("app layer of release ", v)});
    }
  }
};

PushResult MustPush(FakeRegistry& r, const std::string& file, const std::string& tag, const SourceImage* image) {
  PushOptions o;
  o.cdimg = file;
  o.repository = "team/app";
  o.tag = tag;
  o.image = image;
  auto p = Push(o, r);
  INFO((p.ok() ? std::string() : Msg(p.status().message())));
  REQUIRE(p.ok());
  return *p;
}

class FakeLocal : public LocalImages {
 public:
  std::set<std::string> ids;
  absl::StatusOr<std::set<std::string>> ImageIds() override { return ids; }
};

class RecordingSink : public ImageSink {
 public:
  std::vector<std::pair<std::string, std::string>> got;  // image id, bytes
  absl::Status Accept(const std::string& path, const Artifact& a, bool) override {
    got.emplace_back(a.image_id, oci_test::ReadAll(path));
    return absl::OkStatus();
  }
  absl::Status AcceptHeld(const std::string&) override { return absl::OkStatus(); }
};

struct Pulled {
  PullResult result;
  RecordingSink sink;
  uint64_t documents_before_download = 0;  // manifest/referrers bytes the registry served while planning
};

Pulled MustPull(FakeRegistry& r, const std::string& image, std::set<std::string> held) {
  Pulled out;
  FakeLocal local;
  local.ids = std::move(held);
  PullOptions o;
  o.image = image;
  o.download_dir = TempDir("dl");
  o.planned = [&](const PullResult&) { out.documents_before_download = r.document_bytes; };
  r.document_bytes = 0;
  auto p = Pull(o, r, local, out.sink);
  INFO((p.ok() ? std::string() : Msg(p.status().message())));
  REQUIRE(p.ok());
  out.result = *p;
  return out;
}

// Every blob a plain client needs for NAME:TAG is there with its bytes.
void CheckRunnable(const FakeRegistry& r, const std::string& tag, const MemorySourceImage& image) {
  REQUIRE(r.manifests.count(tag));
  json m = json::parse(r.manifests.at(tag).body);
  CHECK(m["mediaType"] == kOciManifestType);
  CHECK_FALSE(m.contains("artifactType"));
  CHECK(m["config"]["mediaType"] == kOciConfigType);
  CHECK(m["config"]["digest"] == Sha256Digest(image.config_json()));
  CHECK(r.blobs.at(m["config"]["digest"]) == image.config_json());
  REQUIRE(m["layers"].size() == image.layers().size());
  for (size_t i = 0; i < image.layers().size(); ++i) {
    CHECK(m["layers"][i]["digest"] == image.layers()[i].digest);
    CHECK(r.blobs.at(m["layers"][i]["digest"]) == image.layer_bytes(i));
  }
}

}  // namespace

TEST_CASE("push --image publishes the runnable image under the tag and attaches the cdimg (referrers tag schema)") {
  Releases s(1);
  FakeRegistry r;
  PushResult p = MustPush(r, s.full[1], "v1", s.image[1].get());
  CHECK(p.referrers_layout);
  CHECK(p.image_published);
  CHECK(p.layers_uploaded == 2);
  CHECK_FALSE(p.referrers_api);
  CHECK(p.referrers_changed);
  CHECK(p.referrers == 1);
  CheckRunnable(r, "v1", *s.image[1]);
  const std::string& image_digest = r.manifests.at("v1").digest;
  CHECK(p.subject.digest == image_digest);
  CHECK(r.manifests.at(ImageTag(s.id[1])).digest == image_digest);
  // the artifact: our type, the cdimg as its layer, subject = the image
  json a = json::parse(r.manifests.at(p.artifact.manifest_digest).body);
  CHECK(a["artifactType"] == kCdimgArtifactType);
  CHECK(a["subject"]["digest"] == image_digest);
  CHECK(a["subject"]["size"] == r.manifests.at("v1").body.size());
  CHECK(a["annotations"][kAnnotImageId] == s.id[1]);
  CHECK(a["annotations"][kAnnotKind] == "full");
  CHECK(r.blobs.at(p.artifact.blob_digest) == oci_test::ReadAll(s.full[1]));
  // the referrers tag holds the index the referrers API would answer
  std::string rtag = "sha256-" + image_digest.substr(7);
  CHECK(ReferrersTag(image_digest) == rtag);
  REQUIRE(r.manifests.count(rtag));
  json idx = json::parse(r.manifests.at(rtag).body);
  CHECK(idx["mediaType"] == kOciIndexType);
  REQUIRE(idx["manifests"].size() == 1);
  CHECK(idx["manifests"][0]["digest"] == p.artifact.manifest_digest);
  CHECK(idx["manifests"][0]["artifactType"] == kCdimgArtifactType);
  // the manifest's annotations, but the image id (named once, for the whole
  // index) and the kind (no parent id: full): a pull reads less to plan
  json short_form = a["annotations"];
  short_form.erase(kAnnotImageId);
  short_form.erase(kAnnotKind);
  CHECK(idx["manifests"][0]["annotations"] == short_form);
  CHECK(idx["annotations"][kAnnotImageId] == s.id[1]);
  CHECK_FALSE(r.manifests.count(kCatalogTag));  // no catalog in this layout

  // pushed again: nothing uploaded, the index unchanged (no duplicate)
  size_t uploads = r.uploads.size();
  std::string before = r.manifests.at(rtag).body;
  PushResult again = MustPush(r, s.full[1], "v1", s.image[1].get());
  CHECK(r.uploads.size() == uploads);
  CHECK(again.bytes_uploaded == 0);
  CHECK_FALSE(again.referrers_changed);
  CHECK(r.manifests.at(rtag).body == before);

  // pull into an empty client: the full cdimg, found through the referrers
  Pulled got = MustPull(r, "team/app:v1", {});
  CHECK(got.result.referrers_layout);
  CHECK(got.result.subject == image_digest);
  CHECK(got.result.wanted.image_id == s.id[1]);
  REQUIRE(got.sink.got.size() == 1);
  CHECK(got.sink.got[0].second == oci_test::ReadAll(s.full[1]));
}

TEST_CASE("a delta is attached to the image it leads to, pull plans from that image's referrers") {
  Releases s(3);
  FakeRegistry r;
  MustPush(r, s.full[1], "v1", s.image[1].get());
  MustPush(r, s.full[2], "v2", s.image[2].get());
  PushResult d = MustPush(r, s.delta[2], "", nullptr);  // no tag, no image: found by its image id
  CHECK(d.referrers_layout);
  CHECK_FALSE(d.image_published);
  CHECK(d.subject.digest == r.manifests.at("v2").digest);
  CHECK(d.referrers == 2);
  // with --image too: checked against the published image, same result
  PushResult again = MustPush(r, s.delta[2], "v2", s.image[2].get());
  CHECK(again.subject.digest == d.subject.digest);
  CHECK_FALSE(again.referrers_changed);

  // v1 held: the delta; nothing held: the full v2
  Pulled up = MustPull(r, "team/app:v2", {s.id[1]});
  CHECK(up.result.referrers_layout);
  REQUIRE(up.result.plan.steps.size() == 1);
  CHECK(up.result.plan.steps[0].parent_id == s.id[1]);
  CHECK(up.result.plan.from == s.id[1]);
  CHECK(up.result.bytes_downloaded == fs::file_size(s.delta[2]));
  CHECK(up.result.full_image_size == fs::file_size(s.full[2]));
  REQUIRE(up.sink.got.size() == 1);
  CHECK(up.sink.got[0].second == oci_test::ReadAll(s.delta[2]));
  Pulled fresh = MustPull(r, "team/app:v2", {});
  REQUIRE(fresh.result.plan.steps.size() == 1);
  CHECK_FALSE(fresh.result.plan.steps[0].is_delta());
  // the v1 image's referrers do not list v2's cdimgs
  auto v1refs = ParseReferrers(r.manifests.at(ReferrersTag(r.manifests.at("v1").digest)).body);
  REQUIRE(v1refs.ok());
  CHECK(v1refs->artifacts.size() == 1);
}

TEST_CASE("a registry with the referrers API: no referrers tag, pull asks the API") {
  Releases s(2);
  FakeRegistry r;
  r.referrers_api = true;
  PushResult p1 = MustPush(r, s.full[1], "v1", s.image[1].get());
  PushResult p2 = MustPush(r, s.full[2], "v2", s.image[2].get());
  PushResult d = MustPush(r, s.delta[2], "", nullptr);
  CHECK(p1.referrers_api);
  CHECK(d.referrers_api);
  CHECK_FALSE(d.referrers_changed);
  for (const auto& [ref, m] : r.manifests) CHECK(ref.rfind("sha256-", 0) != 0);  // no tag-schema index written
  r.document_gets.clear();
  Pulled up = MustPull(r, "team/app:v2", {s.id[1]});
  CHECK(up.result.referrers_layout);
  REQUIRE(up.result.plan.steps.size() == 1);
  CHECK(up.result.plan.steps[0].manifest_digest == d.artifact.manifest_digest);
  // planning asked the API once and read nothing else
  REQUIRE(r.document_gets.size() == 1);
  CHECK(r.document_gets[0] == "referrers/" + p2.subject.digest);
}

TEST_CASE("catalog layout (pushed without an image) keeps working, also next to referrers-layout tags") {
  Releases s(3);
  FakeRegistry r;
  PushResult old1 = MustPush(r, s.full[1], "v1", nullptr);
  PushResult old2 = MustPush(r, s.delta[2], "v2", nullptr);  // v2 has no runnable image: catalog layout
  CHECK_FALSE(old1.referrers_layout);
  CHECK_FALSE(old2.referrers_layout);
  CHECK(old2.catalog_entries == 2);
  CHECK(r.manifests.at("v2").digest == old2.artifact.manifest_digest);  // the tag names the artifact
  MustPush(r, s.full[3], "v3", s.image[3].get());

  Pulled two = MustPull(r, "team/app:v2", {s.id[1]});
  CHECK_FALSE(two.result.referrers_layout);
  REQUIRE(two.result.plan.steps.size() == 1);
  CHECK(two.result.plan.steps[0].manifest_digest == old2.artifact.manifest_digest);
  REQUIRE(two.sink.got.size() == 1);
  CHECK(two.sink.got[0].second == oci_test::ReadAll(s.delta[2]));
  Pulled three = MustPull(r, "team/app:v3", {s.id[1]});
  CHECK(three.result.referrers_layout);
  CHECK(three.result.wanted.image_id == s.id[3]);
}

TEST_CASE("publishing an image attaches the catalog layout's cdimgs of it (migration by the next push)") {
  Releases s(2);
  FakeRegistry r;
  MustPush(r, s.full[1], "v1", nullptr);
  PushResult old = MustPush(r, s.delta[2], "", nullptr);  // catalog layout: v2 has no runnable image yet
  CHECK_FALSE(old.referrers_layout);
  size_t uploads = r.uploads.size();
  PushResult p = MustPush(r, s.full[2], "v2", s.image[2].get());
  CHECK(p.migrated == 1);
  CHECK(p.referrers == 2);
  // only the new image and cdimg were uploaded: the delta's blobs were there
  CHECK(r.uploads.size() - uploads == 1 + 2 + 1 + 1);  // image config, 2 layers, cdimg, its config
  Pulled up = MustPull(r, "team/app:v2", {s.id[1]});
  CHECK(up.result.referrers_layout);
  REQUIRE(up.result.plan.steps.size() == 1);
  CHECK(up.result.plan.steps[0].blob_digest == old.artifact.blob_digest);
  REQUIRE(up.sink.got.size() == 1);
  CHECK(up.sink.got[0].second == oci_test::ReadAll(s.delta[2]));
  // pushing the image again migrates nothing more
  CHECK(MustPush(r, s.full[2], "v2", s.image[2].get()).migrated == 0);
}

TEST_CASE("a plain image without cdimgs: pull says so") {
  Releases s(1);
  FakeRegistry r;
  MustPush(r, s.full[1], "v1", s.image[1].get());
  REQUIRE(r.PutManifest("team/app", "plain", kOciManifestType, r.manifests.at("v1").body).ok());
  // another image under another tag, nothing attached
  std::string other = ImageManifest({kOciConfigType, Sha256Digest("{}"), 2}, {});
  REQUIRE(r.PutManifest("team/app", "other", kOciManifestType, other).ok());
  FakeLocal local;
  RecordingSink sink;
  PullOptions o;
  o.image = "team/app:other";
  o.download_dir = TempDir("plain");
  auto p = Pull(o, r, local, sink);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(Msg(p.status().message())), Catch::Contains("no cdimgs attached"));
  CHECK_THAT(std::string(Msg(p.status().message())), Catch::Contains("team/app:other"));
  o.image = "team/app:nope";
  auto missing = Pull(o, r, local, sink);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(Msg(missing.status().message())), Catch::Contains("team/app:nope does not exist"));
  // the same image under a second tag has its referrers
  o.image = "team/app:plain";
  auto same = Pull(o, r, local, sink);
  REQUIRE(same.ok());
  CHECK(same->wanted.image_id == s.id[1]);
}

TEST_CASE("planning reads the same few bytes after 3 or 24 pushed versions") {
  auto planning_bytes = [](int n, bool api) {
    Releases s(n);
    FakeRegistry r;
    r.referrers_api = api;
    for (int v = 1; v <= n; ++v) {
      MustPush(r, s.full[v], StrCat("v", v), s.image[v].get());
      if (v > 1) MustPush(r, s.delta[v], "", nullptr);
    }
    Pulled up = MustPull(r, StrCat("team/app:v", n), {s.id[n - 1]});
    REQUIRE(up.result.plan.steps.size() == 1);
    CHECK(up.result.plan.steps[0].is_delta());
    CHECK(up.result.plan_document_bytes == up.documents_before_download);
    return up.documents_before_download;
  };
  for (bool api : {false, true}) {
    uint64_t few = planning_bytes(3, api), many = planning_bytes(24, api);
    INFO("referrers API " << api << ": " << few << " bytes after 3 versions, " << many << " after 24");
    CHECK(many <= few + 16);  // independent of history (a size may gain a digit)
    CHECK(many <= 1200);  // one index of the two cdimgs leading to the image (~1.1 KB)
    CHECK(many > 0);
  }
}

TEST_CASE("the catalog layout, for comparison, reads the whole history to plan") {
  auto catalog_bytes = [](int n) {
    Releases s(n);
    FakeRegistry r;
    for (int v = 1; v <= n; ++v) {
      MustPush(r, s.full[v], StrCat("v", v), nullptr);
      if (v > 1) MustPush(r, s.delta[v], "", nullptr);
    }
    Pulled up = MustPull(r, StrCat("team/app:v", n), {s.id[n - 1]});
    CHECK_FALSE(up.result.referrers_layout);
    CHECK(up.result.plan_document_bytes == up.documents_before_download);
    return up.documents_before_download;
  };
  uint64_t few = catalog_bytes(3), many = catalog_bytes(24);
  INFO(few << " bytes after 3 versions, " << many << " after 24");
  CHECK(many > few * 6);  // 47 catalog entries instead of 5
}

TEST_CASE("push refuses a cdimg that was not converted from the image given") {
  Releases s(2);
  FakeRegistry r;
  PushOptions o;
  o.cdimg = s.full[1];
  o.repository = "team/app";
  o.tag = "v1";
  o.image = s.image[2].get();  // release 2's image for release 1's cdimg
  auto p = Push(o, r);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
  std::string msg(Msg(p.status().message()));
  CHECK_THAT(msg, Catch::Contains("was not converted from oci:memory"));
  CHECK_THAT(msg, Catch::Contains(Sha256Digest(Config(2))));
  CHECK_THAT(msg, Catch::Contains(s.full[1]));
  CHECK(r.manifests.empty());  // nothing tagged, nothing half-published
  CHECK(r.uploads.empty());

  // a delta with an image other than the published one it leads to
  MustPush(r, s.full[2], "v2", s.image[2].get());
  o.cdimg = s.delta[2];
  o.image = s.image[1].get();
  p = Push(o, r);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(Msg(p.status().message())), Catch::Contains("it is another image"));

  // a delta with an image, to an image not published yet: cannot be checked
  FakeRegistry empty;
  o.image = s.image[2].get();
  p = Push(o, empty);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(Msg(p.status().message())), Catch::Contains("push the full cdimg of that image with --image"));
}

TEST_CASE("referrers documents: foreign descriptors kept and skipped, no duplicates, bad tag refused") {
  Artifact a;
  a.image_id = "sha256:" + std::string(64, 'a');
  a.size = 10;
  a.blob_digest = "sha256:" + std::string(64, 'b');
  a.manifest_digest = "sha256:" + std::string(64, 'c');
  a.manifest_size = 300;
  std::string foreign = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:)" + std::string(64, 'd') +
                        R"(","size":5,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}]})";
  auto added = AddToReferrersIndex(foreign, a);
  REQUIRE(added.ok());
  REQUIRE(added->has_value());
  json j = json::parse(**added);
  CHECK(j["manifests"].size() == 2);  // the signature stays
  auto c = ParseReferrers(**added);
  REQUIRE(c.ok());
  REQUIRE(c->artifacts.size() == 1);  // only ours is a cdimg
  CHECK(c->artifacts[0] == a);
  auto dup = AddToReferrersIndex(**added, a);
  REQUIRE(dup.ok());
  CHECK_FALSE(dup->has_value());
  CHECK_FALSE(AddToReferrersIndex(R"({"schemaVersion":2,"layers":[]})", a).ok());
  CHECK_FALSE(ParseReferrers("[1]").ok());
  // our type with broken annotations is an error, not silently skipped
  std::string broken = R"({"manifests":[{"mediaType":"x","digest":"sha256:)" + std::string(64, 'c') +
                       R"(","size":3,"artifactType":"application/vnd.d4c.cdimg.v1","annotations":{"org.d4c.kind":"full"}}]})";
  CHECK_FALSE(ParseReferrers(broken).ok());
  CHECK(ImageTag(a.image_id) == "d4c-image-" + std::string(32, 'a'));
  CHECK(IsValidTag(ReferrersTag(a.manifest_digest)));
}

TEST_CASE("the referrers index names the image id once, older indexes are read and rewritten short") {
  auto digest = [](char c) { return "sha256:" + std::string(64, c); };
  Artifact full{digest('1'), "", 5000, digest('a'), digest('c'), 900};
  Artifact delta{digest('1'), digest('0'), 300, digest('b'), digest('d'), 1000};
  // An index as pushes before wrote it: every descriptor with all the manifest's annotations.
  json old_idx = {{"schemaVersion", 2}, {"mediaType", kOciIndexType}, {"manifests", json::array()}};
  old_idx["manifests"].push_back({{"mediaType", kOciManifestType},
                                  {"digest", full.manifest_digest},
                                  {"size", full.manifest_size},
                                  {"artifactType", kCdimgArtifactType},
                                  {"annotations",
                                   {{kAnnotImageId, full.image_id},
                                    {kAnnotKind, "full"},
                                    {kAnnotSize, "5000"},
                                    {kAnnotBlob, full.blob_digest}}}});
  old_idx["manifests"].push_back({{"mediaType", kOciManifestType}, {"digest", digest('e')}, {"size", 10},
                                  {"artifactType", "application/vnd.example.signature"}});
  auto parsed_old = ParseReferrers(old_idx.dump());
  REQUIRE(parsed_old.ok());
  REQUIRE(parsed_old->artifacts.size() == 1);
  CHECK(parsed_old->artifacts[0] == full);

  // The next push rewrites it in the short form and adds its descriptor.
  auto added = AddToReferrersIndex(old_idx.dump(), delta);
  REQUIRE(added.ok());
  REQUIRE(added->has_value());
  json idx = json::parse(**added);
  CHECK(idx["annotations"][kAnnotImageId] == full.image_id);
  REQUIRE(idx["manifests"].size() == 3);
  for (const json& m : idx["manifests"]) {
    if (m["artifactType"] != kCdimgArtifactType) {
      CHECK_FALSE(m.contains("annotations"));  // others' descriptors are kept as they were
      continue;
    }
    CHECK_FALSE(m["annotations"].contains(kAnnotImageId));
    CHECK_FALSE(m["annotations"].contains(kAnnotKind));
  }
  auto parsed = ParseReferrers(**added);
  REQUIRE(parsed.ok());
  CHECK(parsed->artifacts == std::vector<Artifact>{full, delta});
  // Short: the two cdimgs of an image cost less than 1 KB to plan from.
  CHECK((*added)->size() - json(old_idx["manifests"][1]).dump().size() < 1024);

  // A descriptor whose annotations name another image keeps its own id.
  Artifact other{digest('2'), digest('1'), 200, digest('9'), digest('f'), 950};
  auto third = AddToReferrersIndex(**added, other);
  REQUIRE(third.ok());
  auto parsed3 = ParseReferrers(**third);
  REQUIRE(parsed3.ok());
  CHECK(parsed3->artifacts == std::vector<Artifact>{full, delta, other});
  // Refused, naming the field: a descriptor without an id in an index that names none.
  json bad = json::parse(**added);
  bad.erase("annotations");
  auto refused = ParseReferrers(bad.dump());
  CHECK_FALSE(refused.ok());
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains(kAnnotImageId));
}
