// Endpoints of one registry tried in order (d4c/registry/failover.h).
#include "d4c/registry/failover.h"

#include <utility>

#include "d4c/base/strcat.h"

namespace d4c::registry {

bool TryNextEndpoint(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsResourceExhausted(s) || absl::IsDeadlineExceeded(s);
}

namespace {

class FailoverRegistry final : public RegistryApi {
 public:
  explicit FailoverRegistry(std::vector<std::shared_ptr<RegistryApi>> e) : e_(std::move(e)) {}

  std::string host() const override { return e_.front()->host(); }

  absl::StatusOr<bool> HasBlob(const std::string& repo, const std::string& digest) override {
    return e_.front()->HasBlob(repo, digest);  // asked before an upload: the push endpoint
  }
  absl::Status UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                              const ProgressFn& progress) override {
    return e_.front()->UploadBlobFile(repo, digest, path, progress);
  }
  absl::Status UploadBlobBytes(const std::string& repo, const std::string& digest, const std::string& bytes) override {
    return e_.front()->UploadBlobBytes(repo, digest, bytes);
  }
  absl::StatusOr<uint64_t> DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                        const std::string& dest, const ProgressFn& progress) override {
    return Each<uint64_t>([&](RegistryApi& r) { return r.DownloadBlob(repo, digest, size, dest, progress); });
  }
  absl::StatusOr<std::optional<Manifest>> GetManifest(const std::string& repo, const std::string& reference) override {
    return EachFound<Manifest>([&](RegistryApi& r) { return r.GetManifest(repo, reference); });
  }
  absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string& repo,
                                                            const std::string& reference) override {
    return EachFound<std::string>([&](RegistryApi& r) { return r.ManifestDigest(repo, reference); });
  }
  absl::StatusOr<std::vector<std::string>> ListTags(const std::string& repo) override {
    return Each<std::vector<std::string>>([&](RegistryApi& r) { return r.ListTags(repo); });
  }
  absl::StatusOr<std::string> PutManifest(const std::string& repo, const std::string& reference,
                                          const std::string& media_type, const std::string& body) override {
    return e_.front()->PutManifest(repo, reference, media_type, body);
  }
  absl::StatusOr<PutManifestResult> PutManifestWithSubject(const std::string& repo, const std::string& reference,
                                                           const std::string& media_type,
                                                           const std::string& body) override {
    return e_.front()->PutManifestWithSubject(repo, reference, media_type, body);
  }
  absl::StatusOr<std::optional<std::string>> GetReferrers(const std::string& repo, const std::string& digest,
                                                         const std::string& artifact_type) override {
    return Each<std::optional<std::string>>(
        [&](RegistryApi& r) { return r.GetReferrers(repo, digest, artifact_type); });
  }

 private:
  // A failure, naming the failures of the endpoints tried before.
  template <typename T>
  static absl::StatusOr<T> Named(absl::StatusOr<T> r, const std::string& tried) {
    if (r.ok() || tried.empty()) return r;
    return absl::Status(r.status().code(), StrCat(Msg(r.status().message()), " (tried before: ", tried, ")"));
  }
  static void Note(std::string& tried, const absl::Status& s) { tried += StrCat(tried.empty() ? "" : "; ", Msg(s.message())); }

  // The first answer that is not a failure worth the next endpoint.
  template <typename T, typename F>
  absl::StatusOr<T> Each(F&& call) {
    std::string tried;
    for (size_t i = 0;; ++i) {
      absl::StatusOr<T> r = call(*e_[i]);
      if (r.ok() || !TryNextEndpoint(r.status()) || i + 1 == e_.size()) return Named(std::move(r), tried);
      Note(tried, r.status());
    }
  }
  // As Each, and a nullopt answer (404) also tries the next endpoint; it is
  // the answer when no endpoint has the manifest and none answered otherwise.
  template <typename T, typename F>
  absl::StatusOr<std::optional<T>> EachFound(F&& call) {
    std::string tried;
    bool not_found = false;
    for (size_t i = 0;; ++i) {
      absl::StatusOr<std::optional<T>> r = call(*e_[i]);
      if (r.ok() && r->has_value()) return r;
      if (!r.ok() && !TryNextEndpoint(r.status())) return Named(std::move(r), tried);
      if (r.ok()) not_found = true;
      if (i + 1 == e_.size()) {
        if (not_found) return std::optional<T>();
        return Named(std::move(r), tried);
      }
      if (!r.ok()) Note(tried, r.status());
    }
  }

  const std::vector<std::shared_ptr<RegistryApi>> e_;
};

}  // namespace

std::unique_ptr<RegistryApi> NewFailoverRegistry(std::vector<std::shared_ptr<RegistryApi>> endpoints) {
  return std::make_unique<FailoverRegistry>(std::move(endpoints));
}

namespace {
// A ClientRegistry with the client it talks through.
struct OwnedClientRegistry {
  std::unique_ptr<RegistryClient> client;
  std::unique_ptr<ClientRegistry> api;
};
}  // namespace

absl::StatusOr<std::shared_ptr<RegistryApi>> OpenPullRegistry(const HostConfig& config, const RegistryOptions& base) {
  std::vector<std::shared_ptr<RegistryApi>> endpoints;
  for (const HostEndpoint* e : config.PullEndpoints()) {
    RegistryOptions o = base;
    ApplyHostEndpoint(*e, o);
    auto client = RegistryClient::Create(std::move(o));
    if (!client.ok()) return client.status();
    auto owned = std::make_shared<OwnedClientRegistry>();
    owned->client = std::move(*client);
    owned->api = std::make_unique<ClientRegistry>(*owned->client);
    // Aliasing: the RegistryApi lives as long as the pair that owns it.
    endpoints.emplace_back(owned, owned->api.get());
  }
  if (endpoints.empty()) return absl::InvalidArgumentError("no endpoint to pull from in the registry configuration");
  if (endpoints.size() == 1) return endpoints.front();
  return std::shared_ptr<RegistryApi>(NewFailoverRegistry(std::move(endpoints)));
}

}  // namespace d4c::registry
