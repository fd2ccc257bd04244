// Several endpoints of one registry tried in order (registry/failover.h,
// HostConfig::PullEndpoints): what moves to the next endpoint (no answer,
// 5xx, 429, a manifest the mirror lacks) and what does not (401, writes).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/base/strcat.h"
#include "d4c/registry/failover.h"
#include "d4c/registry/hosts.h"
#include "fake_registry.h"

using namespace d4c;
using d4c::registry_test::FakeRegistry;
namespace fs = std::filesystem;

namespace {

// An endpoint that answers every call with the same failure.
class Down final : public registry::RegistryApi {
 public:
  explicit Down(absl::Status s) : s_(std::move(s)) {}
  int calls = 0;
  std::string host() const override { return "down.test"; }
  absl::StatusOr<bool> HasBlob(const std::string&, const std::string&) override { return Fail(); }
  absl::Status UploadBlobFile(const std::string&, const std::string&, const std::string&,
                              const registry::ProgressFn&) override {
    return Fail();
  }
  absl::Status UploadBlobBytes(const std::string&, const std::string&, const std::string&) override { return Fail(); }
  absl::StatusOr<uint64_t> DownloadBlob(const std::string&, const std::string&, uint64_t, const std::string&,
                                        const registry::ProgressFn&) override {
    return Fail();
  }
  absl::StatusOr<std::optional<registry::Manifest>> GetManifest(const std::string&, const std::string&) override {
    return Fail();
  }
  absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string&, const std::string&) override {
    return Fail();
  }
  absl::StatusOr<std::vector<std::string>> ListTags(const std::string&) override { return Fail(); }
  absl::StatusOr<std::string> PutManifest(const std::string&, const std::string&, const std::string&,
                                          const std::string&) override {
    return Fail();
  }

 private:
  absl::Status Fail() {
    ++calls;
    return s_;
  }
  absl::Status s_;
};

const char* kIndex = "application/vnd.oci.image.index.v1+json";

std::string FreshDir() {
  auto dir = fs::temp_directory_path() / StrCat("d4c-failover-test-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

}  // namespace

TEST_CASE("an endpoint that does not answer: the next one does") {
  auto refused = std::make_shared<Down>(absl::UnavailableError("mirror.test: GET manifest: Connection refused"));
  auto server = std::make_shared<FakeRegistry>();
  auto digest = *server->PutManifest("app", "v1", kIndex, "{}");
  auto r = registry::NewFailoverRegistry({refused, server});
  CHECK(r->host() == "down.test");
  auto m = r->GetManifest("app", "v1");
  REQUIRE(m.ok());
  REQUIRE(m->has_value());
  CHECK((*m)->digest == digest);
  CHECK(refused->calls == 1);
  auto tags = r->ListTags("app");
  REQUIRE(tags.ok());
  CHECK(tags->size() == 1);
  CHECK(refused->calls == 2);  // every request starts at the first endpoint, as containerd's
}

TEST_CASE("5xx (Unavailable) and 429 (ResourceExhausted) move on, 401, 403 and bad data do not") {
  CHECK(registry::TryNextEndpoint(absl::UnavailableError("HTTP 503")));
  CHECK(registry::TryNextEndpoint(absl::ResourceExhaustedError("HTTP 429")));
  CHECK(registry::TryNextEndpoint(absl::DeadlineExceededError("timeout")));
  CHECK_FALSE(registry::TryNextEndpoint(absl::UnauthenticatedError("HTTP 401")));
  CHECK_FALSE(registry::TryNextEndpoint(absl::PermissionDeniedError("HTTP 403")));
  CHECK_FALSE(registry::TryNextEndpoint(absl::DataLossError("digest mismatch")));
  CHECK_FALSE(registry::TryNextEndpoint(absl::FailedPreconditionError("TLS: unknown CA")));

  auto denied = std::make_shared<Down>(absl::UnauthenticatedError("mirror.test: GET manifest: HTTP 401"));
  auto server = std::make_shared<FakeRegistry>();
  (void)server->PutManifest("app", "v1", kIndex, "{}");
  auto r = registry::NewFailoverRegistry({denied, server});
  auto m = r->GetManifest("app", "v1");
  REQUIRE_FALSE(m.ok());
  CHECK(absl::IsUnauthenticated(m.status()));
  CHECK(server->document_gets.empty());
}

TEST_CASE("a manifest a mirror lacks is looked up at the next endpoint") {
  auto mirror = std::make_shared<FakeRegistry>();
  auto server = std::make_shared<FakeRegistry>();
  auto digest = *server->PutManifest("app", "v1", kIndex, "{}");
  auto r = registry::NewFailoverRegistry({mirror, server});
  auto m = r->GetManifest("app", "v1");
  REQUIRE(m.ok());
  REQUIRE(m->has_value());
  CHECK((*m)->digest == digest);
  auto d = r->ManifestDigest("app", "v1");
  REQUIRE(d.ok());
  CHECK(d->value_or("") == digest);
  // nowhere: not found (not an error)
  auto none = r->GetManifest("app", "nope");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  CHECK(mirror->document_gets.size() == 2);
  // the mirror lacks it and the server is down: still "not found"
  auto down = std::make_shared<Down>(absl::UnavailableError("server: Connection refused"));
  auto r2 = registry::NewFailoverRegistry({mirror, down});
  auto m2 = r2->GetManifest("app", "v1");
  REQUIRE(m2.ok());
  CHECK_FALSE(m2->has_value());
}

TEST_CASE("every endpoint down: the last failure, naming the earlier ones") {
  auto a = std::make_shared<Down>(absl::UnavailableError("mirror.test: Connection refused"));
  auto b = std::make_shared<Down>(absl::UnavailableError("server.test: HTTP 502"));
  auto r = registry::NewFailoverRegistry({a, b});
  auto m = r->GetManifest("app", "v1");
  REQUIRE_FALSE(m.ok());
  CHECK(absl::IsUnavailable(m.status()));
  CHECK(std::string(m.status().message()) == "server.test: HTTP 502 (tried before: mirror.test: Connection refused)");
  auto t = r->ListTags("app");
  REQUIRE_FALSE(t.ok());
  CHECK(std::string(t.status().message()) == "server.test: HTTP 502 (tried before: mirror.test: Connection refused)");
}

TEST_CASE("a blob download cut at one endpoint continues from its .partial at the next") {
  std::string blob(10000, 'x');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 7);
  std::string digest = registry::Sha256Digest(blob);
  auto mirror = std::make_shared<FakeRegistry>();
  auto server = std::make_shared<FakeRegistry>();
  mirror->blobs[digest] = blob;
  mirror->cut_after[digest] = 4000;
  server->blobs[digest] = blob;
  auto r = registry::NewFailoverRegistry({mirror, server});
  std::string dest = FreshDir() + "/blob";
  auto n = r->DownloadBlob("app", digest, blob.size(), dest, nullptr);
  REQUIRE(n.ok());
  CHECK(*n == 6000);  // what the server sent
  CHECK(mirror->served == 4000);
  CHECK(server->served == 6000);
  std::ifstream in(dest, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == blob);
  fs::remove_all(fs::path(dest).parent_path());
}

TEST_CASE("writes and HasBlob go to the first endpoint only") {
  auto first = std::make_shared<Down>(absl::UnavailableError("push.test: Connection refused"));
  auto second = std::make_shared<FakeRegistry>();
  auto r = registry::NewFailoverRegistry({first, second});
  CHECK(absl::IsUnavailable(r->PutManifest("app", "v1", kIndex, "{}").status()));
  CHECK(absl::IsUnavailable(r->UploadBlobBytes("app", registry::Sha256Digest("b"), "b")));
  CHECK(absl::IsUnavailable(r->HasBlob("app", registry::Sha256Digest("b")).status()));
  CHECK(second->manifests.empty());
  CHECK(second->uploads.empty());
  CHECK(first->calls == 3);
}

TEST_CASE("PullEndpoints: pull mirrors in file order, then the server once") {
  auto c = registry::ParseHostsToml("reg.test:5000", R"(
server = "https://reg.test:5000"
[host."https://b-mirror.test"]
  capabilities = ["pull", "resolve"]
[host."https://a-push-only.test"]
  capabilities = ["push", "resolve"]
[host."https://pull-only.test"]
  capabilities = ["pull"]
[host."http://c-mirror.test:8080"]
  capabilities = ["pull", "resolve"]
)", "/etc/containerd/certs.d/reg.test:5000/hosts.toml");
  REQUIRE(c.ok());
  std::vector<std::string> urls;
  for (const auto* e : c->PullEndpoints()) urls.push_back(e->url);
  CHECK(urls == std::vector<std::string>{"https://b-mirror.test", "http://c-mirror.test:8080", "https://reg.test:5000"});

  // containerd 1.6 wants the server as a [host] section too: tried once
  auto same = registry::ParseHostsToml("reg.test:5000", R"(
server = "https://reg.test:5000"
[host."https://reg.test:5000"]
  capabilities = ["pull", "resolve"]
)", "/x/hosts.toml");
  REQUIRE(same.ok());
  REQUIRE(same->PullEndpoints().size() == 1);
  CHECK(same->PullEndpoints()[0] == &same->mirrors[0]);
}
