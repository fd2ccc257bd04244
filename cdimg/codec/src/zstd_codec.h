// zstd delta codec: the target compressed as one zstd frame with the base as a
// raw prefix (what `zstd --patch-from` does), long-distance matching on.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

// Level 15, not 19: on debian v1->v2 (zstd wins 45 of 640 delta files)
// level 19 cost 1.2 of 4.75 CPU seconds of the diff for 101
// bytes of 766,092; typescript and biome deltas were byte-identical. (bsdiff's
// streams stay at 19: level 17 there cost 15 KB on debian.)
inline constexpr int kZstdDeltaLevel = 15;

class ZstdCodec final : public DeltaCodec {
 public:
  explicit ZstdCodec(int level = kZstdDeltaLevel) : level_(level) {}
  CodecId id() const override { return CodecId::kZstd; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;

 private:
  int level_;
};

}  // namespace d4c::codec_internal
