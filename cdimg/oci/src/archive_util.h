// libarchive plumbing shared by the layer reader and the decompressing stream.
#pragma once

#include <archive.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "d4c/oci.h"

namespace d4c::oci_internal {

struct ArchiveReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchiveReadPtr = std::unique_ptr<struct archive, ArchiveReadDeleter>;

// Compression filters we let libarchive detect. Deliberately not
// archive_read_support_filter_all(): that also enables lrzip/grzip/lzop
// (which fork an external program on untrusted input) and the uu/rpm
// wrappers, none of which is a layer encoding.
void EnableLayerFilters(struct archive* a);

// Feeds a ByteStream to libarchive. The stream's own error (e.g. a digest
// mismatch) is kept so callers can report it instead of libarchive's
// generic "read error".
class ArchiveInput {
 public:
  explicit ArchiveInput(ByteStream* in) : in_(in), buf_(kBufSize, '\0') {}
  // archive_read_open with our callbacks.
  int Open(struct archive* a);
  const absl::Status& stream_status() const { return status_; }
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  static constexpr size_t kBufSize = 256 * 1024;
  static la_ssize_t ReadCallback(struct archive* a, void* self, const void** out);
  ByteStream* in_;
  std::string buf_;
  absl::Status status_;
  uint64_t bytes_read_ = 0;
};

}  // namespace d4c::oci_internal
