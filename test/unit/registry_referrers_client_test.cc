// RegistryClient's referrers calls over a scripted transport: the referrers
// API (404 = no API, pages merged, artifactType filter asked for) and the
// OCI-Subject answer of a manifest PUT.
#include <catch2/catch.hpp>

#include "d4c/base/strcat.h"
#include "d4c/registry/registry_client.h"
#include "fake_http_transport.h"
#include "nlohmann/json.hpp"

using namespace d4c::registry;
using d4c::Msg;
using d4c::registry_test::FakeHttpTransport;
using d4c::registry_test::Reply;
using json = nlohmann::json;

namespace {

struct Rig {
  FakeHttpTransport* fake = nullptr;  // owned by client
  std::unique_ptr<RegistryClient> client;
};

Rig MakeClient() {
  RegistryOptions o;
  o.host = "reg.test:5000";
  o.first_backoff_seconds = 0;
  auto fake = std::make_unique<FakeHttpTransport>();
  Rig rig;
  rig.fake = fake.get();
  auto c = RegistryClient::Create(std::move(o), std::move(fake));
  REQUIRE(c.ok());
  rig.client = std::move(*c);
  return rig;
}

void ScriptDone(const FakeHttpTransport& f) {
  INFO(f.mismatch());
  CHECK(f.mismatch().empty());
  CHECK(f.pending() == 0);
}

const std::string kDigest = "sha256:" + std::string(64, 'a');

std::string Index(const std::string& digest_char) {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:)" +
         std::string(64, digest_char[0]) + R"(","size":7,"artifactType":"application/vnd.d4c.cdimg.v1"}]})";
}

}  // namespace

TEST_CASE("GetReferrers: 404 means no referrers API") {
  Rig rig = MakeClient();
  rig.fake->Expect("GET", "/v2/app/referrers/" + kDigest, Reply(404, "404 page not found\n"));
  auto r = rig.client->GetReferrers("app", kDigest, "application/vnd.d4c.cdimg.v1");
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
  REQUIRE(rig.fake->requests().size() == 1);
  CHECK(rig.fake->requests()[0].url.find("?artifactType=application%2Fvnd.d4c.cdimg.v1") != std::string::npos);
  ScriptDone(*rig.fake);
}

TEST_CASE("GetReferrers: the index, Link pages merged into one") {
  Rig rig = MakeClient();
  rig.fake->Expect("GET", "/v2/app/referrers/" + kDigest,
                   Reply(200, Index("b"), {{"link", "</v2/app/referrers/" + kDigest + "?n=1&last=b>; rel=\"next\""}}))
      .Expect("GET", "/v2/app/referrers/" + kDigest + "?n=1&last=b", Reply(200, Index("c")));
  auto r = rig.client->GetReferrers("app", kDigest);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  json j = json::parse(**r);
  REQUIRE(j["manifests"].size() == 2);
  CHECK(j["manifests"][0]["digest"] == "sha256:" + std::string(64, 'b'));
  CHECK(j["manifests"][1]["digest"] == "sha256:" + std::string(64, 'c'));
  ScriptDone(*rig.fake);
}

TEST_CASE("GetReferrers: an answer that is not an index is an error naming the registry") {
  Rig rig = MakeClient();
  rig.fake->Expect("GET", "/referrers/", Reply(200, R"({"tags":[]})"));
  auto r = rig.client->GetReferrers("app", kDigest);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(Msg(r.status().message())).find("reg.test:5000/app: referrers of") != std::string::npos);
  ScriptDone(*rig.fake);
}

TEST_CASE("PutManifestWithSubject reports OCI-Subject, or none") {
  Rig rig = MakeClient();
  const std::string body = R"({"schemaVersion":2})";
  rig.fake->Expect("PUT", "/v2/app/manifests/t1", Reply(201, "", {{"oci-subject", kDigest}}))
      .Expect("PUT", "/v2/app/manifests/t2", Reply(201));
  auto with = rig.client->PutManifestWithSubject("app", "t1", "application/vnd.oci.image.manifest.v1+json", body);
  REQUIRE(with.ok());
  CHECK(with->oci_subject == kDigest);
  CHECK(with->digest == Sha256Digest(body));
  auto without = rig.client->PutManifestWithSubject("app", "t2", "application/vnd.oci.image.manifest.v1+json", body);
  REQUIRE(without.ok());
  CHECK(without->oci_subject.empty());
  CHECK(rig.fake->requests()[0].body == body);
  ScriptDone(*rig.fake);
}
