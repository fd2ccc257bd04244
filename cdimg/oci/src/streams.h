// ByteStream implementations used by the image sources.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "d4c/entry.h"
#include "d4c/oci.h"
#include "util.h"

namespace d4c::oci_internal {

// Reads bytes [offset, offset + length) of a file; a docker-archive layer is
// such a range of the outer (uncompressed) tar, so it streams without copying.
class FileRangeStream : public ByteStream {
 public:
  // `length` nullopt: to the end of the file.
  static absl::StatusOr<std::unique_ptr<FileRangeStream>> Open(const std::string& path, uint64_t offset,
                                                               std::optional<uint64_t> length);
  ~FileRangeStream() override;
  absl::StatusOr<size_t> Read(char* buf, size_t n) override;
  uint64_t length() const { return length_; }

 private:
  FileRangeStream() = default;
  int fd_ = -1;
  std::string path_;
  uint64_t offset_ = 0;
  uint64_t length_ = 0;
  uint64_t pos_ = 0;
};

// Passes bytes through while hashing them; at the end of the stream the
// sha256 (and size, if known) must match, otherwise every further Read
// fails. Errors read "<what>: digest mismatch ..."; `what` names the blob.
class VerifyingStream : public ByteStream {
 public:
  VerifyingStream(std::unique_ptr<ByteStream> inner, Digest expected, std::optional<uint64_t> size,
                  std::string what);
  absl::StatusOr<size_t> Read(char* buf, size_t n) override;

 private:
  absl::Status Check();
  std::unique_ptr<ByteStream> inner_;
  Sha256Hasher hasher_;
  Digest expected_;
  std::optional<uint64_t> size_;
  std::string what_;
  uint64_t seen_ = 0;
  std::optional<absl::Status> final_;
};

// Decompresses `inner` (gzip, zstd, xz, bzip2, lz4) with libarchive; used
// for compressed layer members inside a docker-archive, whose diff_id names
// the uncompressed bytes.
absl::StatusOr<std::unique_ptr<ByteStream>> OpenDecompressingStream(std::unique_ptr<ByteStream> inner,
                                                                    std::string what);

// Reads a whole stream into memory, refusing more than `limit` bytes.
absl::StatusOr<std::string> ReadAll(ByteStream& in, uint64_t limit, std::string_view what);

// True if `head` starts with the magic number of a compression format.
bool LooksCompressed(std::string_view head);

}  // namespace d4c::oci_internal
