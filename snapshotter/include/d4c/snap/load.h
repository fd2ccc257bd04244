// load: hand a cdimg to containerd + the di3fs snapshotter.
//  1. checks the cdimg and its chain (parents must already be in the store);
//  2. copies it into the snapshotter's store (ROOT/store/<id>.cdimg);
//  3. creates the committed snapshot named by the chainID through containerd
//     (Prepare with labels containerd.io/snapshot/di3fs.image-id and
//     containerd.io/snapshot.ref: the remote-snapshot protocol);
//  4. writes config (rootfs.diff_ids = [sha256:<image id>]), a placeholder
//     layer blob (media type kCdimgLayerMediaType) and an OCI manifest into
//     containerd's content store with GC labels, and creates/updates the
//     image record.
// Everything happens under a temporary lease; loading twice is harmless.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace d4c::snap {

inline constexpr const char* kCdimgLayerMediaType = "application/vnd.d4c.cdimg.layer.v1+json";

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

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o);

}  // namespace d4c::snap
