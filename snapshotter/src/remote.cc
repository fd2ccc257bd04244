#include "d4c/snap/remote.h"

#include <stdlib.h>

#include <filesystem>

#include "absl/strings/str_split.h"
#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"
#include "d4c/registry/failover.h"
#include "d4c/registry/hosts.h"
#include "d4c/registry/registry_client.h"
#include "d4c/snap/image_store.h"

namespace d4c::snap {
namespace fs = std::filesystem;

absl::StatusOr<std::optional<CriTarget>> CriTopLayer(const Labels& labels) {
  auto get = [&](const char* k) -> std::string {
    auto it = labels.find(k);
    return it == labels.end() ? "" : it->second;
  };
  std::string ref = get(kCriImageRefLabel), manifest = get(kCriManifestDigestLabel);
  std::string layer = get(kCriLayerDigestLabel), layers = get(kCriImageLayersLabel);
  if (ref.empty() || manifest.empty() || layer.empty() || layers.empty() || get(kSnapshotRefLabel).empty())
    return std::optional<CriTarget>();  // not containerd's unpacker with annotations
  if (layers != layer) return std::optional<CriTarget>();  // a lower layer: more digests above it
  if (!IsDigestString(manifest) || !IsDigestString(layer))
    return absl::InvalidArgumentError(StrCat("label ", kCriManifestDigestLabel, "='", manifest, "' or ",
                                             kCriLayerDigestLabel, "='", layer, "' is not a sha256 digest"));
  auto parsed = registry::ParseImageReference(ref);
  if (!parsed.ok())
    return absl::InvalidArgumentError(StrCat("label ", kCriImageRefLabel, ": ", Msg(parsed.status().message())));
  return std::optional<CriTarget>(CriTarget{ref, *parsed, manifest, layer});
}

namespace {

class HeldImages final : public registry::LocalImages {
 public:
  explicit HeldImages(const std::set<std::string>& ids) : ids_(ids) {}
  absl::StatusOr<std::set<std::string>> ImageIds() override { return ids_; }

 private:
  const std::set<std::string>& ids_;
};

// Moves each accepted file into the chain's own directory, so that the
// download directory's pruning never touches a file not yet imported.
class ReadySink final : public registry::ImageSink {
 public:
  explicit ReadySink(FetchedChain& out) : out_(out) {}
  absl::Status Accept(const std::string& path, const registry::Artifact& image, bool) override {
    std::string hex = image.image_id.substr(image.image_id.find(':') + 1);
    std::string dest = StrCat(out_.ready_dir, "/", hex, ".cdimg");
    std::error_code ec;
    fs::rename(path, dest, ec);
    if (ec) return absl::InternalError(StrCat("move ", path, " to ", dest, ": ", ec.message()));
    out_.files.emplace_back(dest, hex);
    return absl::OkStatus();
  }
  absl::Status AcceptHeld(const std::string&) override { return absl::OkStatus(); }

 private:
  FetchedChain& out_;
};

class RegistryRemote final : public RemoteImages {
 public:
  explicit RegistryRemote(RegistryFactory f) : factory_(std::move(f)) {}
  absl::StatusOr<FetchedChain> Fetch(const CriTarget& t, const std::set<std::string>& held,
                                     const std::string& download_dir) override {
    auto reg = factory_(t.ref);
    if (!reg.ok()) return reg.status();
    FetchedChain out;
    std::error_code ec;
    fs::create_directories(download_dir, ec);
    std::string tmpl = download_dir + "/ready-XXXXXX";
    if (ec || !mkdtemp(tmpl.data()))
      return absl::InternalError(StrCat("create a directory in ", download_dir, ": ", ec ? ec.message() : "mkdtemp failed"));
    out.ready_dir = tmpl;
    registry::PullOptions o;
    o.image = t.ref.path;
    o.digest = t.manifest_digest;
    o.download_dir = download_dir;
    HeldImages local(held);
    ReadySink sink(out);
    auto r = registry::Pull(o, **reg, local, sink);
    if (!r.ok()) {
      fs::remove_all(out.ready_dir, ec);
      return r.status();
    }
    out.image_id = r->wanted.image_id;
    out.from = r->plan.from;
    out.bytes_downloaded = r->bytes_downloaded;
    out.document_bytes = r->plan_document_bytes;
    return out;
  }

 private:
  RegistryFactory factory_;
};

}  // namespace

std::shared_ptr<RemoteImages> NewRegistryRemote(RegistryFactory factory) {
  return std::make_shared<RegistryRemote>(std::move(factory));
}

RegistryFactory HostsDirRegistries(std::string hosts_dir, int attempts, CredentialLookup first) {
  return [hosts_dir = std::move(hosts_dir), attempts, first = std::move(first)](const registry::ImageReference& ref)
             -> absl::StatusOr<std::shared_ptr<registry::RegistryApi>> {
    auto config = registry::LoadHostConfig(ref.domain, hosts_dir);
    if (!config.ok()) return config.status();
    std::optional<registry::Credentials> credentials;
    if (first) credentials = first(ref);
    if (!credentials) credentials = registry::DockerConfigCredentials(ref.domain);
    // One client per endpoint (each has its own TLS settings), tried in
    // order when one does not answer (registry/failover.h).
    registry::RegistryOptions o;
    o.host = ref.domain;
    o.hosts_dir = hosts_dir;
    o.attempts = attempts;
    if (credentials) o.credentials = *credentials;
    return registry::OpenPullRegistry(*config, o);
  };
}

}  // namespace d4c::snap
