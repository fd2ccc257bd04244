// Remote images for containerd's own pulls (CRI, kubelet): the cdimgs
// attached to an image manifest as OCI referrers (docs/registry.md), found,
// planned, downloaded and checked for the snapshotter, which imports them and
// serves the image's top layer from them (snapshotter.h).
//
// containerd's unpacker passes every layer's Prepare the labels of
// pkg/snapshotters/annotations.go (CRI sets them, as does any client that
// pulls with snapshot annotations):
//   containerd.io/snapshot/cri.image-ref        the image reference pulled
//   containerd.io/snapshot/cri.manifest-digest  its manifest digest
//   containerd.io/snapshot/cri.layer-digest     this layer's blob digest
//   containerd.io/snapshot/cri.image-layers     this layer's digest and those
//                                               ABOVE it, comma separated
// so the top layer is the one whose image-layers is its own digest alone (a
// list cut at containerd's label size limit always has more than one).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/registry_client.h"
#include "d4c/registry/transfer.h"
#include "d4c/snap/metastore.h"

namespace d4c::snap {

inline constexpr const char* kCriImageRefLabel = "containerd.io/snapshot/cri.image-ref";
inline constexpr const char* kCriManifestDigestLabel = "containerd.io/snapshot/cri.manifest-digest";
inline constexpr const char* kCriLayerDigestLabel = "containerd.io/snapshot/cri.layer-digest";
inline constexpr const char* kCriImageLayersLabel = "containerd.io/snapshot/cri.image-layers";

// What a CRI-labelled Prepare of an image's top layer asks for.
struct CriTarget {
  std::string image_ref;        // as containerd passed it
  registry::ImageReference ref; // normalized (registry::ParseImageReference)
  std::string manifest_digest;  // sha256:...
  std::string layer_digest;     // sha256:...
};

// The target if `labels` are those of the top layer of an image (above);
// nullopt for lower layers and Prepares without CRI labels. InvalidArgument
// if the labels are there but malformed (image-ref, digests).
absl::StatusOr<std::optional<CriTarget>> CriTopLayer(const Labels& labels);

// A chain downloaded and checked, ready to import in order.
struct FetchedChain {
  std::string image_id;  // "sha256:<hex>": the image the manifest's cdimgs lead to
  std::string from;      // held image the chain starts at; "" = a full cdimg
  // (path, image id hex) in apply order; the files are in `ready_dir`, which
  // the caller removes once imported (or not).
  std::vector<std::pair<std::string, std::string>> files;
  std::string ready_dir;
  uint64_t bytes_downloaded = 0;  // cdimg bytes fetched by this call
  uint64_t document_bytes = 0;    // referrers documents read to plan
};

// Thread-safe implementations only: the snapshotter calls Fetch from several
// gRPC threads at once, holding none of its locks.
class RemoteImages {
 public:
  virtual ~RemoteImages() = default;
  // The cheapest chain to the image of `t` from `held` ("sha256:<hex>" ids),
  // downloaded into `download_dir` (resumable, pruned) and checked. NotFound:
  // no cdimg is attached to the manifest; anything else: the registry or a
  // file failed.
  virtual absl::StatusOr<FetchedChain> Fetch(const CriTarget& t, const std::set<std::string>& held,
                                             const std::string& download_dir) = 0;
};

// Connects to the registry of an image reference (its domain).
using RegistryFactory =
    std::function<absl::StatusOr<std::shared_ptr<registry::RegistryApi>>(const registry::ImageReference&)>;

// RemoteImages over registry::Pull (by manifest digest, referrers layout).
std::shared_ptr<RemoteImages> NewRegistryRemote(RegistryFactory factory);

// Registries configured as containerd's are: `hosts_dir`/HOST/hosts.toml (or
// docker's certs.d files; registry/hosts.h), its pull mirrors tried in order
// then the server (registry/failover.h), credentials from docker's
// config.json (DockerConfigCredentials), unless `first` (when set) has some for
// the reference (CriKeychain: the auth of a CRI PullImage, cri_keychain.h).
// containerd does not pass CRI's per-pull auth to snapshotters, so without
// the CRI image proxy a registry that needs it and has no config.json entry
// makes the snapshotter fall back to containerd's pull.
using CredentialLookup = std::function<std::optional<registry::Credentials>(const registry::ImageReference&)>;
RegistryFactory HostsDirRegistries(std::string hosts_dir, int attempts = 2, CredentialLookup first = nullptr);

}  // namespace d4c::snap
