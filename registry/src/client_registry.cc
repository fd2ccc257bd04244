// ClientRegistry: RegistryApi by forwarding to a RegistryClient.
#include "d4c/registry/transfer.h"

namespace d4c::registry {

std::string ClientRegistry::host() const { return c_.options().host; }

absl::StatusOr<bool> ClientRegistry::HasBlob(const std::string& repo, const std::string& digest) {
  return c_.HasBlob(repo, digest);
}

absl::Status ClientRegistry::UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                                            const ProgressFn& progress) {
  return c_.UploadBlobFile(repo, digest, path, progress);
}

absl::Status ClientRegistry::UploadBlobBytes(const std::string& repo, const std::string& digest,
                                             const std::string& bytes) {
  return c_.UploadBlobBytes(repo, digest, bytes);
}

absl::StatusOr<uint64_t> ClientRegistry::DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                                      const std::string& dest, const ProgressFn& progress) {
  return c_.DownloadBlob(repo, digest, size, dest, progress);
}

absl::StatusOr<std::optional<Manifest>> ClientRegistry::GetManifest(const std::string& repo,
                                                                    const std::string& reference) {
  return c_.GetManifest(repo, reference);
}

absl::StatusOr<std::optional<std::string>> ClientRegistry::ManifestDigest(const std::string& repo,
                                                                          const std::string& reference) {
  return c_.ManifestDigest(repo, reference);
}

absl::StatusOr<std::vector<std::string>> ClientRegistry::ListTags(const std::string& repo) {
  return c_.ListTags(repo);
}

absl::StatusOr<std::string> ClientRegistry::PutManifest(const std::string& repo, const std::string& reference,
                                                        const std::string& media_type, const std::string& body) {
  return c_.PutManifest(repo, reference, media_type, body);
}

absl::StatusOr<PutManifestResult> ClientRegistry::PutManifestWithSubject(const std::string& repo,
                                                                         const std::string& reference,
                                                                         const std::string& media_type,
                                                                         const std::string& body) {
  return c_.PutManifestWithSubject(repo, reference, media_type, body);
}

absl::StatusOr<std::optional<std::string>> ClientRegistry::GetReferrers(const std::string& repo,
                                                                       const std::string& digest,
                                                                       const std::string& artifact_type) {
  return c_.GetReferrers(repo, digest, artifact_type);
}

}  // namespace d4c::registry
