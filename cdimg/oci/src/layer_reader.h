// Streams the entries of one layer tar (any of pax/gnu/ustar, optionally
// compressed) with libarchive, converting each header into the image model
// and enforcing the per-layer size limit (gzip-bomb guard) and the per-entry
// sanity limits.
#pragma once

#include <archive.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/entry.h"
#include "d4c/oci.h"
#include "archive_util.h"

namespace d4c::oci_internal {

struct LayerEntry {
  std::string raw_name;  // as stored in the archive (for messages)
  // Normalized path in `meta.path`; for hardlinks meta.link_target is the
  // normalized target path, for symlinks the raw target.
  Entry meta;
  uint64_t header_size = 0;  // data size announced by the header
};

class LayerReader {
 public:
  // `name` is how errors refer to the layer ("sha256:..."); `limit` caps the
  // uncompressed bytes of the layer.
  LayerReader(std::string name, uint64_t limit, std::string limit_text);

  absl::Status Open(std::unique_ptr<ByteStream> blob);
  // Advances to the next entry (discarding unread data of the current one,
  // under the size limit). Returns false at the end of the archive.
  absl::StatusOr<bool> Next(LayerEntry* e);
  // All data of the current entry.
  absl::StatusOr<std::string> ReadContent(const LayerEntry& e);
  // The same in pieces of at most 256 KiB, each passed to `piece` (whose
  // error stops the read), so that a big file is never held whole.
  absl::Status StreamContent(const LayerEntry& e, const std::function<absl::Status(std::string_view)>& piece);
  // Consumes what follows the end-of-archive marker so that a verifying
  // stream sees (and checks) every byte of the blob.
  absl::Status Finish();

  // "layer <name> : <message>"
  absl::Status Error(std::string_view message) const;
  absl::Status EntryError(std::string_view raw_name, std::string_view message) const;

 private:
  absl::Status ArchiveError(std::string_view context);
  absl::Status CheckLimit(uint64_t produced);
  absl::Status SkipData();
  absl::Status Convert(struct archive_entry* ae, LayerEntry* le) const;
  absl::Status ConvertType(struct archive_entry* ae, LayerEntry* le) const;
  absl::Status ConvertXattrs(struct archive_entry* ae, LayerEntry* le) const;

  std::string name_;
  uint64_t limit_;
  std::string limit_text_;
  std::unique_ptr<ByteStream> blob_;
  std::unique_ptr<ArchiveInput> input_;
  ArchiveReadPtr a_;
  std::string current_;         // raw name of the current entry, for messages
  uint64_t content_bytes_ = 0;  // entry data handed out (sparse files expand)
  bool data_pending_ = false;
  std::string scratch_ = std::string(256 * 1024, '\0');  // data read buffer
};

}  // namespace d4c::oci_internal
