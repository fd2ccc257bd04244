// RegistryClient's behaviour over a scripted transport: the auth dance
// (Bearer token, Basic), which answers are retried and how often, resumable
// downloads (Range honoured or ignored), the size cap and the digest check of
// downloads, and skipping uploads of blobs the registry has.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/registry/registry_client.h"
#include "d4c/base/strcat.h"
#include "fake_http_transport.h"
#include "oci_fixture.h"

using namespace d4c::registry;
using d4c::Msg;
using d4c::StrCat;
using d4c::oci_test::ReadAll;
using d4c::oci_test::ScratchDir;
using d4c::registry_test::FakeHttpTransport;
using d4c::registry_test::FakeReply;
using d4c::registry_test::NoAnswer;
using d4c::registry_test::Reply;

namespace {

constexpr const char* kHost = "reg.test:5000";
const std::string kBase = StrCat("https://", kHost);

struct Rig {
  FakeHttpTransport* fake = nullptr;  // owned by client
  std::unique_ptr<RegistryClient> client;
};

Rig MakeClient(RegistryOptions o = {}) {
  o.host = kHost;
  o.first_backoff_seconds = 0;  // no sleeping in unit tests
  auto fake = std::make_unique<FakeHttpTransport>();
  Rig rig;
  rig.fake = fake.get();
  auto c = RegistryClient::Create(std::move(o), std::move(fake));
  REQUIRE(c.ok());
  rig.client = std::move(*c);
  return rig;
}

std::string Blob(size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Text(const absl::Status& s) { return Msg(s.message()); }

// Every scripted answer used, no request off the script.
void ScriptDone(const FakeHttpTransport& f) {
  INFO(f.mismatch());
  CHECK(f.mismatch().empty());
  CHECK(f.pending() == 0);
}

const char* kManifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})";

}  // namespace

TEST_CASE("401 with a Bearer challenge: token fetched, request retried with it") {
  RegistryOptions o;
  o.credentials = {"alice", "s3cret"};
  auto [fake, client] = MakeClient(o);
  fake->Expect("GET", "/v2/app/manifests/v1",
               Reply(401, R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})",
                     {{"www-authenticate", R"(Bearer realm="https://auth.test/token",service="reg.test:5000",scope="repository:app:pull")"}}))
      .Expect("GET", "https://auth.test/token", Reply(200, R"({"token":"T0K3N"})"))
      .Expect("GET", "/v2/app/manifests/v1", Reply(200, kManifest, {{"content-type", "application/vnd.oci.image.manifest.v1+json"}}))
      .Expect("HEAD", "/v2/app/blobs/", Reply(200));

  auto m = client->GetManifest("app", "v1");
  REQUIRE(m.ok());
  REQUIRE(m->has_value());
  CHECK((*m)->body == kManifest);
  CHECK((*m)->digest == Sha256Digest(kManifest));
  CHECK((*m)->media_type == "application/vnd.oci.image.manifest.v1+json");
  // The token stays in use: the next request sends it straight away.
  auto has = client->HasBlob("app", Sha256Digest("x"));
  REQUIRE(has.ok());
  CHECK(*has);

  const auto& rq = fake->requests();
  REQUIRE(rq.size() == 4);
  CHECK(rq[0].url == kBase + "/v2/app/manifests/v1");
  CHECK_FALSE(rq[0].Header("Authorization"));
  CHECK(rq[1].url == "https://auth.test/token?service=reg.test%3A5000&scope=repository%3Aapp%3Apull");
  CHECK(rq[1].Header("Authorization") == "Basic YWxpY2U6czNjcmV0");  // the credentials go to the token server only
  CHECK(rq[2].Header("Authorization") == "Bearer T0K3N");
  CHECK(rq[3].Header("Authorization") == "Bearer T0K3N");
  ScriptDone(*fake);
}

TEST_CASE("Bearer token refused: Unauthenticated, no endless loop") {
  auto [fake, client] = MakeClient();
  FakeReply challenge = Reply(401, "", {{"www-authenticate", R"(Bearer realm="https://auth.test/token",service="reg")"}});
  fake->Expect("GET", "/tags/list", challenge)
      .Expect("GET", "auth.test/token?service=reg", Reply(200, R"({"access_token":"A"})"))
      .Expect("GET", "/tags/list", challenge);
  auto tags = client->ListTags("app");
  REQUIRE(absl::IsUnauthenticated(tags.status()));
  CHECK_THAT(Text(tags.status()), Catch::Contains("credentials refused") && Catch::Contains(kHost));
  CHECK(fake->requests().size() == 3);  // one token, one retry: a 401 is not retried like a 5xx
  CHECK_FALSE(fake->requests()[1].Header("Authorization"));  // no credentials: anonymous token
  ScriptDone(*fake);
}

TEST_CASE("401 with a Basic challenge: credentials sent once, wrong ones refused") {
  FakeReply challenge = Reply(401, "", {{"www-authenticate", R"(Basic realm="Registry Realm")"}});

  SECTION("right credentials") {
    RegistryOptions o;
    o.credentials = {"alice", "s3cret"};
    auto [fake, client] = MakeClient(o);
    fake->Expect("HEAD", "/v2/app/blobs/sha256:", challenge).Expect("HEAD", "/v2/app/blobs/sha256:", Reply(200));
    auto has = client->HasBlob("app", Sha256Digest("x"));
    REQUIRE(has.ok());
    CHECK(*has);
    REQUIRE(fake->requests().size() == 2);
    CHECK_FALSE(fake->requests()[0].Header("Authorization"));
    CHECK(fake->requests()[1].Header("Authorization") == "Basic YWxpY2U6czNjcmV0");
    ScriptDone(*fake);
  }
  SECTION("wrong credentials: one retry, then Unauthenticated without the password") {
    RegistryOptions o;
    o.credentials = {"alice", "wrong-pw"};
    auto [fake, client] = MakeClient(o);
    fake->Expect("HEAD", "/blobs/", challenge).Expect("HEAD", "/blobs/", challenge);
    auto has = client->HasBlob("app", Sha256Digest("x"));
    REQUIRE(absl::IsUnauthenticated(has.status()));
    CHECK_THAT(Text(has.status()), Catch::Contains("credentials refused"));
    CHECK_THAT(Text(has.status()), !Catch::Contains("wrong-pw"));
    CHECK(fake->requests().size() == 2);
    // The next request sends them from the start and is not repeated with the same ones.
    fake->Expect("HEAD", "/blobs/", challenge);
    has = client->HasBlob("app", Sha256Digest("y"));
    REQUIRE(absl::IsUnauthenticated(has.status()));
    REQUIRE(fake->requests().size() == 3);
    CHECK(fake->requests()[2].Header("Authorization") == "Basic YWxpY2U6d3JvbmctcHc=");
    ScriptDone(*fake);
  }
  SECTION("no credentials: says how to give them") {
    auto [fake, client] = MakeClient();
    fake->Expect("HEAD", "/blobs/", challenge);
    auto has = client->HasBlob("app", Sha256Digest("x"));
    REQUIRE(absl::IsUnauthenticated(has.status()));
    CHECK_THAT(Text(has.status()), Catch::Contains("--user"));
    CHECK(fake->requests().size() == 1);
    ScriptDone(*fake);
  }
}

TEST_CASE("5xx and lost connections are retried, success ends the retries") {
  auto [fake, client] = MakeClient();
  fake->Expect("GET", "/v2/app/tags/list", Reply(503))
      .Expect("GET", "/v2/app/tags/list", NoAnswer("Connection refused"))
      .Expect("GET", "/v2/app/tags/list", Reply(502))
      .Expect("GET", "/v2/app/tags/list", Reply(200, R"({"name":"app","tags":["a","b"]})"));
  auto tags = client->ListTags("app");
  REQUIRE(tags.ok());
  CHECK(*tags == std::vector<std::string>{"a", "b"});
  CHECK(fake->requests().size() == 4);
  ScriptDone(*fake);
}

TEST_CASE("5xx on every attempt: Unavailable saying how many attempts were made") {
  RegistryOptions o;
  o.attempts = 3;
  auto [fake, client] = MakeClient(o);
  for (int i = 0; i < 3; ++i)
    fake->Expect("GET", "/v2/app/manifests/v1", Reply(503, R"({"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]})"));
  auto m = client->GetManifest("app", "v1");
  REQUIRE(absl::IsUnavailable(m.status()));
  CHECK_THAT(Text(m.status()), Catch::Contains("HTTP 503 UNAVAILABLE: down for maintenance") &&
                                   Catch::Contains("after 3 attempts") && Catch::Contains(kHost));
  CHECK(fake->requests().size() == 3);
  ScriptDone(*fake);
}

TEST_CASE("429 is retried like a 5xx and keeps its code when attempts run out") {
  RegistryOptions o;
  o.attempts = 2;
  auto [fake, client] = MakeClient(o);
  fake->Expect("HEAD", "/manifests/v1", Reply(429)).Expect("HEAD", "/manifests/v1", Reply(429));
  auto d = client->ManifestDigest("app", "v1");
  REQUIRE(absl::IsResourceExhausted(d.status()));
  CHECK_THAT(Text(d.status()), Catch::Contains("HTTP 429") && Catch::Contains("after 2 attempts"));
  CHECK(fake->requests().size() == 2);
  ScriptDone(*fake);
}

TEST_CASE("4xx answers are not retried") {
  auto [fake, client] = MakeClient();
  SECTION("403") {
    fake->Expect("GET", "/manifests/v1", Reply(403, R"({"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]})"));
    auto m = client->GetManifest("app", "v1");
    REQUIRE(absl::IsPermissionDenied(m.status()));
    CHECK_THAT(Text(m.status()), Catch::Contains("HTTP 403 DENIED: requested access"));
  }
  SECTION("400 on a manifest PUT") {
    fake->Expect("PUT", "/v2/app/manifests/v1", Reply(400, R"({"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]})"));
    auto d = client->PutManifest("app", "v1", "application/vnd.oci.image.manifest.v1+json", kManifest);
    REQUIRE(absl::IsFailedPrecondition(d.status()));
    CHECK_THAT(Text(d.status()), Catch::Contains("MANIFEST_INVALID"));
    CHECK(fake->requests()[0].body == kManifest);
    CHECK(fake->requests()[0].Header("Content-Type") == "application/vnd.oci.image.manifest.v1+json");
  }
  SECTION("404 of a blob: an answer, not an error") {
    fake->Expect("HEAD", "/blobs/", Reply(404));
    auto has = client->HasBlob("app", Sha256Digest("x"));
    REQUIRE(has.ok());
    CHECK_FALSE(*has);
  }
  CHECK(fake->requests().size() == 1);
  ScriptDone(*fake);
}

TEST_CASE("a blob larger than GetBlob's limit stops at once, not retried") {
  auto [fake, client] = MakeClient();
  std::string big = Blob(5000);
  fake->Expect("GET", "/blobs/", Reply(200, big));
  auto got = client->GetBlob("app", Sha256Digest(big), 4096);
  REQUIRE(absl::IsInvalidArgument(got.status()));
  CHECK_THAT(Text(got.status()), Catch::Contains("larger than 4096 bytes"));
  CHECK(fake->requests().size() == 1);
  ScriptDone(*fake);
}

TEST_CASE("download resumes with Range after a short body") {
  ScratchDir dir;
  const std::string dest = dir.path() + "/blob.cdimg", partial = dest + ".partial";
  const std::string blob = Blob(1000);
  const std::string digest = Sha256Digest(blob);
  auto [fake, client] = MakeClient();
  FakeReply cut = Reply(200, blob);
  cut.drop_after = 400;  // the connection breaks after 400 bytes
  cut.chunk = 100;

  SECTION("server honours Range: 206 continues the file") {
    fake->Expect("GET", "/v2/app/blobs/" + digest, cut)
        .Expect("GET", "/v2/app/blobs/" + digest, Reply(206, blob.substr(400), {{"content-range", "bytes 400-999/1000"}}));
    std::vector<uint64_t> seen;
    auto got = client->DownloadBlob("app", digest, blob.size(), dest, [&](uint64_t done, uint64_t total) {
      CHECK(total == 1000);
      seen.push_back(done);
    });
    REQUIRE(got.ok());
    CHECK(*got == 1000);  // 400 + 600, nothing twice
    CHECK(ReadAll(dest) == blob);
    CHECK_FALSE(Exists(partial));
    REQUIRE(fake->requests().size() == 2);
    CHECK_FALSE(fake->requests()[0].range_from);
    CHECK(fake->requests()[1].range_from == 400u);
    REQUIRE_FALSE(seen.empty());
    CHECK(seen.back() == 1000);
  }
  SECTION("server ignores Range: 200 starts the file over") {
    fake->Expect("GET", "/blobs/", cut).Expect("GET", "/blobs/", Reply(200, blob));
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(got.ok());
    CHECK(*got == 1400);
    CHECK(ReadAll(dest) == blob);  // not the first 400 bytes twice
    CHECK(fake->requests()[1].range_from == 400u);
  }
  SECTION("a 2xx that ends early without an error is resumed too") {
    FakeReply shortened = Reply(200, blob.substr(0, 300));
    fake->Expect("GET", "/blobs/", shortened).Expect("GET", "/blobs/", Reply(206, blob.substr(300)));
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(got.ok());
    CHECK(ReadAll(dest) == blob);
    CHECK(fake->requests()[1].range_from == 300u);
  }
  SECTION("a partial file of an earlier run is resumed") {
    WriteFile(partial, blob.substr(0, 250));
    fake->Expect("GET", "/blobs/", Reply(206, blob.substr(250)));
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(got.ok());
    CHECK(*got == 750);
    CHECK(ReadAll(dest) == blob);
    CHECK(fake->requests()[0].range_from == 250u);
  }
  SECTION("broken on every attempt: Unavailable, the partial file kept for the next run") {
    RegistryOptions o;
    o.attempts = 3;
    auto rig = MakeClient(o);
    fake = rig.fake;
    client = std::move(rig.client);
    FakeReply more = Reply(206, blob.substr(400));
    more.drop_after = 100;
    FakeReply more2 = Reply(206, blob.substr(500));
    more2.drop_after = 100;
    fake->Expect("GET", "/blobs/", cut).Expect("GET", "/blobs/", more).Expect("GET", "/blobs/", more2);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsUnavailable(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("have 600 of 1000 bytes after 3 attempts") &&
                                       Catch::Contains("Connection reset") && Catch::Contains("run again to resume"));
    CHECK(ReadAll(partial) == blob.substr(0, 600));
    CHECK_FALSE(Exists(dest));
  }
  ScriptDone(*fake);
}

TEST_CASE("a download body longer than the blob is stopped and discarded") {
  ScratchDir dir;
  const std::string dest = dir.path() + "/blob.cdimg", partial = dest + ".partial";
  const std::string blob = Blob(1000);
  const std::string digest = Sha256Digest(blob);
  auto [fake, client] = MakeClient();
  const std::string longer = blob + Blob(500, 2);

  SECTION("no Content-Length: stopped at the first piece past the size") {
    FakeReply r = Reply(200, longer);
    r.content_length = false;
    r.chunk = 256;
    fake->Expect("GET", "/blobs/", r);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsDataLoss(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("more than the expected 1000 bytes") && Catch::Contains("removed"));
    CHECK(client->bytes_received() == 768);  // 3 pieces of 256 taken, the 4th (past 1000) refused
  }
  SECTION("Content-Length says so: nothing written at all") {
    fake->Expect("GET", "/blobs/", Reply(200, longer));
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsDataLoss(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("more than the expected 1000 bytes"));
    CHECK(client->bytes_received() == 0);
  }
  SECTION("a resumed 206 that runs past the size") {
    WriteFile(partial, blob.substr(0, 400));
    FakeReply r = Reply(206, longer.substr(400));
    r.content_length = false;
    r.chunk = 100;
    fake->Expect("GET", "/blobs/", r);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsDataLoss(got.status()));
    CHECK(client->bytes_received() == 600);
    CHECK(fake->requests()[0].range_from == 400u);
  }
  CHECK(fake->requests().size() == 1);  // not retried: the same bytes would come again
  CHECK_FALSE(Exists(partial));
  CHECK_FALSE(Exists(dest));
  ScriptDone(*fake);
}

TEST_CASE("an endless download body: stopped at the blob's size, bytes on disk bounded, partial removed") {
  ScratchDir dir;
  const std::string dest = dir.path() + "/blob.cdimg", partial = dest + ".partial";
  const std::string blob = Blob(300000);
  const std::string digest = Sha256Digest(blob);
  auto [fake, client] = MakeClient();
  FakeReply endless = Reply(200, Blob(65536, 3));
  endless.endless = true;
  endless.chunk = 16384;
  uint64_t largest_on_disk = 0;
  auto watch = [&](uint64_t, uint64_t) {
    if (Exists(partial)) largest_on_disk = std::max<uint64_t>(largest_on_disk, std::filesystem::file_size(partial));
  };

  SECTION("fresh download") {
    fake->Expect("GET", "/blobs/" + digest, endless);
  }
  SECTION("resumed download whose 206 never ends") {
    WriteFile(partial, blob.substr(0, 100000));
    endless.status = 206;
    fake->Expect("GET", "/blobs/" + digest, endless);
  }
  auto got = client->DownloadBlob("app", digest, blob.size(), dest, watch);
  REQUIRE(absl::IsDataLoss(got.status()));
  CHECK_THAT(Text(got.status()), Catch::Contains("more than the expected 300000 bytes") && Catch::Contains("removed " + partial) &&
                                     Catch::Contains(kHost));
  CHECK(largest_on_disk <= blob.size());
  CHECK(fake->body_bytes_sent() <= blob.size() + 16384);  // one piece past the size, then the transfer ends
  CHECK(fake->requests().size() == 1);                    // not retried: the same endless body would come again
  CHECK_FALSE(Exists(partial));
  CHECK_FALSE(Exists(dest));
  ScriptDone(*fake);
}

TEST_CASE("an endless manifest body stops at the manifest limit, not retried") {
  auto [fake, client] = MakeClient();
  FakeReply endless = Reply(200, std::string(65536, ' '));
  endless.endless = true;
  endless.chunk = 65536;
  fake->Expect("GET", "/v2/app/manifests/v1", endless);
  auto m = client->GetManifest("app", "v1");
  REQUIRE(absl::IsInvalidArgument(m.status()));
  CHECK_THAT(Text(m.status()), Catch::Contains("larger than 4 MiB") && Catch::Contains("app:v1"));
  CHECK(fake->body_bytes_sent() <= (4u << 20) + 65536);
  CHECK(fake->requests().size() == 1);
  ScriptDone(*fake);
}

TEST_CASE("a failed download says how many attempts were made and whether it can resume") {
  ScratchDir dir;
  const std::string dest = dir.path() + "/blob.cdimg", partial = dest + ".partial";
  const std::string blob = Blob(1000);
  const std::string digest = Sha256Digest(blob);

  SECTION("one attempt allowed: '1 attempt', not the configured default") {
    RegistryOptions o;
    o.attempts = 1;
    auto [fake, client] = MakeClient(o);
    FakeReply cut = Reply(200, blob);
    cut.drop_after = 300;
    fake->Expect("GET", "/blobs/", cut);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsUnavailable(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("have 300 of 1000 bytes after 1 attempt (") &&
                                       Catch::Contains("run again to resume at byte 300"));
    CHECK(ReadAll(partial) == blob.substr(0, 300));
    ScriptDone(*fake);
  }
  SECTION("nothing received: no empty partial file left, no promise of a resume") {
    RegistryOptions o;
    o.attempts = 2;
    auto [fake, client] = MakeClient(o);
    fake->Expect("GET", "/blobs/", NoAnswer("Connection refused")).Expect("GET", "/blobs/", NoAnswer("Connection refused"));
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsUnavailable(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("Connection refused") && Catch::Contains("have 0 of 1000 bytes after 2 attempts") &&
                                       Catch::Contains("nothing kept") && !Catch::Contains("resume"));
    CHECK_FALSE(Exists(partial));
    ScriptDone(*fake);
  }
  SECTION("the server ignores Range: the partial cannot be resumed and is removed") {
    RegistryOptions o;
    o.attempts = 2;
    auto [fake, client] = MakeClient(o);
    FakeReply cut = Reply(200, blob);
    cut.drop_after = 300;
    fake->Expect("GET", "/blobs/", cut).Expect("GET", "/blobs/", cut);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsUnavailable(got.status()));
    CHECK(fake->requests()[1].range_from == 300u);
    CHECK_THAT(Text(got.status()), Catch::Contains("does not honour Range requests") && Catch::Contains("start over") &&
                                       !Catch::Contains("run again to resume"));
    CHECK_FALSE(Exists(partial));
    ScriptDone(*fake);
  }
  SECTION("the server says Accept-Ranges: none") {
    RegistryOptions o;
    o.attempts = 1;
    auto [fake, client] = MakeClient(o);
    FakeReply cut = Reply(200, blob, {{"accept-ranges", "none"}});
    cut.drop_after = 300;
    fake->Expect("GET", "/blobs/", cut);
    auto got = client->DownloadBlob("app", digest, blob.size(), dest);
    REQUIRE(absl::IsUnavailable(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("does not honour Range requests"));
    CHECK_FALSE(Exists(partial));
    ScriptDone(*fake);
  }
  CHECK_FALSE(Exists(dest));
}

TEST_CASE("a downloaded blob with the wrong digest: DataLoss, nothing kept") {
  ScratchDir dir;
  const std::string dest = dir.path() + "/blob.cdimg", partial = dest + ".partial";
  const std::string blob = Blob(1000), wrong = Blob(1000, 7);
  const std::string digest = Sha256Digest(blob);
  auto [fake, client] = MakeClient();
  fake->Expect("GET", "/blobs/" + digest, Reply(200, wrong));
  auto got = client->DownloadBlob("app", digest, blob.size(), dest);
  REQUIRE(absl::IsDataLoss(got.status()));
  CHECK_THAT(Text(got.status()), Catch::Contains(digest) && Catch::Contains(Sha256Digest(wrong)) &&
                                     Catch::Contains("partial file was removed"));
  CHECK_FALSE(Exists(partial));
  CHECK_FALSE(Exists(dest));
  CHECK(fake->requests().size() == 1);
  ScriptDone(*fake);
}

TEST_CASE("upload of a blob the registry already has is skipped") {
  ScratchDir dir;
  const std::string path = dir.path() + "/blob.cdimg";
  const std::string blob = Blob(10);
  WriteFile(path, blob);
  const std::string digest = Sha256Digest(blob);
  RegistryOptions o;
  o.chunk_size = 4;
  auto [fake, client] = MakeClient(o);

  SECTION("HEAD 200: nothing uploaded") {
    fake->Expect("HEAD", "/v2/app/blobs/" + digest, Reply(200));
    auto up = client->UploadBlobFileIfMissing("app", digest, path);
    REQUIRE(up.ok());
    CHECK_FALSE(*up);
    CHECK(fake->requests().size() == 1);
  }
  SECTION("HEAD 404: chunked upload") {
    fake->Expect("HEAD", "/v2/app/blobs/" + digest, Reply(404))
        .Expect("POST", "/v2/app/blobs/uploads/", Reply(202, "", {{"location", "/v2/app/blobs/uploads/u1?state=s0"}}))
        .Expect("PATCH", "/v2/app/blobs/uploads/u1?state=s0", Reply(202, "", {{"location", "/v2/app/blobs/uploads/u1?state=s1"}}))
        .Expect("PATCH", "/v2/app/blobs/uploads/u1?state=s1", Reply(202, "", {{"location", "/v2/app/blobs/uploads/u1?state=s2"}}))
        .Expect("PATCH", "/v2/app/blobs/uploads/u1?state=s2", Reply(202, "", {{"location", "https://cdn.test/up/u1?state=s3"}}))
        .Expect("PUT", "https://cdn.test/up/u1?state=s3&digest=" + digest, Reply(201));
    std::vector<uint64_t> seen;
    auto up = client->UploadBlobFileIfMissing("app", digest, path, [&](uint64_t done, uint64_t total) {
      CHECK(total == 10);
      seen.push_back(done);
    });
    REQUIRE(up.ok());
    CHECK(*up);
    const auto& rq = fake->requests();
    REQUIRE(rq.size() == 6);
    CHECK(rq[2].body + rq[3].body + rq[4].body == blob);
    CHECK(rq[2].Header("Content-Range") == "0-3");
    CHECK(rq[3].Header("Content-Range") == "4-7");
    CHECK(rq[4].Header("Content-Range") == "8-9");
    CHECK(rq[5].body.empty());
    REQUIRE_FALSE(seen.empty());
    CHECK(seen.back() == 10);
  }
  SECTION("a 5xx in the middle starts a new upload session") {
    fake->Expect("HEAD", "/blobs/", Reply(404))
        .Expect("POST", "/blobs/uploads/", Reply(202, "", {{"location", "/v2/app/blobs/uploads/a"}}))
        .Expect("PATCH", "/uploads/a", Reply(202, "", {{"location", "/v2/app/blobs/uploads/a"}}))
        .Expect("PATCH", "/uploads/a", Reply(500))
        .Expect("POST", "/blobs/uploads/", Reply(202, "", {{"location", "/v2/app/blobs/uploads/b"}}))
        .Expect("PATCH", "/uploads/b", Reply(202, "", {{"location", "/v2/app/blobs/uploads/b"}}))
        .Expect("PATCH", "/uploads/b", Reply(202, "", {{"location", "/v2/app/blobs/uploads/b"}}))
        .Expect("PATCH", "/uploads/b", Reply(202, "", {{"location", "/v2/app/blobs/uploads/b"}}))
        .Expect("PUT", "/uploads/b?digest=" + digest, Reply(201));
    auto up = client->UploadBlobFileIfMissing("app", digest, path);
    REQUIRE(up.ok());
    CHECK(*up);
    const auto& rq = fake->requests();
    REQUIRE(rq.size() == 9);
    CHECK(rq[5].body + rq[6].body + rq[7].body == blob);
    CHECK(rq[5].Header("Content-Range") == "0-3");
  }
  ScriptDone(*fake);
}

TEST_CASE("an upload failing on every attempt says how many sessions were tried") {
  ScratchDir dir;
  const std::string path = dir.path() + "/blob.cdimg";
  WriteFile(path, "0123456789");
  RegistryOptions o;
  o.attempts = 2;
  auto [fake, client] = MakeClient(o);
  fake->Expect("POST", "/blobs/uploads/", Reply(503)).Expect("POST", "/blobs/uploads/", Reply(503));
  auto s = client->UploadBlobFile("app", Sha256Digest("0123456789"), path);
  REQUIRE(absl::IsUnavailable(s));
  CHECK_THAT(Text(s), Catch::Contains("HTTP 503") && Catch::Contains("after 2 attempts"));
  CHECK(fake->requests().size() == 2);
  ScriptDone(*fake);
}
