// How cdimgs live in an OCI registry (docs/registry.md):
//  - each pushed cdimg is an OCI artifact manifest (artifactType kCdimgArtifactType)
//    whose one layer is the cdimg file and whose annotations name the image id,
//    the parent id (deltas) and the kind; it is tagged ArtifactTag(a) so that
//    registry garbage collection keeps it even with --delete-untagged;
//  - one OCI image index per repository, tagged kCatalogTag, lists every such
//    manifest with the same annotations, so a client plans its download from
//    one small document (the catalog layout, kept for repositories pushed
//    without a runnable image);
//  - the referrers layout: NAME:TAG is a plain OCI image (any client runs it)
//    and each cdimg leading to it is an artifact manifest whose `subject` is
//    that image's manifest; a client reads the image's referrers list (the
//    OCI 1.1 referrers API, or the index tagged ReferrersTag(digest) where the
//    registry lacks it) and plans from that one small document.
// Parsers here read registry answers: untrusted bytes, bounded and checked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/base/limits.h"
#include "d4c/metadata_keys.h"

namespace d4c::registry {

// Media types and annotation keys: d4c/metadata_keys.h (one place for all of d4c).
inline constexpr const char* kCdimgArtifactType = keys::kCdimgArtifactType;
inline constexpr const char* kCdimgLayerType = keys::kCdimgLayerType;
inline constexpr const char* kCdimgConfigType = keys::kCdimgConfigType;
inline constexpr const char* kCatalogArtifactType = keys::kCatalogArtifactType;
inline constexpr const char* kOciManifestType = keys::kOciManifestType;
inline constexpr const char* kOciIndexType = keys::kOciIndexType;
inline constexpr const char* kOciConfigType = keys::kOciConfigType;
inline constexpr const char* kCatalogTag = "d4c-catalog";
inline constexpr const char* kAnnotImageId = keys::kImageId;
inline constexpr const char* kAnnotParentId = keys::kParentId;
inline constexpr const char* kAnnotKind = keys::kKind;
inline constexpr const char* kAnnotSize = keys::kCdimgSize;
inline constexpr const char* kAnnotBlob = keys::kCdimgDigest;
using d4c::kMaxManifestBytes;  // d4c/base/limits.h

// One pushed cdimg.
struct Artifact {
  std::string image_id;   // sha256:...
  std::string parent_id;  // sha256:... for a delta, empty for a full image
  uint64_t size = 0;      // bytes of the cdimg file (= the layer blob)
  std::string blob_digest;
  std::string manifest_digest;
  uint64_t manifest_size = 0;
  bool is_delta() const { return !parent_id.empty(); }
  bool operator==(const Artifact&) const = default;
};

// "d4c-<32 hex of id>" or "d4c-<32 hex of id>-from-<32 hex of parent>".
std::string ArtifactTag(const Artifact& a);

// The small config blob of an artifact manifest and the manifest itself.
std::string ArtifactConfig(const Artifact& a);
struct Descriptor {
  std::string media_type;
  std::string digest;
  uint64_t size = 0;
};
// With `subject` (the image manifest the cdimg leads to) for the referrers layout.
std::string ArtifactManifest(const Artifact& a, const std::string& config_digest, uint64_t config_size,
                             const Descriptor* subject = nullptr);
// Reads an artifact manifest (its digest and size are given by the caller).
absl::StatusOr<Artifact> ParseArtifactManifest(std::string_view body, const std::string& digest);

struct Catalog {
  std::vector<Artifact> artifacts;
  // Adds or replaces (same manifest digest); false if it was there already.
  bool Add(const Artifact& a);
};

std::string SerializeCatalog(const Catalog& c);
absl::StatusOr<Catalog> ParseCatalog(std::string_view body);

// Tags from a `GET /v2/<repo>/tags/list` answer ({"name": ..., "tags": [...]}).
absl::StatusOr<std::vector<std::string>> ParseTagList(std::string_view body);
// The next page of a tag listing from its Link header
// (`</v2/NAME/tags/list?n=..&last=..>; rel="next"`). Only a path on the same
// registry is returned: credentials are never sent elsewhere.
std::optional<std::string> NextPageFromLink(std::string_view link);
// Artifact tags (ArtifactTag's form) among `tags` whose artifact `c` does not
// list: pushed, but dropped from the catalog by a concurrent writer.
std::vector<std::string> UncataloguedArtifactTags(const Catalog& c, const std::vector<std::string>& tags);

// ---- referrers layout ---------------------------------------------------------

// "d4c-image-<32 hex of id>": the runnable image a full cdimg was pushed with,
// found by image id (a delta is attached to the image it leads to).
std::string ImageTag(const std::string& image_id);
// The referrers tag schema of the distribution spec: "sha256-<64 hex>".
std::string ReferrersTag(const std::string& digest);

// A plain OCI image manifest: config (kOciConfigType) and layers in order.
std::string ImageManifest(const Descriptor& config, const std::vector<Descriptor>& layers);
// The config digest of an image manifest (OCI or Docker schema 2).
absl::StatusOr<std::string> ManifestConfigDigest(std::string_view body);
// True if `body` is a d4c cdimg artifact manifest (the catalog layout's tag target).
bool IsCdimgArtifactManifest(std::string_view body);

// The cdimgs in a referrers list (the referrers API's answer or the index of
// the tag schema): descriptors of other artifact types are skipped, ours must
// carry the annotations of ArtifactManifest. InvalidArgument if not an index.
absl::StatusOr<Catalog> ParseReferrers(std::string_view body);
// `index` (empty: none yet) with a descriptor of artifact `a` appended, as the
// spec's tag-schema update says: artifactType and the manifest's annotations
// copied, other descriptors kept, no duplicate (nullopt: already listed).
absl::StatusOr<std::optional<std::string>> AddToReferrersIndex(std::string_view index, const Artifact& a);

}  // namespace d4c::registry
