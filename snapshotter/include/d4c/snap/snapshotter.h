// The di3fs snapshotter: containerd snapshot semantics (as the overlayfs
// snapshotter) over ROOT, plus committed image snapshots served by di3fs.
//
// ROOT's layout: layout.h. At start the snapshotter writes ROOT's identity
// marker (RootMarker) and answers the root probe label with it (load.h).
//
// An image snapshot is created by Prepare with labels
//   containerd.io/snapshot/di3fs.image-id = sha256:<image id>
//   containerd.io/snapshot.ref            = <name to commit as>  (the chainID)
// (containerd's remote-snapshot protocol): it becomes a committed snapshot
// named by the ref and Prepare answers AlreadyExists. With label
//   containerd.io/snapshot/di3fs.import   = /abs/path/of/image.cdimg
// an image not yet in the store is first checked (it must hold that image id
// and its parent must be in the store) and copied in: the only way an image
// enters the store.
//
// Store garbage collection: an image stays in the store while an image
// snapshot serves it or an image that stays is a delta built on it. Remove of
// an image snapshot and Cleanup (containerd's GC calls both) delete the rest,
// with their mounts, and the temporary files of interrupted imports.
//
// A Prepare with label containerd.io/snapshot/di3fs.root-probe creates
// nothing: it fails with FailedPrecondition whose message is RootProbeAnswer
// (this snapshotter's root and root id), which containerd passes back.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "d4c/snap/image_store.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/metastore.h"
#include "d4c/snap/mounter.h"

namespace d4c::snap {

struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

// Thread-safe: containerd calls every method from several gRPC threads at once.
// mu_ serializes metadata transactions with the directory changes that go with
// them; chains_mu_ guards the resolved-chain cache; store_mu_ serializes
// changes of the store (an import with the creation of its image snapshot,
// against the garbage collection that would delete an image no snapshot uses
// yet). Lock order: store_mu_ before mu_ or chains_mu_; mu_ and chains_mu_ are
// never held together, and none of them is held while the mounter mounts or
// unmounts (it has locks of its own, see mounter.h).
class Snapshotter {
 public:
  struct Options {
    std::string root = "/var/lib/di3fs";
    std::string di3fs = "di3fs";
    uint64_t cache_size = 2ull << 30;  // di3fs content cache, all images together
    std::string address;               // socket served on (written into the marker)
    // Image mounts; nullptr: a Di3fsMounter over ROOT (tests pass a fake).
    std::shared_ptr<ImageMounter> mounter;
  };
  // Opens ROOT, recovers mounts needed by existing snapshots, removes leftovers.
  static absl::StatusOr<std::unique_ptr<Snapshotter>> Open(const Options& o);

  absl::StatusOr<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent, const Labels& labels);
  absl::StatusOr<std::vector<Mount>> View(const std::string& key, const std::string& parent, const Labels& labels);
  absl::StatusOr<std::vector<Mount>> Mounts(const std::string& key);
  absl::Status Commit(const std::string& name, const std::string& key, const Labels& labels);
  absl::Status Remove(const std::string& key);
  absl::StatusOr<Info> Stat(const std::string& key);
  absl::StatusOr<Info> Update(const Info& info, const std::vector<std::string>& fieldpaths);
  absl::StatusOr<Usage> GetUsage(const std::string& key);
  absl::Status List(const std::vector<std::string>& filters, const std::function<absl::Status(const Info&)>& fn);
  absl::Status Cleanup();
  void Reap() { mounter_->Reap(); }

  const ImageStore& store() const { return store_; }
  const RootMarker& marker() const { return marker_; }
  std::string SnapshotDir(int64_t id) const;

 private:
  explicit Snapshotter(const Options& o);
  absl::StatusOr<std::vector<Mount>> Create(Kind kind, const std::string& key, const std::string& parent,
                                            const Labels& labels);
  absl::StatusOr<std::vector<Mount>> CreateImage(const std::string& parent, const Labels& labels);
  // Mounts of an active/view record; mounts the images below it if needed.
  absl::StatusOr<std::vector<Mount>> MountsFor(const Record& r);
  absl::Status EnsureImage(const std::string& id_hex);
  // Store garbage collection (see above); returns the image ids deleted.
  // Unmounts each before deleting it, but `unmounted` (the caller did).
  absl::StatusOr<std::vector<std::string>> CollectStore(const std::string& unmounted = "");
  absl::StatusOr<ChainInfo> ResolveCached(const std::string& id_hex);

  Options o_;
  ImageStore store_;
  std::shared_ptr<ImageMounter> mounter_;
  RootMarker marker_;
  absl::Mutex store_mu_ ABSL_ACQUIRED_BEFORE(mu_, chains_mu_);
  absl::Mutex mu_;
  std::unique_ptr<MetaStore> meta_ ABSL_PT_GUARDED_BY(mu_);  // MetaStore is not thread-safe
  absl::Mutex chains_mu_;
  std::map<std::string, ChainInfo> chains_ ABSL_GUARDED_BY(chains_mu_);
};

// Disk usage of a directory tree: allocated bytes and inodes (hardlinks once).
Usage DiskUsage(const std::string& dir);

}  // namespace d4c::snap
