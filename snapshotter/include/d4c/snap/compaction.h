// Compaction of the image store: delta chains stop growing.
//
// Every pulled update is a delta on the image before it, so without
// compaction an image's chain deepens with each release (reads get slower)
// and the store keeps every ancestor a chain still needs, although no
// snapshot serves it any more. Compaction of an image X whose chain is
// F(full) <- A1 <- ... <- An <- X:
//   * X becomes a full image (the bytes `cdimg patch` writes for it, so the
//     same as `convert` would): reading it needs no other file;
//   * each image below X that a snapshot still serves (the "rebased" ones,
//     nearest first) becomes a delta from the one above it — X, then the
//     previous rebased image — computed by diff (a reverse delta);
//   * every other image of the old chain is then needed by nobody and the
//     store's garbage collection deletes it.
// Image ids never change (an id names a tree, whatever file holds it), so
// snapshots, running mounts (a di3fs daemon keeps its files open), the
// planner of a pull and containerd see nothing but smaller files. Files are
// built beside the store (layout::CompactDir) and renamed in, X first, then
// the rebased images nearest first: a crash between two renames leaves a
// store whose every chain resolves (new files point only to newer images, old
// ones only to older images: no cycle); what a crash leaves in CompactDir is
// deleted at the next start.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/snap/image_store.h"

namespace d4c::snap {

struct CompactionPolicy {
  // Compact an image served by a snapshot when its chain holds more than this
  // many deltas and it is the newest image of its family (the served images
  // whose chains end in the same full image): older ones sit on reverse
  // deltas after a compaction, deep on purpose (0: never for depth).
  int max_depth = 0;
  // ...or when the images of its chain that only it still needs (no snapshot
  // serves them) take more than this fraction of its chain's full image
  // (0: never for waste).
  double max_waste = 0;
  // Worker threads of one compaction (patch and diff).
  int threads = 1;
  // zstd level of the files the compaction recompresses (those the deltas
  // changed; unchanged files keep their blobs). 19, convert's level, makes
  // the full image byte for byte what convert writes for it (the registry's
  // full cdimg); 12 takes ~1/13 of the time for ~10% more bytes on the
  // changed files (docs/operations.md).
  int zstd_level = 19;
  bool enabled() const { return max_depth > 0 || max_waste > 0; }
};

// One image of the store, as the planner sees it.
struct StoreImage {
  std::string id;      // hex
  std::string parent;  // hex, "" for a full image
  uint64_t bytes = 0;  // size of its file
};

struct CompactionPlan {
  std::string top;                   // becomes full
  std::vector<std::string> rebased;  // served images below it, nearest first
  // Every image of the plan with the parent it had when planned: the commit
  // is refused if the store changed meanwhile.
  std::vector<std::pair<std::string, std::string>> expected_parents;
  std::string reason;  // for the log: "depth 5 > 4", "waste 3.1 MB > 30% of 4.2 MB"
};

// Chooses at most one image to compact, among the images `served` by
// snapshots (id -> when it was loaded, any increasing order: the newest image
// snapshot's number): the deepest chain first, then the most waste. Images in
// `skip` (failed before) are not chosen. Pure: the store is given as data.
std::optional<CompactionPlan> PlanCompaction(const std::vector<StoreImage>& store,
                                             const std::map<std::string, int64_t>& served,
                                             const CompactionPolicy& policy, const std::set<std::string>& skip = {});

// The store as PlanCompaction wants it (headers and file sizes only).
absl::StatusOr<std::vector<StoreImage>> ScanStore(const ImageStore& store);

// Builds the files of `plan` in `work_dir` (which must exist, on the store's
// filesystem) from the store, without changing the store: returns
// (image id, file) in commit order — top first. Each file is checked to hold
// its image id. Files of a failed build are removed.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> BuildCompaction(const ImageStore& store,
                                                                                 const CompactionPlan& plan,
                                                                                 const std::string& work_dir,
                                                                                 const CompactionPolicy& policy);

}  // namespace d4c::snap
