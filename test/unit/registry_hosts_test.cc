// Registry configuration as containerd users write it: certs.d/HOST/hosts.toml
// (server, [host."URL"] mirrors with capabilities, ca, client, skip_verify),
// docker's certs.d files (ca.crt, client.cert/.key), docker's config.json
// credentials, and what a client built from it does with TLS failures (one
// attempt, advice naming the setting that fixes it).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>

#include "d4c/base/strcat.h"
#include "d4c/registry/hosts.h"
#include "d4c/registry/registry_client.h"
#include "fake_http_transport.h"
#include "oci_fixture.h"

using namespace d4c::registry;
using d4c::Msg;
using d4c::StrCat;
using d4c::oci_test::ScratchDir;
using d4c::registry_test::FakeHttpTransport;
using d4c::registry_test::NoAnswer;
using d4c::registry_test::Reply;

namespace {

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string Text(const absl::Status& s) { return Msg(s.message()); }

// Sets an environment variable for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("hosts.toml: server, mirrors in file order, certificates relative to the host directory") {
  ScratchDir dir;
  const std::string hdir = dir.path() + "/reg.test:5000";
  Write(hdir + "/hosts.toml", R"(
server = "https://reg.test:5000/"
ca = "ca.crt"
client = [["/etc/pki/client.cert", "client.key"]]

[host."https://zz-mirror.test"]
  capabilities = ["pull", "resolve"]
  ca = ["/etc/pki/m1.crt", "m2.crt"]
  skip_verify = true

[host."http://aa-pushonly.test:8080/prefix"]
  capabilities = ["push", "resolve"]
  client = "both.pem"
)");
  auto c = LoadHostConfig("reg.test:5000", dir.path());
  REQUIRE(c.ok());
  CHECK(c->source == hdir + "/hosts.toml");
  CHECK(c->server.url == "https://reg.test:5000");
  CHECK(c->server.ca_files == std::vector<std::string>{hdir + "/ca.crt"});
  REQUIRE(c->server.client.size() == 1);
  CHECK(c->server.client[0].cert == "/etc/pki/client.cert");
  CHECK(c->server.client[0].key == hdir + "/client.key");
  CHECK(c->server.capabilities == std::vector<std::string>{"pull", "resolve", "push"});
  REQUIRE(c->mirrors.size() == 2);
  // file order, not toml++'s sorted key order
  CHECK(c->mirrors[0].url == "https://zz-mirror.test");
  CHECK(c->mirrors[0].skip_verify);
  CHECK(c->mirrors[0].ca_files == std::vector<std::string>{"/etc/pki/m1.crt", hdir + "/m2.crt"});
  CHECK(c->mirrors[1].url == "http://aa-pushonly.test:8080/prefix");
  CHECK(c->mirrors[1].plain_http());
  REQUIRE(c->mirrors[1].client.size() == 1);
  CHECK(c->mirrors[1].client[0].cert == hdir + "/both.pem");
  CHECK(c->mirrors[1].client[0].key.empty());
  // pull goes to the first mirror that can pull and resolve, push to the one that can push
  CHECK(c->EndpointFor(false).url == "https://zz-mirror.test");
  CHECK(c->EndpointFor(true).url == "http://aa-pushonly.test:8080/prefix");

  RegistryOptions o;
  o.host = "reg.test:5000";
  ApplyHostConfig(*c, /*push=*/true, o);
  CHECK(o.endpoint == "http://aa-pushonly.test:8080/prefix");
  CHECK(o.plain_http);
  CHECK(o.client_cert == hdir + "/both.pem");
  CHECK_FALSE(o.skip_verify);
}

TEST_CASE("hosts.toml: plain HTTP via server = \"http://...\", requests go there") {
  ScratchDir dir;
  Write(dir.path() + "/localhost:5000/hosts.toml", "server = \"http://localhost:5000\"\n");
  auto c = LoadHostConfig("localhost:5000", dir.path());
  REQUIRE(c.ok());
  CHECK(c->server.plain_http());
  CHECK(c->mirrors.empty());
  RegistryOptions o;
  o.host = "localhost:5000";
  o.first_backoff_seconds = 0;
  ApplyHostConfig(*c, false, o);
  CHECK(o.plain_http);
  auto fake = std::make_unique<FakeHttpTransport>();
  FakeHttpTransport* f = fake.get();
  f->Expect("HEAD", "http://localhost:5000/v2/app/manifests/v1", Reply(404));
  auto client = RegistryClient::Create(o, std::move(fake));
  REQUIRE(client.ok());
  auto d = (*client)->ManifestDigest("app", "v1");
  REQUIRE(d.ok());
  CHECK_FALSE(d->has_value());
  CHECK(f->mismatch().empty());
}

TEST_CASE("no configuration: HTTPS to the host, docker.io goes to registry-1.docker.io") {
  ScratchDir dir;
  auto c = LoadHostConfig("reg.test", dir.path() + "/does-not-exist");
  REQUIRE(c.ok());
  CHECK(c->source.empty());
  CHECK(c->server.url == "https://reg.test");
  CHECK(c->server.ca_files.empty());
  auto d = LoadHostConfig("docker.io", dir.path());
  REQUIRE(d.ok());
  CHECK(d->server.url == "https://registry-1.docker.io");
}

TEST_CASE("docker's certs.d files when there is no hosts.toml, _default when the host has no directory") {
  ScratchDir dir;
  const std::string hdir = dir.path() + "/reg.test:5000";
  Write(hdir + "/ca.crt", "CA");
  Write(hdir + "/client.cert", "CERT");
  Write(hdir + "/client.key", "KEY");
  auto c = LoadHostConfig("reg.test:5000", dir.path());
  REQUIRE(c.ok());
  CHECK(c->server.url == "https://reg.test:5000");
  CHECK(c->server.ca_files == std::vector<std::string>{hdir + "/ca.crt"});
  REQUIRE(c->server.client.size() == 1);
  CHECK(c->server.client[0].cert == hdir + "/client.cert");
  CHECK(c->server.client[0].key == hdir + "/client.key");

  SECTION("a client certificate without its key is an error naming both") {
    std::filesystem::remove(hdir + "/client.key");
    auto bad = LoadHostConfig("reg.test:5000", dir.path());
    REQUIRE(absl::IsInvalidArgument(bad.status()));
    CHECK_THAT(Text(bad.status()), Catch::Contains(hdir + "/client.cert") && Catch::Contains("client.key"));
  }
  SECTION("_default") {
    Write(dir.path() + "/_default/hosts.toml", "skip_verify = true\n");
    auto other = LoadHostConfig("other.test", dir.path());
    REQUIRE(other.ok());
    CHECK(other->server.url == "https://other.test");
    CHECK(other->server.skip_verify);
    CHECK(other->source == dir.path() + "/_default/hosts.toml");
  }
}

TEST_CASE("hosts.toml errors name the file and the line") {
  const std::string path = "/etc/containerd/certs.d/reg.test/hosts.toml";
  struct Case {
    const char* text;
    std::string where, says;
  };
  const Case cases[] = {
      {"server = \"https://reg.test\"\nca = [\"a.crt\"\n", path + ":", "not valid TOML"},
      {"server = \"https://reg.test\"\n\nskip-verify = true\n", path + ":3", "unknown key 'skip-verify'"},
      {"server = \"reg.test:5000\"\n", path + ":1", "must start with https:// or http://"},
      {"skip_verify = \"yes\"\n", path + ":1", "skip_verify must be true or false"},
      {"[host.\"https://m.test\"]\n  capabilities = [\"pull\", \"fetch\"]\n", path + ":2", "capability 'fetch'"},
      {"ca = 5\n", path + ":1", "ca must be a string or an array of strings"},
      {"client = [[\"only-cert\"]]\n", path + ":1", "client entries are"},
      {"[host.\"m.test\"]\n", path + ":1", "must start with https:// or http://"},
      {"override_path = true\n", path + ":1", "override_path = true is not supported"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto got = ParseHostsToml("reg.test", c.text, path);
    REQUIRE(absl::IsInvalidArgument(got.status()));
    CHECK_THAT(Text(got.status()), Catch::StartsWith(c.where) && Catch::Contains(c.says));
  }
  // The TOML syntax error says where: line 2, where the array is left open.
  auto syntax = ParseHostsToml("reg.test", "server = \"https://reg.test\"\nca = [\"a.crt\"\n", path);
  CHECK_THAT(Text(syntax.status()), Catch::StartsWith(path + ":2:") || Catch::StartsWith(path + ":3:"));
}

TEST_CASE("docker config.json credentials: $DOCKER_CONFIG, auths.HOST.auth, docker.io's own key") {
  ScratchDir dir;
  ScopedEnv env("DOCKER_CONFIG", dir.path());
  Write(dir.path() + "/config.json", R"({"auths": {
      "reg.test:5000": {"auth": "YWxpY2U6czNjcmV0"},
      "https://other.test/v1/": {"auth": "Ym9iOnB3OndpdGg6Y29sb25z"},
      "https://index.docker.io/v1/": {"auth": "ZGg6aHVi"},
      "broken.test": {"auth": "not base64!"}}})");
  auto a = DockerConfigCredentials("reg.test:5000");
  REQUIRE(a.has_value());
  CHECK(a->user == "alice");
  CHECK(a->password == "s3cret");
  auto b = DockerConfigCredentials("other.test");  // scheme and path of the key are ignored
  REQUIRE(b.has_value());
  CHECK(b->user == "bob");
  CHECK(b->password == "pw:with:colons");
  auto d = DockerConfigCredentials("docker.io");
  REQUIRE(d.has_value());
  CHECK(d->user == "dh");
  CHECK_FALSE(DockerConfigCredentials("broken.test").has_value());
  CHECK_FALSE(DockerConfigCredentials("unknown.test").has_value());
}

TEST_CASE("a TLS failure is reported after one attempt, with the setting that fixes it") {
  RegistryOptions o;
  o.host = "reg.test:5000";
  o.attempts = 5;
  o.first_backoff_seconds = 0;
  o.hosts_dir = "/etc/containerd/certs.d";
  auto fake = std::make_unique<FakeHttpTransport>();
  FakeHttpTransport* f = fake.get();
  auto client = RegistryClient::Create(o, std::move(fake));
  REQUIRE(client.ok());

  SECTION("untrusted certificate") {
    auto r = NoAnswer("SSL certificate problem: self-signed certificate in certificate chain");
    r.tls_error = true;
    f->Expect("GET", "/v2/app/manifests/v1", r);
    auto m = (*client)->GetManifest("app", "v1");
    REQUIRE(absl::IsFailedPrecondition(m.status()));
    CHECK_THAT(Text(m.status()), Catch::Contains("self-signed certificate") && Catch::Contains("reg.test:5000") &&
                                     Catch::Contains("ca = ") &&
                                     Catch::Contains("/etc/containerd/certs.d/reg.test:5000/hosts.toml") &&
                                     Catch::Contains("--ca-file") && !Catch::Contains("attempts"));
  }
  SECTION("a plain HTTP server: 'wrong version number' means --plain-http") {
    auto r = NoAnswer("OpenSSL/3.0.11: error:0A00010B:SSL routines::wrong version number");
    r.tls_error = true;
    f->Expect("HEAD", "/v2/app/blobs/", r);
    auto has = (*client)->HasBlob("app", Sha256Digest("x"));
    REQUIRE(absl::IsFailedPrecondition(has.status()));
    CHECK_THAT(Text(has.status()), Catch::Contains("--plain-http") && Catch::Contains("server = \"http://reg.test:5000\""));
  }
  SECTION("a download: no retry, no partial file left") {
    ScratchDir dir;
    auto r = NoAnswer("SSL certificate problem: unable to get local issuer certificate");
    r.tls_error = true;
    f->Expect("GET", "/blobs/", r);
    auto got = (*client)->DownloadBlob("app", Sha256Digest("x"), 1, dir.path() + "/b");
    REQUIRE(absl::IsFailedPrecondition(got.status()));
    CHECK_THAT(Text(got.status()), Catch::Contains("--ca-file"));
    CHECK_FALSE(std::filesystem::exists(dir.path() + "/b.partial"));
  }
  SECTION("an upload: one session, not five") {
    ScratchDir dir;
    Write(dir.path() + "/blob", "x");
    auto r = NoAnswer("SSL certificate problem: certificate has expired");
    r.tls_error = true;
    f->Expect("POST", "/blobs/uploads/", r);
    auto s = (*client)->UploadBlobFile("app", Sha256Digest("x"), dir.path() + "/blob");
    REQUIRE(absl::IsFailedPrecondition(s));
    CHECK_THAT(Text(s), Catch::Contains("certificate has expired") && !Catch::Contains("attempts"));
  }
  CHECK(f->requests().size() == 1);
  CHECK(f->pending() == 0);
  CHECK(f->mismatch().empty());
}

TEST_CASE("a connection refused is still retried (not a TLS failure)") {
  RegistryOptions o;
  o.host = "reg.test:5000";
  o.attempts = 3;
  o.first_backoff_seconds = 0;
  auto fake = std::make_unique<FakeHttpTransport>();
  FakeHttpTransport* f = fake.get();
  auto client = RegistryClient::Create(o, std::move(fake));
  REQUIRE(client.ok());
  for (int i = 0; i < 3; ++i) f->Expect("GET", "/manifests/v1", NoAnswer("Connection refused"));
  auto m = (*client)->GetManifest("app", "v1");
  REQUIRE(absl::IsUnavailable(m.status()));
  CHECK_THAT(Text(m.status()), Catch::Contains("after 3 attempts") && !Catch::Contains("--ca-file"));
  CHECK(f->requests().size() == 3);
}

TEST_CASE("the curl transport refuses unreadable certificate files at once") {
  CurlTransportOptions co;
  co.ca_files = {"/nonexistent/d4c-test/ca.crt"};
  auto t = NewCurlTransport(co);
  REQUIRE(absl::IsNotFound(t.status()));
  CHECK_THAT(Text(t.status()), Catch::Contains("/nonexistent/d4c-test/ca.crt"));
  CurlTransportOptions cc;
  cc.client_cert = "/nonexistent/d4c-test/client.cert";
  auto u = NewCurlTransport(cc);
  REQUIRE(absl::IsNotFound(u.status()));
  CHECK_THAT(Text(u.status()), Catch::Contains("client.cert"));
}

namespace {

// A plain-HTTP server on 127.0.0.1 that answers every connection with a 400
// and counts connections: what an HTTPS client meets at a registry that does
// not speak TLS.
class PlainHttpServer {
 public:
  PlainHttpServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 8) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        ++connections_;
        char buf[4096];
        (void)!::read(c, buf, sizeof buf);
        const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!::write(c, reply, sizeof reply - 1);
        ::close(c);
      }
    });
  }
  ~PlainHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    // wake accept() with one more connection in case shutdown does not
    int w = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    (void)::connect(w, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(w);
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int connections() const { return connections_; }

 private:
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("over libcurl: HTTPS to a plain HTTP server fails after one attempt, advising --plain-http") {
  PlainHttpServer server;
  REQUIRE(server.port() > 0);
  RegistryOptions o;
  o.host = StrCat("127.0.0.1:", server.port());
  o.attempts = 5;
  o.first_backoff_seconds = 0;
  auto client = RegistryClient::Create(o);
  REQUIRE(client.ok());
  auto m = (*client)->GetManifest("app", "v1");
  REQUIRE(absl::IsFailedPrecondition(m.status()));
  CHECK_THAT(Text(m.status()), Catch::Contains("--plain-http") && Catch::Contains(o.host));
  CHECK(server.connections() == 1);

  SECTION("with --plain-http the same server is reached over HTTP") {
    o.plain_http = true;
    auto plain = RegistryClient::Create(o);
    REQUIRE(plain.ok());
    auto again = (*plain)->GetManifest("app", "v1");
    REQUIRE(absl::IsFailedPrecondition(again.status()));
    CHECK_THAT(Text(again.status()), Catch::Contains("HTTP 400") && !Catch::Contains("--plain-http"));
    CHECK(server.connections() == 2);
  }
}
