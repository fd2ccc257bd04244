// RegistryClient: the OCI distribution API (blobs, manifests) over HTTP(S)
// through an HttpTransport (libcurl by default; see http_transport.h). TLS by
// default (`plain_http` for local registries), Basic and Bearer-token auth (the
// registry token flow), retries with backoff on network errors and 5xx/429,
// resumable blob downloads. Credentials never appear in messages or logs.
//
// Not thread-safe: a client holds one transport (one CURL handle) and the
// Authorization in use; call it from one thread at a time (one client per
// thread for parallel transfers).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/registry/hosts.h"
#include "d4c/registry/http_transport.h"

namespace d4c::registry {

struct Credentials {
  std::string user;
  std::string password;
  bool empty() const { return user.empty() && password.empty(); }
};

// Credentials for `host` from $DOCKER_CONFIG/config.json or ~/.docker/config.json
// ("auths": {"HOST": {"auth": base64(user:password)}}; for docker.io also
// docker's own key https://index.docker.io/v1/); nullopt if none.
std::optional<Credentials> DockerConfigCredentials(const std::string& host);

struct RegistryOptions {
  std::string host;  // HOST[:PORT]: the registry's name (messages, credentials, hosts.toml)
  bool plain_http = false;  // http:// whatever `endpoint` says
  // Where requests go: scheme://HOST[:PORT][/PATH], /v2/... appended (a
  // hosts.toml server or mirror); empty: https://HOST.
  std::string endpoint;
  // TLS (the curl transport's; see CurlTransportOptions).
  std::vector<std::string> ca_files;
  std::string client_cert, client_key;
  bool skip_verify = false;
  std::string hosts_dir = kDefaultHostsDir;  // named in the advice of TLS errors
  Credentials credentials;
  int attempts = 5;                  // per request, network errors and 5xx/429
  uint64_t max_bytes_per_second = 0;  // downloads; 0 = unlimited (the curl transport's)
  uint64_t chunk_size = 8ull << 20;   // upload PATCH size
  double first_backoff_seconds = 0.5;
};

// Takes the endpoint a client that must `push` (else pull) uses from
// `config` (HostConfig::EndpointFor): its URL, CA files, first client
// certificate and skip_verify; an http:// URL sets plain_http.
void ApplyHostConfig(const HostConfig& config, bool push, RegistryOptions& options);
// The same for one endpoint (HostConfig::PullEndpoints).
void ApplyHostEndpoint(const HostEndpoint& endpoint, RegistryOptions& options);

// Called with bytes done and total while a blob moves.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct Manifest {
  std::string media_type;
  std::string digest;  // sha256:... of `body`
  std::string body;
};

struct PutManifestResult {
  std::string digest;
  std::string oci_subject;  // the OCI-Subject answer header; empty if the registry sent none
};

class RegistryClient {
 public:
  // Over libcurl.
  static absl::StatusOr<std::unique_ptr<RegistryClient>> Create(RegistryOptions options);
  // Over `transport` (tests, other transports); `max_bytes_per_second` is then
  // the transport's business.
  static absl::StatusOr<std::unique_ptr<RegistryClient>> Create(RegistryOptions options,
                                                                std::unique_ptr<HttpTransport> transport);
  ~RegistryClient();

  const RegistryOptions& options() const;

  // True if the repository has the blob (HEAD).
  absl::StatusOr<bool> HasBlob(const std::string& repo, const std::string& digest);
  // Uploads `path` (whose sha256 is `digest`) in chunks; a failed attempt
  // starts a new upload session.
  absl::Status UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                              const ProgressFn& progress = {});
  // HEAD first; uploads only if the registry lacks the blob. True if uploaded.
  absl::StatusOr<bool> UploadBlobFileIfMissing(const std::string& repo, const std::string& digest,
                                               const std::string& path, const ProgressFn& progress = {});
  absl::Status UploadBlobBytes(const std::string& repo, const std::string& digest, const std::string& bytes);

  // Downloads blob `digest` of `size` bytes to `dest`. Bytes go to
  // `dest`.partial first; a partial file from an earlier attempt or run is
  // resumed with a Range request. The sha256 is checked before `dest` is
  // renamed into place. Returns the number of bytes fetched by this call.
  // A body longer than `size` is refused (nothing past `size` is written) and
  // the partial file removed: DataLoss, as for a wrong digest.
  absl::StatusOr<uint64_t> DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                        const std::string& dest, const ProgressFn& progress = {});
  // Small blobs into memory (at most `max_bytes`), digest checked.
  absl::StatusOr<std::string> GetBlob(const std::string& repo, const std::string& digest, uint64_t max_bytes);

  // nullopt when the registry answers 404 (no such tag/digest).
  absl::StatusOr<std::optional<Manifest>> GetManifest(const std::string& repo, const std::string& reference);
  // The digest a tag points at (HEAD, no body); nullopt on 404.
  absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string& repo, const std::string& reference);
  // Every tag of the repository (paginated; empty if it does not exist).
  absl::StatusOr<std::vector<std::string>> ListTags(const std::string& repo);
  // PUT under `reference` (tag or digest); returns the manifest digest.
  absl::StatusOr<std::string> PutManifest(const std::string& repo, const std::string& reference,
                                          const std::string& media_type, const std::string& body);

  // PutManifest that also reports the OCI-Subject header (distribution spec
  // 1.1: set by registries that process a manifest's `subject`).
  absl::StatusOr<PutManifestResult> PutManifestWithSubject(const std::string& repo, const std::string& reference,
                                                           const std::string& media_type, const std::string& body);
  // GET /v2/REPO/referrers/DIGEST[?artifactType=T]: the image index of the
  // manifests whose subject is DIGEST (Link pages followed and merged into one
  // index, at most 4 MiB each); nullopt on 404: the registry has no referrers
  // API (the caller falls back to the referrers tag schema).
  absl::StatusOr<std::optional<std::string>> GetReferrers(const std::string& repo, const std::string& digest,
                                                         const std::string& artifact_type = "");

  // Bytes of response bodies received so far (blobs, manifests, tokens).
  uint64_t bytes_received() const;

 private:
  RegistryClient() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "sha256:<64 hex>" of bytes / of a file's content.
std::string Sha256Digest(const std::string& bytes);
absl::StatusOr<std::string> Sha256DigestOfFile(const std::string& path);

// Splits a WWW-Authenticate challenge ("Bearer realm=\"...\",service=\"...\"").
struct AuthChallenge {
  std::string scheme;  // lower case: "basic", "bearer"
  std::string realm, service, scope;
};
std::optional<AuthChallenge> ParseAuthChallenge(const std::string& header);

}  // namespace d4c::registry
