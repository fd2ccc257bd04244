// Names d4c writes into other systems' metadata: media types, OCI annotation
// keys, containerd image labels and containerd snapshot labels. One place, so
// that the writer (registry push, ctr-cli load) and every reader agree.
//
// One key namespace for d4c's own keys: "org.d4c." (reverse DNS, as OCI's
// "org.opencontainers."). It is what registries already hold (pushed
// artifacts and catalogs), so it stays. The only other spelling ever written,
// "io.d4c.cdimg.image-id" (image labels and layer annotations written by
// `ctr-cli load` before this header), is still understood by ImageIdOf().
//
// containerd's snapshot labels are different: containerd passes only labels
// starting with "containerd.io/snapshot/" to a proxy snapshotter, so the
// snapshotter's labels live under kSnapshotLabelPrefix.
#pragma once

#include <map>
#include <string>

namespace d4c::keys {

// ---- media types ---------------------------------------------------------
// A cdimg file as an OCI artifact and its layer blob (registry.md).
inline constexpr const char* kCdimgArtifactType = "application/vnd.d4c.cdimg.v1";
inline constexpr const char* kCdimgLayerType = "application/vnd.d4c.cdimg.v1";
// The small JSON config blob of a pushed cdimg artifact.
inline constexpr const char* kCdimgConfigType = "application/vnd.d4c.cdimg.config.v1+json";
// The repository catalog (an OCI image index).
inline constexpr const char* kCatalogArtifactType = "application/vnd.d4c.catalog.v1";
// The placeholder layer `ctr-cli load` puts into containerd's content store: a
// small JSON naming the image, not the cdimg bytes (operations.md).
inline constexpr const char* kLoadedLayerType = "application/vnd.d4c.cdimg.layer.v1+json";
inline constexpr const char* kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kOciIndexType = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kOciConfigType = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kDockerManifestType = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kDockerManifestListType = "application/vnd.docker.distribution.manifest.list.v2+json";

// ---- d4c annotation keys (OCI manifests, registry catalog) and image labels
inline constexpr const char* kImageId = "org.d4c.image.id";        // sha256:<image id>
inline constexpr const char* kParentId = "org.d4c.parent.id";      // sha256:<parent image id> (deltas)
inline constexpr const char* kKind = "org.d4c.kind";               // "full" | "delta"
inline constexpr const char* kCdimgSize = "org.d4c.cdimg.size";    // bytes of the cdimg file
inline constexpr const char* kCdimgDigest = "org.d4c.cdimg.digest";  // sha256 of the cdimg file
// Written by `ctr-cli load` before the namespace was unified; read, never written.
inline constexpr const char* kLegacyImageId = "io.d4c.cdimg.image-id";

// The image id named by annotations or labels: kImageId, else the legacy key;
// "" when neither is there.
inline std::string ImageIdOf(const std::map<std::string, std::string>& kv) {
  if (auto it = kv.find(kImageId); it != kv.end()) return it->second;
  if (auto it = kv.find(kLegacyImageId); it != kv.end()) return it->second;
  return "";
}

// ---- containerd labels ---------------------------------------------------
// containerd's remote-snapshot target: the committed snapshot name wanted.
inline constexpr const char* kSnapshotRefLabel = "containerd.io/snapshot.ref";
// Prefix containerd passes on to proxy snapshotters.
inline constexpr const char* kSnapshotLabelPrefix = "containerd.io/snapshot/";
// The image a di3fs image snapshot serves (value "sha256:<hex>").
inline constexpr const char* kSnapshotImageIdLabel = "containerd.io/snapshot/di3fs.image-id";
// With kSnapshotImageIdLabel: the absolute path of a cdimg file holding that
// image, for the snapshotter to check and copy into its store first (the only
// way an image enters the store: load.h). Ignored if the image is there already.
inline constexpr const char* kSnapshotImportLabel = "containerd.io/snapshot/di3fs.import";
// Asks the di3fs snapshotter which root it runs with (load.h); any value.
inline constexpr const char* kSnapshotRootProbeLabel = "containerd.io/snapshot/di3fs.root-probe";
// containerd's garbage collection references and content labels.
inline constexpr const char* kGcRefSnapshotPrefix = "containerd.io/gc.ref.snapshot.";  // + snapshotter name
inline constexpr const char* kGcRefContentConfig = "containerd.io/gc.ref.content.config";
inline constexpr const char* kGcRefContentLayerPrefix = "containerd.io/gc.ref.content.l.";  // + index
inline constexpr const char* kUncompressedLabel = "containerd.io/uncompressed";
inline constexpr const char* kGcExpireLabel = "containerd.io/gc.expire";  // on leases (RFC 3339 time)
// On the lease of a hand-over to the snapshotter (load.h): the process that
// holds it, "<boot id>/<pid>/<start time in clock ticks>", so that the next
// hand-over can end the leases of processes that were killed.
inline constexpr const char* kLeaseOwnerLabel = "org.d4c.lease.owner";

}  // namespace d4c::keys
