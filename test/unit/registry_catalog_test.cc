// The registry-side documents: artifact manifests, the catalog index, tags,
// references and auth challenges. These parse registry answers, so bad input
// must give a clear error.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "d4c/base/digest.h"
#include "d4c/registry/catalog.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/registry_client.h"
#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

using namespace d4c::registry;
using json = nlohmann::json;

namespace {

std::string Id(char c) { return "sha256:" + std::string(64, c); }

Artifact Delta(char parent, char child, uint64_t size) {
  Artifact a;
  a.parent_id = Id(parent);
  a.image_id = Id(child);
  a.size = size;
  a.blob_digest = Id('e');
  return a;
}

std::string Message(const absl::Status& s) { return d4c::Msg(s.message()); }

}  // namespace

TEST_CASE("an artifact manifest round-trips and is valid OCI") {
  Artifact a = Delta('1', '2', 1234);
  std::string config = ArtifactConfig(a);
  std::string body = ArtifactManifest(a, Sha256Digest(config), config.size());
  json j = json::parse(body);
  CHECK(j["schemaVersion"] == 2);
  CHECK(j["mediaType"] == kOciManifestType);
  CHECK(j["artifactType"] == kCdimgArtifactType);
  CHECK(j["layers"].size() == 1);
  CHECK(j["layers"][0]["digest"] == a.blob_digest);
  CHECK(j["layers"][0]["size"] == 1234);
  CHECK(j["config"]["digest"] == Sha256Digest(config));
  auto back = ParseArtifactManifest(body, Sha256Digest(body));
  REQUIRE(back.ok());
  CHECK(back->image_id == a.image_id);
  CHECK(back->parent_id == a.parent_id);
  CHECK(back->size == 1234);
  CHECK(back->manifest_digest == Sha256Digest(body));
  CHECK(back->manifest_size == body.size());
}

TEST_CASE("artifact tags are valid tags and distinguish full from delta") {
  Artifact full = Delta('1', '2', 5);
  full.parent_id.clear();
  Artifact delta = Delta('1', '2', 5);
  CHECK(ArtifactTag(full) == "d4c-" + std::string(32, '2'));
  CHECK(ArtifactTag(delta) == "d4c-" + std::string(32, '2') + "-from-" + std::string(32, '1'));
  CHECK(IsValidTag(ArtifactTag(full)));
  CHECK(IsValidTag(ArtifactTag(delta)));
}

TEST_CASE("a plain container image manifest is refused with a hint") {
  std::string body = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":1},"layers":[]})";
  auto r = ParseArtifactManifest(body, Id('f'));
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(Message(r.status()), Catch::Contains("not a d4c cdimg artifact"));
}

TEST_CASE("artifact manifests with inconsistent or missing fields are refused") {
  Artifact a = Delta('1', '2', 10);
  json m = json::parse(ArtifactManifest(a, Id('c'), 3));
  SECTION("size disagrees") {
    m["layers"][0]["size"] = 11;
    CHECK_THAT(Message(ParseArtifactManifest(m.dump(), Id('f')).status()), Catch::Contains("disagree"));
  }
  SECTION("two layers") {
    m["layers"].push_back(m["layers"][0]);
    CHECK_THAT(Message(ParseArtifactManifest(m.dump(), Id('f')).status()), Catch::Contains("exactly one layer"));
  }
  SECTION("bad image id") {
    m["annotations"][kAnnotImageId] = "sha256:xyz";
    CHECK_THAT(Message(ParseArtifactManifest(m.dump(), Id('f')).status()), Catch::Contains(kAnnotImageId));
  }
  SECTION("delta without parent") {
    m["annotations"].erase(kAnnotParentId);
    CHECK_THAT(Message(ParseArtifactManifest(m.dump(), Id('f')).status()), Catch::Contains("parent"));
  }
  SECTION("size is not a number") {
    m["annotations"][kAnnotSize] = "12x";
    CHECK_THAT(Message(ParseArtifactManifest(m.dump(), Id('f')).status()), Catch::Contains("byte count"));
  }
  SECTION("not JSON") {
    CHECK_THAT(Message(ParseArtifactManifest("{nope", Id('f')).status()), Catch::Contains("not a JSON object"));
  }
}

TEST_CASE("the catalog round-trips, and Add replaces by manifest digest") {
  Catalog c;
  Artifact full = Delta('0', '1', 100);
  full.parent_id.clear();
  full.manifest_digest = Id('a');
  full.manifest_size = 400;
  Artifact d = Delta('1', '2', 7);
  d.manifest_digest = Id('b');
  d.manifest_size = 410;
  CHECK(c.Add(full));
  CHECK(c.Add(d));
  CHECK_FALSE(c.Add(d));  // same entry again: unchanged
  REQUIRE(c.artifacts.size() == 2);
  std::string body = SerializeCatalog(c);
  json j = json::parse(body);
  CHECK(j["mediaType"] == kOciIndexType);
  CHECK(j["manifests"].size() == 2);
  auto back = ParseCatalog(body);
  REQUIRE(back.ok());
  CHECK(back->artifacts == c.artifacts);
}

TEST_CASE("tag lists parse, page links stay on the registry") {
  auto tags = ParseTagList(R"({"name":"ts","tags":["d4c-catalog","v1"]})");
  REQUIRE(tags.ok());
  CHECK(*tags == std::vector<std::string>{"d4c-catalog", "v1"});
  auto none = ParseTagList(R"({"name":"ts","tags":null})");
  REQUIRE(none.ok());
  CHECK(none->empty());
  CHECK_THAT(Message(ParseTagList(R"({"tags":[1]})").status()), Catch::Contains("not a string"));
  CHECK_THAT(Message(ParseTagList("[]").status()), Catch::Contains("tag list is not a JSON object"));

  CHECK(NextPageFromLink(R"(</v2/ts/tags/list?n=1000&last=v1>; rel="next")") == "/v2/ts/tags/list?n=1000&last=v1");
  CHECK_FALSE(NextPageFromLink(R"(<https://evil.example/v2/x>; rel="next")"));  // credentials stay home
  CHECK_FALSE(NextPageFromLink(R"(</v2/ts/tags/list?n=1000>; rel="prev")"));
  CHECK_FALSE(NextPageFromLink("garbage"));
  CHECK_FALSE(NextPageFromLink("</v2/a b>; rel=\"next\""));
}

TEST_CASE("artifact tags missing from the catalog are found, other tags ignored") {
  Catalog c;
  Artifact listed = Delta('1', '2', 7);
  listed.manifest_digest = Id('b');
  c.Add(listed);
  Artifact lost = Delta('2', '3', 9);
  Artifact lost_full = Delta('0', '4', 9);
  lost_full.parent_id.clear();
  std::vector<std::string> tags = {"latest", kCatalogTag, ArtifactTag(listed), ArtifactTag(lost),
                                   ArtifactTag(lost_full), "d4c-" + std::string(32, 'g'), "d4c-1234"};
  CHECK(UncataloguedArtifactTags(c, tags) == std::vector<std::string>{ArtifactTag(lost), ArtifactTag(lost_full)});
}

TEST_CASE("catalog parse errors name the entry") {
  CHECK_THAT(Message(ParseCatalog("[]").status()), Catch::Contains("not a JSON object"));
  CHECK_THAT(Message(ParseCatalog(R"({"manifests":[]})").status()), Catch::Contains("not a d4c catalog"));
  json j = json::parse(SerializeCatalog(Catalog{}));
  j["manifests"].push_back({{"digest", Id('a')}, {"size", 1}, {"annotations", {{kAnnotImageId, "x"}}}});
  CHECK_THAT(Message(ParseCatalog(j.dump()).status()), Catch::Contains("catalog entry 0"));
  std::string huge(kMaxManifestBytes + 1, ' ');
  CHECK_THAT(Message(ParseCatalog(huge).status()), Catch::Contains("limit"));
}

TEST_CASE("NAME:TAG references follow the distribution grammar") {
  auto r = ParseNameTag("team/app:v1.2");
  REQUIRE(r.ok());
  CHECK(r->name == "team/app");
  CHECK(r->tag == "v1.2");
  CHECK(ParseNameTag("app", "latest")->tag == "latest");
  CHECK_THAT(Message(ParseNameTag("app").status()), Catch::Contains("needs a tag"));
  CHECK_THAT(Message(ParseNameTag("App:v1").status()), Catch::Contains("not a repository name"));
  CHECK_THAT(Message(ParseNameTag("app:-v1").status()), Catch::Contains("not a valid tag"));
  CHECK_FALSE(IsValidRepository("a//b"));
  CHECK(IsValidRepository("a.b-c_d/e"));
}

TEST_CASE("WWW-Authenticate challenges") {
  auto b = ParseAuthChallenge(R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:ts:pull,push")");
  REQUIRE(b);
  CHECK(b->scheme == "bearer");
  CHECK(b->realm == "https://auth.example/token");
  CHECK(b->service == "registry.example");
  CHECK(b->scope == "repository:ts:pull,push");
  auto basic = ParseAuthChallenge(R"(Basic realm="Registry Realm")");
  REQUIRE(basic);
  CHECK(basic->scheme == "basic");
  CHECK(basic->realm == "Registry Realm");
  CHECK_FALSE(ParseAuthChallenge("Negotiate abc"));
}

TEST_CASE("credentials come from the docker config for the exact host") {
  auto dir = std::filesystem::temp_directory_path() / "d4c-dockercfg-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"auths":{"https://reg.example:5000":{"auth":"dXNlcjpwYTpzcw=="},)"
                                        R"("other:1":{"auth":"YTpi"}}})";  // user:pa:ss, a:b
  setenv("DOCKER_CONFIG", dir.c_str(), 1);
  auto c = DockerConfigCredentials("reg.example:5000");
  REQUIRE(c);
  CHECK(c->user == "user");
  CHECK(c->password == "pa:ss");
  CHECK_FALSE(DockerConfigCredentials("reg.example"));
  unsetenv("DOCKER_CONFIG");
  std::filesystem::remove_all(dir);
}

TEST_CASE("sha256 digests") {
  CHECK(Sha256Digest("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(d4c::IsDigestString(Sha256Digest("x")));
  CHECK_FALSE(d4c::IsDigestString("sha256:E3B0"));
}
