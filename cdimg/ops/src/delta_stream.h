// Stored `full` blobs moved without being held whole: diff copies a big
// file's blob from the new image into its spool, patch checks a blob it
// copies from the chain. Both read in pieces of kCopyPiece bytes and check
// the blob on the way (one zstd frame of the entry's size and sha256).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "d4c/cdimg.h"

namespace d4c::delta_internal {

// Reads and writes of stored blobs go in pieces of this size.
inline constexpr uint64_t kCopyPiece = 1ull << 20;
// The largest window a checked blob may use (zstd's own default limit for
// decompression): bounds a check's memory whatever the blob declares.
inline constexpr int kMaxWindowLog = 27;

using PieceSink = std::function<absl::Status(std::string_view piece)>;

// Passes bytes [ref.offset, +ref.length) of a blob store to `append` in
// pieces of at most kCopyPiece bytes; `read` reads one piece.
template <typename Read, typename Append>
absl::Status CopyInPieces(const BlobRef& ref, const Read& read, const Append& append) {
  for (uint64_t done = 0; done < ref.length;) {
    uint64_t n = std::min(kCopyPiece, ref.length - done);
    auto piece = read(BlobRef{ref.offset + done, n});
    if (!piece.ok()) return piece.status();
    if (absl::Status st = append(*piece); !st.ok()) return st;
    done += n;
  }
  return absl::OkStatus();
}

// Checks that the standalone `full` blob of `img`'s entry `entry` is exactly
// one zstd frame of `size` bytes whose sha256 is `digest` (a corrupt blob
// must not travel on), streaming it; `sink` (if set) receives the stored
// bytes, piece by piece, as they are read. Memory: zstd's window (at most
// 2^kMaxWindowLog, never more than the content) plus two small buffers,
// whatever the file's size. Errors name the image and path.
absl::Status CheckFullBlob(const CdimgImage& img, size_t entry, uint64_t size, const Digest& digest,
                           const PieceSink& sink = nullptr);

// Working memory of a CheckFullBlob call for a file of `size` bytes.
uint64_t CheckFullMemory(uint64_t size);

}  // namespace d4c::delta_internal
