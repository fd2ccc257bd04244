// The compact meta form of a cdimg (lead flag bit 1, delta images only;
// docs/format.md "Compact meta"), for small deltas, where the config and index
// are most of the file: config digests stored as bytes, the parent's
// predicted recipe kinds in the zstd prefix, same-path delta bases named by
// reference 0 instead of a digest, and the last pack inside the meta frame so
// that a small delta pays for one zstd frame and one set of entropy tables.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "index_codec.h"

namespace d4c {
class CdimgImage;
}

namespace d4c::internal {

// Replaces each "sha256:" + 64 lowercase hex digits in an OCI config by
// 0x01 0x01 + the 32 digest bytes, and escapes every other 0x01 byte as
// 0x01 0x00, so that digests cost their entropy and the mapping is exact.
std::string PackConfigDigests(std::string_view config);
// The inverse; fails on a malformed escape or output above `max_size`.
absl::StatusOr<std::string> UnpackConfigDigests(std::string_view packed, uint64_t max_size);

// The zstd prefix a delta's meta frame is compressed against: the parent's
// config ‖ its metadata (plain form), or for the compact form its packed
// config ‖ its metadata ‖ one recipe kind per parent entry as an unchanged
// child would have it (base for files, empty, none), so unchanged entries'
// recipes become one long match.
std::string MetaPrefix(const CdimgImage& parent, bool compact);

// Base reference 0 of a compact index: the parent's file at the same path.
SamePathBase SamePathIn(const CdimgImage& parent);

}  // namespace d4c::internal
