// store_report: what the di3fs snapshotter's store holds, seen the way an
// operator needs it (`ctr-cli images`, `rm`, `prune`). Read-only: the store
// is read where the snapshotter's root probe says it is (load.h); only the
// snapshotter changes it.
//
// Images and names. Every image `ctr-cli load`/`pull` made has an image record
// in containerd labelled org.d4c.image.id = sha256:<image id> (load.h, step 3),
// and a committed snapshot named sha256:<image id> (its chain id) in the
// snapshotter; a container's snapshot is an active snapshot whose parent is
// that image snapshot. The store file ROOT/store/<image id>.cdimg is kept while
// an image snapshot (in any namespace) or a stored delta built on it needs it.
//
// Depth: the number of deltas between an image and its full image (a full
// image has depth 0, a delta from it depth 1).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/snap/containerd_client.h"

namespace d4c::snap {

// One file of the store.
struct StoreEntry {
  std::string id_hex;          // 64 hex digits
  bool is_delta = false;
  std::string parent_hex;      // "" for a full image
  uint64_t file_bytes = 0;     // size of its cdimg on disk
  std::string error;           // the header did not read (the file is listed, nothing else is known)

  // Filled by the report (from the whole store).
  size_t depth = 0;            // deltas between it and its full image
  uint64_t chain_bytes = 0;    // its file and every ancestor's: what running it needs
  std::string missing_ancestor;  // hex of the first ancestor not in the store ("" = chain complete)
  std::vector<std::string> children;  // stored images whose parent it is

  // Filled from containerd (one namespace).
  std::vector<std::string> names;     // image records labelled with its id
  bool image_snapshot = false;        // its committed snapshot sha256:<hex> exists
  std::vector<std::string> users;     // active/view snapshots on its image snapshot (containers)
};

// An image record that names a di3fs image the store does not hold (or whose
// chain is incomplete): it cannot run.
struct BrokenImage {
  std::string name;
  std::string image_id;  // sha256:<hex>
  std::string reason;
};

struct StoreReport {
  std::vector<StoreEntry> images;  // sorted by id
  std::vector<BrokenImage> broken;
  uint64_t total_bytes = 0;        // all store files
  const StoreEntry* Find(const std::string& id_hex) const;
};

// Reads the header of every cdimg in `store_dir` (layout::StoreDir(root)).
// A missing directory is an empty store. Files that are not images (a copy in
// progress) are skipped; an image whose header does not read is listed with
// `error` set.
absl::StatusOr<std::vector<StoreEntry>> ScanStore(const std::string& store_dir);

// Chains (depth, chain bytes, children) over the store, then names and users
// from containerd's image records and the snapshotter's snapshots (of one
// namespace). `snapshots` are those of the di3fs snapshotter only.
StoreReport BuildStoreReport(std::vector<StoreEntry> store, const std::vector<ImageRecord>& images,
                             const std::vector<SnapshotRecord>& snapshots);

// The hex ids of `r`'s images still needed once the image snapshots of
// `drop` (hex ids) are gone in this namespace: the images with an image
// snapshot not dropped, the images this namespace has no snapshot of and no
// stored image builds on (another namespace's, or a load in progress), and
// every ancestor of those. What a prune or rm would free is the rest.
std::set<std::string> StillNeeded(const StoreReport& r, const std::set<std::string>& drop);

// "sha256:<hex>" of the di3fs image an image record names, "" if none.
std::string Di3fsImageIdOf(const ImageRecord& image);

}  // namespace d4c::snap
