// On-disk constants of the cdimg format; docs/format.md is the specification.
#pragma once

#include <cstddef>
#include <cstdint>

namespace d4c::internal {

inline constexpr char kMagic[8] = {'D', '4', 'C', 'C', 'D', 'I', 'M', 'G'};
inline constexpr uint8_t kFormatVersion = 2;
inline constexpr uint8_t kFlagDelta = 1;
// Compact meta (docs/format.md): packed config digests, predicted recipe
// kinds in a delta's prefix, the last pack inline in the meta frame.
inline constexpr uint8_t kFlagCompactMeta = 2;
// Placed packs (docs/format.md; compact meta only): every packed entry names
// its pack and offset, packs record their decompressed size, and a pack may
// hold bytes no entry owns (steps of chained patches, members dropped by a
// merge): merge --compose copies its inputs' packs as they are stored.
inline constexpr uint8_t kFlagPlacedPacks = 4;
// LZMA meta (docs/format.md; compact meta only): the meta section is the
// varint length of its content, then an lzma patch (codec 7) of that content
// against the prefix the zstd frame would use. The writer keeps whichever
// form is smaller.
inline constexpr uint8_t kFlagLzmaMeta = 8;

// Lead: magic, u8 version, u8 flags. The blob section follows at once.
inline constexpr size_t kOffVersion = 8;
inline constexpr size_t kOffFlags = 9;
inline constexpr size_t kLeadSize = 10;

// Tail (before its own length byte, the last byte of the file): image id,
// parent id (delta only), varint meta_length, config_length, index_length,
// then the header checksum: the first 4 bytes of sha256(lead || tail before it).
inline constexpr size_t kChecksumSize = 4;
inline constexpr size_t kMinTailSize = 32 + 3 + kChecksumSize;
inline constexpr size_t kMaxTailSize = 64 + 3 * 10 + kChecksumSize;

}  // namespace d4c::internal
