// zstd delta codec: the target compressed as one zstd frame with the base as a
// raw prefix (what `zstd --patch-from` does), long-distance matching on.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class ZstdCodec final : public DeltaCodec {
 public:
  explicit ZstdCodec(int level = 19) : level_(level) {}
  CodecId id() const override { return CodecId::kZstd; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;

 private:
  int level_;
};

}  // namespace d4c::codec_internal
