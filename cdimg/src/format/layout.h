// On-disk constants of the cdimg format; docs/format.md is the specification.
#pragma once

#include <cstddef>
#include <cstdint>

namespace d4c::internal {

inline constexpr char kMagic[8] = {'D', '4', 'C', 'C', 'D', 'I', 'M', 'G'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kFlagDelta = 1;
inline constexpr size_t kHeaderSize = 256;

// Byte offsets of header fields.
inline constexpr size_t kOffVersion = 8;
inline constexpr size_t kOffFlags = 12;
inline constexpr size_t kOffImageId = 16;
inline constexpr size_t kOffParentId = 48;
inline constexpr size_t kOffConfigOffset = 80;
inline constexpr size_t kOffConfigLength = 88;
inline constexpr size_t kOffIndexOffset = 96;
inline constexpr size_t kOffIndexLength = 104;
inline constexpr size_t kOffIndexRawLength = 112;
inline constexpr size_t kOffBlobsOffset = 120;
inline constexpr size_t kOffBlobsLength = 128;
inline constexpr size_t kOffMetaDigest = 136;    // sha256(config || stored index)
inline constexpr size_t kOffHeaderDigest = 224;  // sha256(header[0, 224))

// Raw (decompressed) index: fixed prefix then metadata, recipe columns, bases.
inline constexpr size_t kIndexPrefixSize = 16;  // u64 metadata_len, u32 entries, u32 bases

}  // namespace d4c::internal
