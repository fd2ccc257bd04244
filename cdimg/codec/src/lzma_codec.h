// lzma delta codec (codec 7): the target as one raw LZMA2 stream whose
// dictionary is preset with the whole base, then the target's CRC32
// (docs/format.md, "The lzma patch (codec 7)").
//
// Why a second prefix codec beside zstd: an LZMA patch codes its literals
// with context-modelled range coding, where zstd uses Huffman tables, and a
// text file's patch is mostly literals. On prettier's changed files from
// 64 KiB (docs/benchmarks.md, "2026-12-06 (fourth session)") it stored them
// 10% smaller than zstd at level 19 in a third of the time; below 64 KiB
// zstd's patches were the smaller.
#pragma once

#include <cstdint>

#include "d4c/codec.h"

namespace d4c::codec_internal {

// liblzma's preset 6 with the hash-chain match finder, matches taken
// whole from 128 bytes (prettier's 23 pairs with lzma's text limit at 2 MiB,
// docs/benchmarks.md "2026-12-06 (fourth session)": 1,809,893 B of deltas
// at the preset's 64 in 10.7 s, 1,783,171 B at 128 in 12.0 s, 1,768,762 B at
// 273 in 14.9 s; the preset's binary-tree finder 1,755,417 B in 21.8 s, where
// zstd at level 19 took 16.8 s), a literal context of one byte and no
// position bits (debian-python's small binaries 2.5% smaller than with the
// preset's three bytes and 4-byte positions, prettier's bundles 0.2-1.3%).
// The encoder may change these: the decoder reads them from the stream.
inline constexpr uint32_t kLzmaPreset = 6;
inline constexpr uint32_t kLzmaNiceLength = 128;
inline constexpr uint32_t kLzmaLiteralContextBits = 1;
// The dictionary covers base and target, so both sizes are bounded by what
// an LZMA2 dictionary can hold; diff's auto never comes near it.
inline constexpr uint64_t kLzmaMaxInput = uint64_t{1} << 30;

class LzmaCodec final : public DeltaCodec {
 public:
  CodecId id() const override { return CodecId::kLzma; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  // Gives up (kOutOfRange) once the stream outgrows `limit`.
  absl::StatusOr<std::string> EncodeWithin(std::string_view base, std::string_view target, Helpers& helpers,
                                           uint64_t limit) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;
};

}  // namespace d4c::codec_internal
