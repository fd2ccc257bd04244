// Deflate streams rebuilt bit for bit: the compressors whose output a
// compressed-content-aware delta may record as a recipe (docs/format.md).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c::deflate {

// The raw deflate stream (RFC 1951: what lies between a gzip member's header
// and its trailer) that GNU gzip writes for `raw` at compression `level`
// (1..9), e.g. `gzip -9n` as Debian's packaging runs it. Our own
// implementation of gzip's algorithm (lazy matching, its block-splitting
// heuristic and buffer sizes), not zlib's: zlib drops that heuristic and
// reproduces only part of the files gzip made. Deterministic, bounded memory
// (a fixed ~300 KiB state plus the output), any input.
absl::StatusOr<std::string> GnuGzip(std::string_view raw, int level);

}  // namespace d4c::deflate
