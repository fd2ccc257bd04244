// convert: OCI image (oci:DIR[:TAG], docker-archive:TAR) -> full cdimg.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"
#include "d4c/oci.h"

namespace d4c {

struct ConvertOptions {
  int threads = 0;         // compression threads; 0 = number of CPUs
  int zstd_level = 19;     // level of each file's `full` blob
  SquashOptions squash;
  // Called with (bytes compressed so far, bytes known so far); may be empty.
  std::function<void(uint64_t, uint64_t)> progress;
};

struct ConvertStats {
  ImageHeader header;
  size_t entries = 0;
  uint64_t rootfs_bytes = 0;  // sum of regular file sizes (hardlinks once)
  uint64_t unique_bytes = 0;  // after dedup by content
  uint64_t layer_bytes = 0;   // sum of stored layer sizes
};

// Writes the cdimg atomically; the same input always gives the same bytes.
absl::StatusOr<ConvertStats> ConvertImage(std::string_view ref, const std::string& out_path,
                                          const ConvertOptions& options);

// The same for an image from any source (e.g. containerd's content store).
absl::StatusOr<ConvertStats> ConvertImage(const ImageSource& source, const std::string& out_path,
                                          const ConvertOptions& options);

// Compresses one file's bytes the way `full` blobs are stored.
absl::StatusOr<std::string> CompressFullBlob(std::string_view content, int level);

// Files bigger than this are compressed by zstd's own workers, whose frames
// do not depend on how the input is fed or the output taken: for them a blob
// compressed as a stream is the same bytes CompressFullBlob gives.
inline constexpr uint64_t kFullBlobWorkersAbove = uint64_t{8} << 20;

// CompressFullBlob(content, level)'s bytes handed to `sink` in order, in
// pieces of at most ~1 MiB, never held whole: for a big file that skips a
// fresh output buffer of the file's size. Smaller contents (up to
// kFullBlobWorkersAbove) go to `sink` in one piece. Stops at the first
// error, the sink's included.
using BlobSink = std::function<absl::Status(std::string_view piece)>;
absl::Status StreamFullBlob(std::string_view content, int level, const BlobSink& sink);

}  // namespace d4c
