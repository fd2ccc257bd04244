// Chained patch (codec id 6): the patches of several deltas applied one after
// the other, A -> B -> C, stored as one patch against A. `merge` writes it
// for a file changed by both deltas when A's content is not at hand; no
// codec's Encode produces it. Layout (docs/format.md, "The chained patch"):
//
//   byte form          1 standalone, 2 pack (must match where it is stored)
//   varint step_count  2..kMaxChainSteps
//   per step:  byte codec (1..5 or 7; 0 = stored, first step only), byte step
//              form (1 standalone, 2 pack; bit 7 = located),
//              varint out_size (<= 1 GiB; the last one = the target size),
//              varint patch_length, located: varint pack, varint offset
//   the patches of the steps not located, back to back, ending exactly at
//   the end
//
// Step k decodes its patch (that codec, that form) against step k-1's
// output (step 1: the base) into out_size bytes; a stored step's patch is
// its output. A located step's bytes lie in a pack of the image: only the
// image reader resolves them (CdimgImage::ReadPayload), this codec refuses
// them.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class ChainCodec final : public DeltaCodec {
 public:
  CodecId id() const override { return CodecId::kChain; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override {
    return DecodeChain(base, patch, target_size, false);
  }
  absl::StatusOr<std::string> DecodeFromPack(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const override {
    return DecodeChain(base, patch, target_size, true);
  }

 private:
  absl::StatusOr<std::string> DecodeChain(std::string_view base, std::string_view patch, uint64_t target_size,
                                          bool pack) const;
};

}  // namespace d4c::codec_internal
