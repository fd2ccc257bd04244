// Push and pull as library use cases (docs/registry.md). The CLI, the
// snapshotter or a test call these; what happens to a pulled image and which
// images are held locally are the caller's, through LocalImages and ImageSink.
//
//  Push (referrers layout): publishes the runnable image a full cdimg was
//  converted from (its config and layers, tag d4c-image-…, and TAG), then
//  uploads the cdimg as a blob (skipped when the registry has it) with its
//  config blob and an artifact manifest whose `subject` is that image (tag
//  d4c-…), and lists it in the image's referrers (the registry's referrers API,
//  else the referrers tag schema, updated read-modify-write). A delta is
//  attached to the published image it leads to. Without a runnable image (a
//  full cdimg pushed without one, or a delta to an unpublished image), the
//  catalog layout: TAG names the artifact and the repository's catalog lists it.
//  Pull: resolves NAME:TAG; for an image, reads its referrers list, for a
//  catalog-layout artifact the catalog; plans the cheapest chain from the
//  images held locally, downloads every step into a download directory
//  (resumable `.partial` files, sha256 checked), checks that each file is the
//  image (and parent) the registry claims, and only then hands the files
//  over, in apply order, to the ImageSink.
//
// None of these objects is thread-safe; use one per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/registry/download_dir.h"
#include "d4c/registry/catalog.h"
#include "d4c/registry/pull_plan.h"
#include "d4c/registry/registry_client.h"

namespace d4c::registry {

// What Push and Pull need from a registry: the part of RegistryClient's API
// they use, so that a test can supply an in-memory registry. ClientRegistry
// adapts a RegistryClient. Semantics are RegistryClient's (registry_client.h);
// in particular DownloadBlob resumes `dest`.partial and checks the sha256
// before `dest` appears, and returns the bytes this call fetched.
class RegistryApi {
 public:
  virtual ~RegistryApi() = default;
  virtual std::string host() const = 0;  // HOST[:PORT], for messages
  virtual absl::StatusOr<bool> HasBlob(const std::string& repo, const std::string& digest) = 0;
  virtual absl::Status UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                                      const ProgressFn& progress) = 0;
  virtual absl::Status UploadBlobBytes(const std::string& repo, const std::string& digest,
                                       const std::string& bytes) = 0;
  virtual absl::StatusOr<uint64_t> DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                                const std::string& dest, const ProgressFn& progress) = 0;
  virtual absl::StatusOr<std::optional<Manifest>> GetManifest(const std::string& repo,
                                                              const std::string& reference) = 0;
  virtual absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string& repo,
                                                                    const std::string& reference) = 0;
  virtual absl::StatusOr<std::vector<std::string>> ListTags(const std::string& repo) = 0;
  virtual absl::StatusOr<std::string> PutManifest(const std::string& repo, const std::string& reference,
                                                  const std::string& media_type, const std::string& body) = 0;
  // PutManifest for a manifest with a `subject`: also returns the registry's
  // OCI-Subject answer header (empty: the registry did not process the
  // subject, so the client keeps the referrers tag schema). Default: none.
  virtual absl::StatusOr<PutManifestResult> PutManifestWithSubject(const std::string& repo, const std::string& reference,
                                                                   const std::string& media_type,
                                                                   const std::string& body) {
    auto d = PutManifest(repo, reference, media_type, body);
    if (!d.ok()) return d.status();
    return PutManifestResult{*d, ""};
  }
  // The referrers API (GET /v2/NAME/referrers/DIGEST?artifactType=…): the
  // image index listing them; nullopt when the registry answers 404 (it has no
  // referrers API: use the tag schema). Default: no referrers API.
  virtual absl::StatusOr<std::optional<std::string>> GetReferrers(const std::string& /*repo*/,
                                                                 const std::string& /*digest*/,
                                                                 const std::string& /*artifact_type*/) {
    return std::optional<std::string>();
  }
};

// RegistryApi over a RegistryClient (not owned; it must outlive this).
class ClientRegistry final : public RegistryApi {
 public:
  explicit ClientRegistry(RegistryClient& client) : c_(client) {}
  std::string host() const override;
  absl::StatusOr<bool> HasBlob(const std::string& repo, const std::string& digest) override;
  absl::Status UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                              const ProgressFn& progress) override;
  absl::Status UploadBlobBytes(const std::string& repo, const std::string& digest, const std::string& bytes) override;
  absl::StatusOr<uint64_t> DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                        const std::string& dest, const ProgressFn& progress) override;
  absl::StatusOr<std::optional<Manifest>> GetManifest(const std::string& repo, const std::string& reference) override;
  absl::StatusOr<std::optional<std::string>> ManifestDigest(const std::string& repo,
                                                            const std::string& reference) override;
  absl::StatusOr<std::vector<std::string>> ListTags(const std::string& repo) override;
  absl::StatusOr<std::string> PutManifest(const std::string& repo, const std::string& reference,
                                          const std::string& media_type, const std::string& body) override;
  absl::StatusOr<PutManifestResult> PutManifestWithSubject(const std::string& repo, const std::string& reference,
                                                           const std::string& media_type,
                                                           const std::string& body) override;
  absl::StatusOr<std::optional<std::string>> GetReferrers(const std::string& repo, const std::string& digest,
                                                         const std::string& artifact_type) override;

 private:
  RegistryClient& c_;
};

// ---- push -------------------------------------------------------------------

// The runnable image a full cdimg was converted from (ctr-cli opens an OCI
// layout or docker archive): what plain clients pull under NAME:TAG.
class SourceImage {
 public:
  virtual ~SourceImage() = default;
  virtual std::string Describe() const = 0;  // for messages, e.g. "oci:dir:v1"
  // The image config, byte for byte as stored (its sha256 is the config digest).
  virtual const std::string& config_json() const = 0;
  // The layers as stored (compressed), bottom first; media types of OCI or Docker.
  virtual const std::vector<Descriptor>& layers() const = 0;
  // Writes layer `i`'s stored bytes to `path` (Push checks their sha256).
  virtual absl::Status WriteLayer(size_t i, const std::string& path) const = 0;
};

struct PushOptions {
  std::string cdimg;       // the file to push (full or delta)
  std::string repository;  // NAME
  std::string tag;         // also point TAG at the image (catalog layout: at the artifact); empty = none
  // The image `cdimg` was converted from (full cdimg), or the image a delta
  // leads to (checked against the published one); null = none given.
  const SourceImage* image = nullptr;
  std::string scratch_dir;  // where layers are staged for upload; empty = the system's temp directory
  ProgressFn progress;      // while the cdimg blob uploads
};

struct PushResult {
  Artifact artifact;         // what was pushed, with its manifest digest and size
  bool blob_uploaded = false;    // false: the registry had the cdimg blob already
  bool config_uploaded = false;  // false: the registry had the config blob already
  uint64_t bytes_uploaded = 0;   // blob bytes sent (cdimg + config), manifests not counted
  bool catalog_changed = false;  // the catalog was written
  size_t catalog_entries = 0;    // artifacts the catalog lists afterwards
  size_t catalog_adopted = 0;    // tagged artifacts a concurrent push had dropped, listed again
  // Referrers layout (false: the catalog layout, the fields above).
  bool referrers_layout = false;
  Descriptor subject;             // the image manifest the cdimg is attached to
  bool image_published = false;   // this push put the image manifest (a full cdimg with its image)
  size_t layers_uploaded = 0;     // image layers the registry lacked (their bytes count in bytes_uploaded)
  bool referrers_api = false;     // the registry processed `subject` (OCI-Subject); else the tag schema
  bool referrers_changed = false; // the tag-schema index was written
  size_t referrers = 0;           // cdimgs attached to the image afterwards (tag schema; 0 = not read)
  size_t migrated = 0;            // catalog-layout cdimgs of this image attached to it by this push
};

absl::StatusOr<PushResult> Push(const PushOptions& options, RegistryApi& registry);

// The repository's catalog (tag kCatalogTag); empty if there is none yet.
absl::StatusOr<Catalog> FetchCatalog(RegistryApi& registry, const std::string& repo);

// ---- pull -------------------------------------------------------------------

// The images the caller already holds: where a chain may start.
class LocalImages {
 public:
  virtual ~LocalImages() = default;
  // "sha256:<hex>" ids of every image held (full or delta with its chain).
  virtual absl::StatusOr<std::set<std::string>> ImageIds() = 0;
};

// Takes the pulled images. Called only after every step was downloaded and
// checked, in apply order (a step's parent is held or was accepted before).
class ImageSink {
 public:
  virtual ~ImageSink() = default;
  // `path` is a complete cdimg in the download directory whose sha256, image
  // id and parent id match `image` (a catalog entry). `wanted` is true for the
  // last step, the image asked for. The sink copies (or moves) the file; Pull
  // removes what is left of it once Accept returned OK. An error stops the
  // pull; files not yet accepted stay in the download directory.
  virtual absl::Status Accept(const std::string& path, const Artifact& image, bool wanted) = 0;
  // The image asked for is held already (nothing to download).
  virtual absl::Status AcceptHeld(const std::string& image_id) = 0;
};

struct PullResult {
  std::string repository, tag;
  bool referrers_layout = false;  // planned from the image's referrers; false: the catalog layout
  std::string subject;            // referrers layout: the image manifest digest TAG names
  uint64_t plan_document_bytes = 0;  // bytes of the manifests/indexes read to plan (HEAD answers have none)
  Artifact wanted;              // the cdimg of the image the tag names (referrers layout: its smallest full cdimg
                                // if one is attached; catalog layout: the artifact the tag points at)
  size_t local_images = 0;      // ids LocalImages reported
  PullPlan plan;                // the chain chosen
  uint64_t full_image_size = 0; // smallest full image of `wanted` in the catalog, 0 if none
  uint64_t bytes_downloaded = 0;  // blob bytes fetched by this call (resumed files count only the rest)
  bool handed_over = false;     // false for a dry run
};

// Free space of a filesystem: bytes an unprivileged writer may still use
// (statvfs f_bavail * f_frsize) and the device it is (stat st_dev).
struct FsSpace {
  uint64_t free_bytes = 0;
  uint64_t device = 0;
};
// statvfs + stat of `path`, or of its nearest existing ancestor.
absl::StatusOr<FsSpace> StatFsSpace(const std::string& path);

struct PullOptions {
  std::string image;         // NAME:TAG in the registry (NAME alone when `digest` is given)
  // The image manifest digest ("sha256:<hex>") when the caller resolved it
  // already (containerd did, for the snapshotter): no tag is read, and only
  // the referrers layout is used (NotFound when no cdimg is attached to it).
  std::string digest;
  std::string download_dir;  // where `<digest hex>.cdimg[.partial]` files go (created if missing)
  DownloadDirLimits download_limits;  // what earlier pulls left there is pruned to this first
  // Before any download, the plan must fit: what is left to download in
  // download_dir's filesystem and, when store_dir is set (where the sink
  // copies the images: the snapshotter's store), every step's bytes there,
  // each with space_margin to spare (one filesystem: download + the largest
  // step, the peak of the hand-over). ResourceExhausted with the numbers
  // otherwise, before anything is fetched.
  std::string store_dir;
  uint64_t space_margin = 64ull << 20;
  std::function<absl::StatusOr<FsSpace>(const std::string& path)> fs_space = StatFsSpace;  // a seam for tests
  bool dry_run = false;      // plan only: no download, no hand-over
  // Called once the plan is known, before any download (e.g. to print it).
  std::function<void(const PullResult&)> planned;
  // Download progress of one step.
  std::function<void(const Artifact& step, uint64_t done, uint64_t total)> progress;
};

absl::StatusOr<PullResult> Pull(const PullOptions& options, RegistryApi& registry, LocalImages& local,
                                ImageSink& sink);

}  // namespace d4c::registry
