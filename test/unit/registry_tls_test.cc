// The curl transport's TLS settings against a real TLS server on 127.0.0.1
// with a certificate made for the test: an untrusted certificate fails after
// one connection with the advice; the same server is trusted through
// ca_files (CURLOPT_CAINFO_BLOB with the system bundle), through docker's
// certs.d/HOST/ca.crt read by LoadHostConfig, and with skip_verify.
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "d4c/base/strcat.h"
#include "d4c/registry/hosts.h"
#include "d4c/registry/registry_client.h"
#include "oci_fixture.h"

using namespace d4c::registry;
using d4c::Msg;
using d4c::StrCat;
using d4c::oci_test::ScratchDir;

namespace {

const std::string kManifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})";

// A self-signed certificate for IP 127.0.0.1 (also its own CA) and its key.
struct TestCert {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  TestCert() {
    key = EVP_EC_gen("P-256");
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("d4c test registry"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"}, std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      X509_add_ext(cert, ext, -1);
      X509_EXTENSION_free(ext);
    }
    X509_sign(cert, key, EVP_sha256());
  }
  ~TestCert() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  void WritePem(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_X509(f, cert);
    std::fclose(f);
  }
};

// Answers every request with kManifest over TLS; counts connections.
class TlsServer {
 public:
  explicit TlsServer(const TestCert& c) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx_, c.cert);
    SSL_CTX_use_PrivateKey(ctx_, c.key);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 8) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TlsServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    int w = ::socket(AF_INET, SOCK_STREAM, 0);  // wakes accept() if shutdown did not
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    (void)::connect(w, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(w);
    thread_.join();
    ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  std::string host() const { return StrCat("127.0.0.1:", port_); }
  int connections() const { return connections_; }

 private:
  void Serve() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0 || stop_) {
        if (c >= 0) ::close(c);
        return;
      }
      ++connections_;
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, c);
      if (SSL_accept(ssl) == 1) {
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos) {
          int n = SSL_read(ssl, buf, sizeof buf);
          if (n <= 0) break;
          req.append(buf, static_cast<size_t>(n));
        }
        std::string reply = StrCat("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                                   "Content-Length: ", kManifest.size(), "\r\nConnection: close\r\n\r\n", kManifest);
        SSL_write(ssl, reply.data(), static_cast<int>(reply.size()));
        SSL_shutdown(ssl);
      }
      ERR_clear_error();
      SSL_free(ssl);
      ::close(c);
    }
  }
  SSL_CTX* ctx_ = nullptr;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

absl::StatusOr<std::optional<Manifest>> Fetch(RegistryOptions o) {
  o.first_backoff_seconds = 0;
  auto client = RegistryClient::Create(o);
  if (!client.ok()) return client.status();
  return (*client)->GetManifest("app", "v1");
}

}  // namespace

TEST_CASE("over libcurl: an untrusted certificate fails at once, ca_files, certs.d/HOST/ca.crt and skip_verify trust it") {
  TestCert cert;
  TlsServer server(cert);
  ScratchDir dir;
  const std::string pem = dir.path() + "/test-ca.pem";
  cert.WritePem(pem);
  RegistryOptions o;
  o.host = server.host();
  o.attempts = 5;
  o.hosts_dir = dir.path() + "/certs.d";

  SECTION("system CAs only: one connection, the advice names hosts.toml's ca and --ca-file") {
    auto m = Fetch(o);
    REQUIRE(absl::IsFailedPrecondition(m.status()));
    CHECK_THAT(Msg(m.status().message()), Catch::Contains(o.host) && Catch::Contains("ca = ") &&
                                              Catch::Contains(o.hosts_dir + "/" + o.host + "/hosts.toml") &&
                                              Catch::Contains("--ca-file"));
    CHECK(server.connections() == 1);
  }
  SECTION("ca_files (--ca-file)") {
    o.ca_files = {pem};
    auto m = Fetch(o);
    REQUIRE(m.ok());
    REQUIRE(m->has_value());
    CHECK((*m)->body == kManifest);
  }
  SECTION("docker's certs.d/HOST/ca.crt through LoadHostConfig") {
    std::filesystem::create_directories(o.hosts_dir + "/" + o.host);
    std::filesystem::copy_file(pem, o.hosts_dir + "/" + o.host + "/ca.crt");
    auto config = LoadHostConfig(o.host, o.hosts_dir);
    REQUIRE(config.ok());
    ApplyHostConfig(*config, false, o);
    auto m = Fetch(o);
    REQUIRE(m.ok());
    REQUIRE(m->has_value());
    CHECK((*m)->body == kManifest);
  }
  SECTION("skip_verify") {
    o.skip_verify = true;
    auto m = Fetch(o);
    REQUIRE(m.ok());
    REQUIRE(m->has_value());
  }
}
