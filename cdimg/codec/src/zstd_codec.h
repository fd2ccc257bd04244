// zstd delta codec: the target compressed as one zstd frame with the base as a
// raw prefix (what `zstd --patch-from` does), long-distance matching on.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

// Level 15 for binaries: on debian v1->v2 (zstd wins 45 of 640 delta files)
// level 19 cost 1.2 of 4.75 CPU seconds of the diff for 101
// bytes of 766,092; typescript and biome deltas were byte-identical. (bsdiff's
// streams stay at 19: level 17 there cost 15 KB on debian.)
inline constexpr int kZstdDeltaLevel = 15;
// Level 19 for text (LooksText of the target): a minified bundle's patch is
// mostly literals, where level 19's two-pass optimal parser pays (prettier
// 3.3.3->3.4.0 flow.js: 112,980 B at 15, 100,974 B at 19; over prettier's 23
// pairs the deltas shrank 4.3%, docs/benchmarks.md "2026-12-06 (third session)").
inline constexpr int kZstdTextLevel = 19;

class ZstdCodec final : public DeltaCodec {
 public:
  // `level` for binary targets; text targets get `text_level`.
  explicit ZstdCodec(int level = kZstdDeltaLevel, int text_level = kZstdTextLevel)
      : level_(level), text_level_(text_level) {}
  CodecId id() const override { return CodecId::kZstd; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;

 private:
  int level_;
  int text_level_;
};

}  // namespace d4c::codec_internal
