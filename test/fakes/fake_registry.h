// FakeRegistry: an in-memory OCI distribution registry behind RegistryApi
// (one repository), for tests of Push and Pull. DownloadBlob keeps
// RegistryClient's contract (`dest`.partial resumed, sha256 checked before
// `dest` appears). With `referrers_api` it is a distribution-spec 1.1
// registry: PutManifestWithSubject answers OCI-Subject and GetReferrers lists
// the manifests whose subject is a digest; without, both behave like a
// registry that lacks the API (docker-registry 2.8): no OCI-Subject, 404.
// It counts the bytes of every manifest and referrers body it serves.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "d4c/base/strcat.h"
#include "d4c/registry/transfer.h"
#include "nlohmann/json.hpp"

namespace d4c::registry_test {

class FakeRegistry : public registry::RegistryApi {
 public:
  using Manifest = registry::Manifest;
  std::map<std::string, std::string> blobs;      // digest -> bytes
  std::map<std::string, Manifest> manifests;     // tag or digest -> manifest
  std::map<std::string, uint64_t> cut_after;     // digest -> serve only this many bytes, then fail
  std::vector<std::string> downloads;            // digests asked for
  std::vector<std::string> uploads;              // digests uploaded
  std::vector<std::string> document_gets;        // references of GetManifest/GetReferrers calls, in order
  uint64_t served = 0;                           // blob bytes sent by DownloadBlob
  uint64_t document_bytes = 0;                   // manifest and referrers bodies sent
  bool referrers_api = false;

  std::string host() const override { return "fake.test:5000"; }
  absl::StatusOr<bool> HasBlob(const std::string&, const std::string& digest) override {
    return blobs.count(digest) > 0;
  }
  absl::Status UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                              const registry::ProgressFn& progress) override {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (progress) progress(bytes.size(), bytes.size());
    return UploadBlobBytes(repo, digest, bytes);
  }
  absl::Status UploadBlobBytes(const std::string&, const std::string& digest, const std::string& bytes) override {
    if (registry::Sha256Digest(bytes) != digest) return absl::InvalidArgumentError("digest mismatch on upload");
    blobs[digest] = bytes;
    uploads.push_back(digest);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> DownloadBlob(const std::string&, const std::string& digest, uint64_t size,
                                        const std::string& dest, const registry::ProgressFn& progress) override {
    namespace fs = std::filesystem;
    downloads.push_back(digest);
    if (auto have = registry::Sha256DigestOfFile(dest); have.ok() && *have == digest) return uint64_t{0};
    auto it = blobs.find(digest);
    if (it == blobs.end()) return absl::NotFoundError("no blob " + digest);
    const std::string& b = it->second;
    std::string partial = dest + ".partial";
    uint64_t have = fs::exists(partial) ? fs::file_size(partial) : 0;
    if (have > b.size()) return absl::InternalError("partial longer than the blob");
    uint64_t end = b.size();
    if (auto cut = cut_after.find(digest); cut != cut_after.end()) end = std::min<uint64_t>(end, cut->second);
    {
      std::ofstream f(partial, std::ios::binary | std::ios::app);
      f.write(b.data() + have, static_cast<std::streamsize>(end > have ? end - have : 0));
    }
    uint64_t fetched = end > have ? end - have : 0;
    served += fetched;
    if (progress) progress(end, size);
    if (end < b.size()) return absl::UnavailableError(StrCat("download of blob ", digest, ": connection reset"));
    auto got = registry::Sha256DigestOfFile(partial);
    if (!got.ok()) return got.status();
    if (*got != digest) {
      fs::remove(partial);
      return absl::DataLossError(StrCat("download of blob ", digest, ": the bytes received have ", *got));
    }
    fs::rename(partial, dest);
    return fetched;
  }
  absl::StatusOr<std::optional<Manifest>> GetManifest(const std::string&, const std::string& ref) override {
    document_gets.push_back(ref);
    auto it = manifests.find(ref);
    if (it == manifests.end()) return std::optional<Manifest>();
    document_bytes += it->second.body.size();
    return std::optional<Manifest>(it->second);
  }
  absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string&, const std::string& ref) override {
    auto it = manifests.find(ref);
    if (it == manifests.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second.digest);
  }
  absl::StatusOr<std::vector<std::string>> ListTags(const std::string&) override {
    std::vector<std::string> tags;
    for (const auto& [ref, m] : manifests)
      if (ref.rfind("sha256:", 0) != 0) tags.push_back(ref);
    return tags;
  }
  absl::StatusOr<std::string> PutManifest(const std::string&, const std::string& ref, const std::string& media_type,
                                          const std::string& body) override {
    Manifest m{media_type, registry::Sha256Digest(body), body};
    manifests[ref] = m;
    manifests[m.digest] = m;
    return m.digest;
  }
  absl::StatusOr<registry::PutManifestResult> PutManifestWithSubject(const std::string& repo, const std::string& ref,
                                                                     const std::string& media_type,
                                                                     const std::string& body) override {
    auto d = PutManifest(repo, ref, media_type, body);
    if (!d.ok()) return d.status();
    std::string subject;
    if (referrers_api) {
      auto j = nlohmann::json::parse(body, nullptr, false);
      if (j.is_object() && j.contains("subject")) subject = j["subject"].value("digest", "");
    }
    return registry::PutManifestResult{*d, subject};
  }
  // The referrers API as a registry computes it: every stored manifest whose
  // subject is `digest`, with artifactType and annotations copied.
  absl::StatusOr<std::optional<std::string>> GetReferrers(const std::string&, const std::string& digest,
                                                         const std::string& artifact_type) override {
    document_gets.push_back("referrers/" + digest);
    if (!referrers_api) return std::optional<std::string>();
    nlohmann::json ms = nlohmann::json::array();
    for (const auto& [ref, m] : manifests) {
      if (ref != m.digest) continue;  // each manifest once, by digest
      auto j = nlohmann::json::parse(m.body, nullptr, false);
      if (!j.is_object() || !j.contains("subject") || j["subject"].value("digest", "") != digest) continue;
      std::string type = j.value("artifactType", "");
      if (!artifact_type.empty() && type != artifact_type) continue;
      nlohmann::json d = {{"mediaType", m.media_type}, {"digest", m.digest}, {"size", m.body.size()},
                          {"artifactType", type}};
      if (j.contains("annotations")) d["annotations"] = j["annotations"];
      ms.push_back(d);
    }
    std::string body =
        nlohmann::json{{"schemaVersion", 2}, {"mediaType", "application/vnd.oci.image.index.v1+json"}, {"manifests", ms}}
            .dump();
    document_bytes += body.size();
    return std::optional<std::string>(body);
  }
};

// A runnable image in memory: a config and layers of given bytes.
class MemorySourceImage : public registry::SourceImage {
 public:
  MemorySourceImage(std::string config, std::vector<std::string> layer_bytes) : config_(std::move(config)) {
    for (auto& b : layer_bytes) {
      layers_.push_back({"application/vnd.oci.image.layer.v1.tar+gzip", registry::Sha256Digest(b), b.size()});
      bytes_.push_back(std::move(b));
    }
  }
  std::string Describe() const override { return "oci:memory"; }
  const std::string& config_json() const override { return config_; }
  const std::vector<registry::Descriptor>& layers() const override { return layers_; }
  absl::Status WriteLayer(size_t i, const std::string& path) const override {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << bytes_.at(i);
    return f ? absl::OkStatus() : absl::InternalError("cannot write " + path);
  }
  const std::string& layer_bytes(size_t i) const { return bytes_.at(i); }

 private:
  std::string config_;
  std::vector<registry::Descriptor> layers_;
  std::vector<std::string> bytes_;
};

}  // namespace d4c::registry_test
