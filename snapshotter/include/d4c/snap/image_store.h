// The snapshotter's image store: layout::StoreDir(ROOT), one file per
// image (full or delta). A delta's chain is resolved from the store by parent
// image id. Files are added atomically (temp file, fsync, rename) after their
// chain was opened and checked, so a failed add changes nothing. Only the
// snapshotter process changes the store (Import, Delete, RemoveStrays); other
// processes may read it (List, Resolve). Compaction (compaction.h) replaces
// an image's file by another holding the same image id (Replace).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"
#include "d4c/entry.h"
#include "d4c/metadata_keys.h"

namespace d4c::snap {

// The image-id label the snapshotter recognizes on Prepare (value "sha256:<hex>")
// and containerd's remote-snapshot target label (d4c/metadata_keys.h).
inline constexpr const char* kImageIdLabel = keys::kSnapshotImageIdLabel;
inline constexpr const char* kSnapshotRefLabel = keys::kSnapshotRefLabel;

struct ChainInfo {
  ImageHeader top;
  std::vector<std::string> paths;  // top first, then parent, grandparent, ... (full image last)
  uint64_t entries = 0;            // entries of the top image
  uint64_t bytes = 0;              // sum of file sizes of the chain
};

// Thread-safe: no state but the directory name; every change is one atomic
// rename, so readers in other threads or processes see a file whole or not at all.
class ImageStore {
 public:
  // `dir`: the store directory itself (layout::StoreDir(root)).
  explicit ImageStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  std::string PathFor(const std::string& id_hex) const;
  bool Has(const std::string& id_hex) const;
  // Hex ids of the images in the store (full and delta), sorted.
  std::vector<std::string> List() const;

  // Resolves and opens (checks) the chain of image `id_hex` from the store.
  // NotFound names the missing image (the top or an ancestor).
  absl::StatusOr<ChainInfo> Resolve(const std::string& id_hex) const;
  // Checks that `path` opens with its ancestors from the store, without
  // changing anything. FailedPrecondition if a parent is not loaded.
  absl::StatusOr<ChainInfo> Check(const std::string& path) const;
  // Check, then copy into the store (no-op if the same id is present).
  // `added` tells whether a file was written.
  absl::StatusOr<ChainInfo> Add(const std::string& path, bool* added = nullptr) const;
  // Add, after checking that `path` holds image `id_hex` (InvalidArgument
  // naming the file and both ids otherwise).
  absl::StatusOr<ChainInfo> Import(const std::string& path, const std::string& id_hex, bool* added) const;
  // Puts `path` (written durably on the store's filesystem) in place of the
  // stored file of image `id_hex`, in one atomic rename, after checking that
  // it holds that image id. Readers that opened the old file keep reading it.
  absl::Status Replace(const std::string& id_hex, const std::string& path) const;
  // Deletes image `id_hex` from the store.
  absl::Status Delete(const std::string& id_hex) const;
  // The parent image (hex) of stored image `id_hex`, "" for a full image.
  absl::StatusOr<std::string> ParentOf(const std::string& id_hex) const;
  // Removes every file in the store that is not an image (the temporary files
  // of copies a crash interrupted); returns their names. Call only while no
  // Add/Import runs.
  std::vector<std::string> RemoveStrays() const;

 private:
  absl::StatusOr<ChainInfo> OpenChain(const std::string& top_path, const ImageHeader& top) const;
  std::string dir_;
};

// "sha256:<hex>" -> "<hex>" (InvalidArgument otherwise).
absl::StatusOr<std::string> ParseSha256(const std::string& s);

}  // namespace d4c::snap
