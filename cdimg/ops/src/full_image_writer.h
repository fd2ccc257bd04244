// The last step of producing a full cdimg, shared by convert and patch so that
// both give the same bytes for the same tree and config: entry order, the
// first entry with a digest carries its `full` blob, later ones are `base`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"

namespace d4c::internal {

// Indices of the entries that carry a `full` blob: regular, non-empty, first
// of their content digest (in entry order).
std::vector<size_t> FullBlobEntries(const std::vector<Entry>& entries);

// Returns the stored `full` blob (CompressFullBlob at the image's level) of
// entries[i]; called once per FullBlobEntries index, in increasing order.
using FullBlobSource = std::function<absl::StatusOr<std::string>(size_t i)>;

// The same blob passed in pieces to `append` (concatenated, they are the
// blob), so that a big one is never held whole. Wrapped in a struct only to
// keep the two WriteFullImage overloads apart.
using BlobAppend = std::function<absl::Status(std::string_view piece)>;
struct FullBlobCopier {
  explicit FullBlobCopier(std::function<absl::Status(size_t i, const BlobAppend& append)> f) : copy(std::move(f)) {}
  std::function<absl::Status(size_t i, const BlobAppend& append)> copy;
};

struct FullImageStats {
  uint64_t rootfs_bytes = 0;  // sum of regular file sizes (hardlinks once)
  uint64_t unique_bytes = 0;  // after dedup by content
};

// Writes `entries` (sorted, valid) as a full cdimg at `out_path`, atomically.
// `meta_zstd_level`: of the config + index frame; convert's is the default.
// `before_finish` (may be null) runs after the last blob: unless it returns
// OK, the image is not finished and its temp file is removed.
absl::StatusOr<FullImageStats> WriteFullImage(const std::string& out_path, std::string_view config_json,
                                              const std::vector<Entry>& entries,
                                              const FullBlobSource& blob);
absl::StatusOr<FullImageStats> WriteFullImage(const std::string& out_path, std::string_view config_json,
                                              const std::vector<Entry>& entries, const FullBlobCopier& blob,
                                              int meta_zstd_level = CdimgWriter::Options{}.index_zstd_level,
                                              const std::function<absl::Status()>& before_finish = nullptr);

}  // namespace d4c::internal
