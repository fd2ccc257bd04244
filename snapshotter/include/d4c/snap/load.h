// load: hand cdimgs over to the di3fs snapshotter and containerd.
//
// The snapshotter owns its store: no other process writes into its root. An
// image reaches the store through containerd, as every snapshot does:
//  0. ask the snapshotter, through containerd (plugin o.snapshotter), which
//     root it runs with (the root probe, below); with --snapshotter-root, check
//     that it is that root. What the store holds is then read (never written)
//     at the root the snapshotter named, so a wrong --snapshotter-root cannot
//     split the world;
//  1. check the cdimg's header (and, for a delta, that its parent is held);
//  2. Prepare, through containerd, with labels
//       containerd.io/snapshot/di3fs.image-id = sha256:<image id>
//       containerd.io/snapshot/di3fs.import   = <absolute path of the cdimg>
//       containerd.io/snapshot.ref            = <chainID>
//     (the remote-snapshot protocol): the snapshotter checks the file and its
//     chain, copies it into its store and makes the committed image snapshot;
//  3. (Load only) write config (rootfs.diff_ids = [sha256:<image id>]), a
//     placeholder layer blob (media type keys::kLoadedLayerType) and an OCI
//     manifest into containerd's content store with GC labels, and create or
//     update the image record (label org.d4c.image.id).
// Everything happens under one containerd lease. Loading twice is harmless.
// A hand-over that fails removes the snapshots it created; the snapshotter
// then deletes what no snapshot needs (its store garbage collection), so a
// failed load leaves nothing behind.
//
// The root probe: the snapshotter writes ROOT/snapshotter.json (layout.h,
// RootMarker) at start. A Prepare with label
// containerd.io/snapshot/di3fs.root-probe creates nothing and fails with
// FailedPrecondition naming the snapshotter's root and root id, which
// containerd passes back. The root is used only if ROOT/snapshotter.json, read
// from here, carries that root id (the same directory, seen from this process).
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

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
  // "": the root the snapshotter reports. Otherwise it must be that root.
  std::string snapshotter_root;
  std::string snapshotter = "di3fs";  // the proxy plugin's name in containerd's config
};

struct LoadResult {
  std::string image_id;  // sha256:...
  std::string chain_id;  // == diffID for our single-layer images
  std::string manifest_digest;  // "" for Import
  bool stored = false;            // the snapshotter imported the cdimg (it was not in its store)
  bool snapshot_created = false;  // the snapshot did not exist before
  size_t chain_depth = 0;
};

// One hand-over (steps above) under one lease. Not thread-safe: one caller.
class Handover {
 public:
  // Connects to containerd at o.address (namespace o.ns), then as below.
  static absl::StatusOr<std::unique_ptr<Handover>> Begin(const LoadOptions& o);
  // Step 0 and a lease over an open connection (o.address and o.ns unused).
  static absl::StatusOr<std::unique_ptr<Handover>> Begin(const LoadOptions& o, ContainerdApi& containerd);
  // Removes the snapshots made unless Commit was called; ends the lease.
  ~Handover();
  Handover(const Handover&) = delete;
  Handover& operator=(const Handover&) = delete;

  // The snapshotter's root (what its probe answered).
  const RootMarker& root() const { return root_; }
  // "sha256:<hex>" of every image in the snapshotter's store.
  std::set<std::string> HeldImages() const;
  // Steps 1-2 for `cdimg`: an image other images are built on (a pull's
  // intermediate step). Its snapshot lives until Commit, which removes it if
  // this hand-over made it; the image stays in the store while an image built
  // on it does.
  absl::StatusOr<LoadResult> Import(const std::string& cdimg);
  // Steps 1-3 for `cdimg`, or for held image `image_id` ("sha256:<hex>") when
  // cdimg is empty: the image record o.image.
  absl::StatusOr<LoadResult> Load(const std::string& cdimg, const std::string& image_id = "");
  // Keeps what Load made.
  void Commit();

 private:
  Handover(const LoadOptions& o, ContainerdApi& c) : o_(o), c_(c) {}
  absl::StatusOr<LoadResult> Snapshot(const std::string& cdimg, const std::string& image_id);

  LoadOptions o_;
  std::unique_ptr<ContainerdApi> owned_;  // the connection Begin(o) made
  ContainerdApi& c_;
  RootMarker root_;
  std::string lease_;
  std::vector<std::string> created_;       // snapshots made, in order
  std::vector<std::string> intermediate_;  // those of them Import made
  bool committed_ = false;
};

// One image: Handover::Begin, Load(o.cdimg), Commit.
absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o);
// The same over an open connection (o.address and o.ns are not used).
absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o, ContainerdApi& containerd);

// "<boot id>/<pid>/<start time>" of process `pid`: names one process of this
// host across pid reuse and reboots; "" if it does not exist. A hand-over's
// lease carries its process's identity (keys::kLeaseOwnerLabel); Begin ends
// the hand-over leases of processes that are gone (killed during a load), so
// that containerd's GC and the snapshotter's store collection drop what they
// held.
std::string ProcessIdentity(int64_t pid);

// Step 0 alone: the root of the snapshotter containerd uses as plugin
// `snapshotter`. With `root` non-empty, FailedPrecondition (naming `root` and
// the root the snapshotter really has) unless it is that root.
absl::StatusOr<RootMarker> VerifySnapshotterRoot(ContainerdApi& containerd, const std::string& snapshotter,
                                                 const std::string& root);

}  // namespace d4c::snap
