// bsdiff delta codec. Patch layout (all integers little endian):
//   u32 ctrl_len, u32 diff_len, u32 extra_len   byte lengths of the three streams
//   u64 target_hash                             Hash64 of the target
//   ctrl                                        the control triples, nothing if none:
//                                               varint columns or fixed triples
//                                               (bsdiff_ctrl.h)
//   diff                                        nothing if empty, else byte 0x01, varint
//                                               length of the runs frame, the zstd frames
//                                               of the zero runs and of the literals
//                                               (bsdiff_zero_runs.h), or the whole stream
//                                               as an LZMA2 (0x02) or bzip2 (0x03) section
//                                               (alt_section.h); patches written before
//                                               the zero runs hold one zstd frame here
//   extra                                       one zstd frame, an LZMA2 or bzip2 section,
//                                               or nothing if empty
// The encoder writes each of diff and extra in whichever form is smallest.
// The streams are described in bsdiff_diff.h.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class BsdiffCodec final : public DeltaCodec {
 public:
  explicit BsdiffCodec(int level = 19) : level_(level) {}
  CodecId id() const override { return CodecId::kBsdiff; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> EncodeParallel(std::string_view base, std::string_view target,
                                             Helpers& helpers) const override;
  // Gives up before the slow level-19 compression of the streams when even
  // half their level-1 size exceeds `limit`.
  absl::StatusOr<std::string> EncodeWithin(std::string_view base, std::string_view target, Helpers& helpers,
                                           uint64_t limit) const override;
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;

 private:
  int level_;
};

}  // namespace d4c::codec_internal
