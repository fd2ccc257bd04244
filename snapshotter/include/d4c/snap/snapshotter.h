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
// containerd's own pulls (CRI, kubelet; remote.h): a Prepare of an image's
// TOP layer carrying the snapshot annotations containerd passes
// (cri.image-ref, cri.manifest-digest, cri.layer-digest, cri.image-layers)
// asks the image's registry (Options::remote) for the cdimgs attached to that
// manifest, plans the cheapest chain from the images in the store, downloads
// and checks it (no lock held meanwhile), imports it as the import label does
// and creates the image snapshot named by the ref, with parent the snapshot of
// the layers below (as containerd passed it, "" for a one-layer image) and
// label di3fs.image-id; Prepare answers AlreadyExists and containerd fetches
// no blob for that layer. Lower layers are ordinary snapshots: their chainIDs
// are shared with other images, so they are never faked. An image snapshot is
// the whole tree: mounts above it use its di3fs mount alone, never its
// parents. No cdimg attached, or any failure: logged, remembered for a short
// time per manifest, and the Prepare proceeds as an ordinary one (containerd
// fetches and unpacks the layer).
//
// Store garbage collection: an image stays in the store while an image
// snapshot serves it or an image that stays is a delta built on it. Remove of
// an image snapshot and Cleanup (containerd's GC calls both) delete the rest,
// with their mounts, and the temporary files of interrupted imports.
//
// Compaction (compaction.h), when Options::compaction is enabled: a
// background thread, woken when an image snapshot is created or removed and
// at start, compacts one image at a time (niced), then collects the store.
//
// A Prepare with label containerd.io/snapshot/di3fs.root-probe creates
// nothing: it fails with FailedPrecondition whose message is RootProbeAnswer
// (this snapshotter's root and root id), which containerd passes back.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "d4c/snap/compaction.h"
#include "d4c/snap/image_store.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/metastore.h"
#include "d4c/snap/mounter.h"
#include "d4c/snap/remote.h"

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
// unmounts (it has locks of its own, see mounter.h). compact_run_mu_ (one
// compaction at a time) is taken before store_mu_ and is held while a
// compaction builds its files, with no other lock; compact_mu_ (the
// compactor's wake-up flags) is a leaf.
class Snapshotter {
 public:
  struct Options {
    std::string root = "/var/lib/di3fs";
    std::string di3fs = "di3fs";
    uint64_t cache_size = 2ull << 30;  // di3fs content cache, all images together
    std::string address;               // socket served on (written into the marker)
    // Image mounts; nullptr: a Di3fsMounter over ROOT (tests pass a fake).
    std::shared_ptr<ImageMounter> mounter;
    // For that Di3fsMounter: its descriptor store and the /dev/fuse copies
    // the store gave back (fdstore.h; Di3fsMounter::Options).
    std::shared_ptr<const Notifier> fdstore;
    std::map<std::string, int> passed_fuse;
    // Off unless set (the snapshotter binary turns it on, main.cc).
    CompactionPolicy compaction;
    // Run compactions on a background thread (else only CompactOnce does).
    bool background_compaction = true;
    // Where CRI pulls find cdimgs (remote.h); nullptr: no CRI-served images.
    std::shared_ptr<RemoteImages> remote;
    // How long a failed lookup for a manifest (no cdimgs, a bad file, a
    // refusal) is remembered: its next pulls fall back at once. A registry
    // that did not answer (Unavailable, DeadlineExceeded, Cancelled,
    // Aborted) is not remembered: the next pull asks again.
    std::chrono::seconds remote_failure_ttl{60};
  };
  // Opens ROOT, recovers mounts needed by existing snapshots, removes leftovers.
  static absl::StatusOr<std::unique_ptr<Snapshotter>> Open(const Options& o);
  // Stops the compactor (waiting for a compaction in progress to finish).
  ~Snapshotter();

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
  // Plans and runs at most one compaction now (compaction.h) under the
  // policy, skipping images in `skip`; true if one was done. On failure the
  // store is as before and the image that failed is added to `skip`.
  absl::StatusOr<bool> CompactOnce(std::set<std::string>* skip = nullptr);

  const ImageStore& store() const { return store_; }
  const RootMarker& marker() const { return marker_; }
  std::string SnapshotDir(int64_t id) const;

 private:
  explicit Snapshotter(const Options& o);
  absl::StatusOr<std::vector<Mount>> Create(Kind kind, const std::string& key, const std::string& parent,
                                            const Labels& labels);
  absl::StatusOr<std::vector<Mount>> CreateImage(const std::string& parent, const Labels& labels);
  // The image snapshot of labels' image id, named by the ref label, after
  // importing `imports` ((cdimg path, image id hex), in apply order; those in
  // the store are skipped) under store_mu_. Answers AlreadyExists when the
  // snapshot exists (made now or before); on any failure the imports made are
  // deleted again.
  absl::StatusOr<std::vector<Mount>> CreateImageFrom(const std::string& parent, const Labels& labels,
                                                     const std::vector<std::pair<std::string, std::string>>& imports);
  // A CRI pull's top layer from the image's cdimgs: OK when the image
  // snapshot exists afterwards; else why not (the caller falls back).
  absl::Status ServeFromReferrers(const CriTarget& t, const std::string& parent, const Labels& labels);
  // The same, once this thread is the only one serving t.manifest_digest.
  absl::Status ServeFromReferrersLocked(const CriTarget& t, const std::string& parent, const Labels& labels);
  // Mounts of an active/view record; mounts the images below it if needed.
  absl::StatusOr<std::vector<Mount>> MountsFor(const Record& r);
  absl::Status EnsureImage(const std::string& id_hex);
  // Store garbage collection (see above); returns the image ids deleted.
  // Unmounts each before deleting it, but `unmounted` (the caller did).
  absl::StatusOr<std::vector<std::string>> CollectStore(const std::string& unmounted = "");
  absl::StatusOr<ChainInfo> ResolveCached(const std::string& id_hex);
  absl::Status CommitCompaction(const CompactionPlan& plan,
                                const std::vector<std::pair<std::string, std::string>>& files);
  void WakeCompactor();
  void CompactorLoop();
  bool CompactorReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(compact_mu_) { return compact_wake_ || compact_stop_; }

  Options o_;
  ImageStore store_;
  std::shared_ptr<ImageMounter> mounter_;
  RootMarker marker_;
  absl::Mutex compact_run_mu_ ABSL_ACQUIRED_BEFORE(store_mu_);
  absl::Mutex store_mu_ ABSL_ACQUIRED_BEFORE(mu_, chains_mu_);
  absl::Mutex mu_;
  std::unique_ptr<MetaStore> meta_ ABSL_PT_GUARDED_BY(mu_);  // MetaStore is not thread-safe
  absl::Mutex chains_mu_;
  std::map<std::string, ChainInfo> chains_ ABSL_GUARDED_BY(chains_mu_);
  absl::Mutex compact_mu_;
  bool compact_wake_ ABSL_GUARDED_BY(compact_mu_) = false;
  bool compact_stop_ ABSL_GUARDED_BY(compact_mu_) = false;
  std::thread compactor_;  // started by Open when enabled, joined by the destructor
  // Failed CRI lookups by manifest digest: (until, why), and the manifests
  // being served now (remote_cv_ signals when one is done). A leaf lock,
  // never held during a fetch.
  absl::Mutex remote_mu_;
  absl::CondVar remote_cv_;
  std::set<std::string> remote_inflight_ ABSL_GUARDED_BY(remote_mu_);
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, absl::Status>> remote_failures_
      ABSL_GUARDED_BY(remote_mu_);
};

// Disk usage of a directory tree: allocated bytes and inodes (hardlinks once).
Usage DiskUsage(const std::string& dir);

}  // namespace d4c::snap
