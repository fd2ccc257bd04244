// bsdiff patch sections compressed with LZMA2 (liblzma) or bzip2 (libbz2)
// instead of zstd. A section in one of these forms is one form byte, then:
//
//   kLzma2Form (0x02)  one byte d (the dictionary is 2^d bytes,
//                      kLzma2MinDictLog <= d <= kLzma2MaxDictLog), then a raw
//                      LZMA2 stream (no .xz container, no size, no check: the
//                      patch's Hash64 covers the target)
//   kBzip2Form (0x03)  one bzip2 stream (block size 900 k)
//
// The diff section in these forms holds the whole diff stream (no zero-run
// split), the extra section the extra stream. Neither byte starts a zstd frame
// (0x28) or a multi-frame section (0x01), so readers tell all forms apart.
//
// Why: on Go binaries the diff stream is not long zero runs between a few
// changed bytes, as on C and Rust code, but short gaps between pointer deltas
// (esbuild 0.20.0 -> 0.20.1: 432,590 nonzero bytes in 525,495 run pairs), and
// there block sorting (bzip2) and LZMA2's optimal parse with literal contexts
// beat zstd -19 on the same 9.6 MB stream: bzip2 226,968, LZMA2 (xz -9e)
// 212,879, zstd -19 251,346 whole or 258,743 as zero runs + literals. On
// biome's Rust binary zstd's zero runs stay best of the fast ones (bzip2
// 2,307,180 vs 1,917,619). The encoder keeps the smallest form per section.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c::codec_internal {

inline constexpr char kLzma2Form = 0x02;
inline constexpr char kBzip2Form = 0x03;
inline constexpr int kLzma2MinDictLog = 12;
inline constexpr int kLzma2MaxDictLog = 26;

inline bool IsAltSection(std::string_view section) {
  return !section.empty() && (section[0] == kLzma2Form || section[0] == kBzip2Form);
}

// The section of `src` (non-empty): LZMA2 at xz's strongest preset (9e) with
// a dictionary just big enough for src; bzip2 at level 9.
absl::StatusOr<std::string> Lzma2CompressSection(std::string_view src);
absl::StatusOr<std::string> Bzip2CompressSection(std::string_view src);

// The bytes of a section for which IsAltSection holds, which must be at most
// `max_size` bytes; the decoders' memory is bounded by that too.
absl::StatusOr<std::string> DecompressAltSection(std::string_view section, uint64_t max_size);

}  // namespace d4c::codec_internal
