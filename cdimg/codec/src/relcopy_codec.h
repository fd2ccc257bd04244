// relcopy delta codec: copy/add instructions with source addresses relative
// to recent copies (relcopy_format.h), made for cdimg packs. Two forms:
//   pack form        the raw instruction stream itself: no header, checksum
//                    or compression (the pack's zstd frame compresses it with
//                    the other members, and the cdimg checks every rebuilt
//                    file against its sha256). Never starts with byte 0: op 0
//                    is invalid.
//   standalone form  byte 0, u64 Hash64 of the target (little endian), then
//                    one zstd frame of the raw stream, whose content size must
//                    not exceed target_size + 16.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class RelcopyCodec final : public DeltaCodec {
 public:
  explicit RelcopyCodec(int level = 19) : level_(level) {}
  CodecId id() const override { return CodecId::kRelcopy; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> EncodeForPack(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> StandaloneFromPack(std::string_view target, std::string_view member) const override;
  // The pack form, which is raw already.
  absl::StatusOr<std::string> EncodeRawForPack(std::string_view base, std::string_view target,
                                               Helpers& /*helpers*/) const override {
    return EncodeForPack(base, target);
  }
  // The standalone form only; DecodeFromPack the pack form only.
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;
  absl::StatusOr<std::string> DecodeFromPack(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const override;

 private:
  int level_;
};

}  // namespace d4c::codec_internal
