// xdelta3 delta codec: VCDIFF via libxdelta3 (`xdelta3 -9 -S djw` settings),
// the whole base as one source block so matches anywhere in it are found.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class Xdelta3Codec final : public DeltaCodec {
 public:
  CodecId id() const override { return CodecId::kXdelta3; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  // No secondary compression, no Adler-32 (`xdelta3 -9 -S none -n`).
  absl::StatusOr<std::string> EncodeForPack(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;

 private:
  absl::StatusOr<std::string> EncodeWith(std::string_view base, std::string_view target, int flags) const;
};

}  // namespace d4c::codec_internal
