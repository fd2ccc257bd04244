// load: hand a cdimg to containerd + the di3fs snapshotter.
//  0. checks that --snapshotter-root is the root of the snapshotter containerd
//     uses as plugin o.snapshotter (VerifySnapshotterRoot, below), so that the
//     image cannot land in a store that snapshotter never reads;
//  1. checks the cdimg and its chain (parents must already be in the store);
//  2. copies it into the snapshotter's store (layout::StorePath(ROOT, id));
//  3. creates the committed snapshot named by the chainID through containerd
//     (Prepare with labels containerd.io/snapshot/di3fs.image-id and
//     containerd.io/snapshot.ref: the remote-snapshot protocol);
//  4. writes config (rootfs.diff_ids = [sha256:<image id>]), a placeholder
//     layer blob (media type keys::kLoadedLayerType) and an OCI manifest into
//     containerd's content store with GC labels, and creates/updates the
//     image record (label org.d4c.image.id).
// Everything happens under a temporary lease; loading twice is harmless. A
// load that fails after step 2 undoes what it did: the snapshot it created is
// removed and the store file it wrote is deleted (unless a snapshot of that
// image exists in containerd by then: another load of the same image).
//
// The root check (docs/operations.md, "How an image reaches the store"): the
// snapshotter writes ROOT/snapshotter.json (layout.h, RootMarker) at start.
// LoadImage sends containerd a Prepare with label
// containerd.io/snapshot/di3fs.root-probe; containerd forwards it to the
// snapshotter, which creates nothing and fails with FailedPrecondition naming
// its root and root id. The load goes on only if that root id is the one in
// <snapshotter_root>/snapshotter.json.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "d4c/metadata_keys.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/snap/layout.h"

namespace d4c::snap {

inline constexpr const char* kCdimgLayerMediaType = keys::kLoadedLayerType;

struct LoadOptions {
  std::string image;  // NAME:TAG as containerd stores it
  std::string cdimg;
  std::string address = "/run/containerd/containerd.sock";
  std::string ns = "default";
  std::string snapshotter_root = "/var/lib/di3fs";
  std::string snapshotter = "di3fs";  // the proxy plugin's name in containerd's config
};

struct LoadResult {
  std::string image_id;  // sha256:...
  std::string chain_id;  // == diffID for our single-layer images
  std::string manifest_digest;
  bool stored = false;            // the cdimg was copied into the store
  bool snapshot_created = false;  // the snapshot did not exist before
  size_t chain_depth = 0;
};

// Connects to containerd at o.address (namespace o.ns) and loads.
absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o);
// The same over an open connection (o.address and o.ns are not used).
absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o, ContainerdApi& containerd);

// Step 0 alone: FailedPrecondition (naming --snapshotter-root and the root the
// snapshotter really has) unless `root` is the root of the snapshotter that
// containerd uses as plugin `snapshotter`. Call it before writing anything
// into the store or ROOT/downloads. Returns the root's marker.
absl::StatusOr<RootMarker> VerifySnapshotterRoot(ContainerdApi& containerd, const std::string& snapshotter,
                                                 const std::string& root);
// Connects to containerd as LoadImage does, then VerifySnapshotterRoot.
absl::StatusOr<RootMarker> VerifySnapshotterRoot(const LoadOptions& o);

}  // namespace d4c::snap
