// gzip delta codec (id 5): a delta of the *inflated* content of a gzip file,
// plus the recipe that deflates it back to the exact same bytes. A small
// change of a text changes its whole deflate stream, so codecs that see the
// compressed bytes find almost nothing to copy; on the inflated text they
// do. Layout (docs/format.md, "The gzip patch"):
//
//   byte form        1 standalone (inner patch in its standalone form),
//                    2 pack (inner patch in its pack form); each form is read
//                    only as itself, like relcopy's
//   byte base_kind   0: the base as it is; 1: the base is a single-member
//                    gzip file and its inflated content is the inner base
//   [varint]         base_kind 1: the base's inflated size
//   varint raw_size  the target's inflated size
//   byte engine      1 zlib deflate (windowBits 15, default strategy),
//                    2 GNU gzip's algorithm (d4c::deflate::GnuGzip)
//   byte level       1..9
//   byte mem_level   zlib: 1..9; GNU gzip: 0
//   varint hlen, hlen bytes: the target's gzip header verbatim
//   byte inner       the inner codec id (1..4)
//   rest             the inner patch: inner base -> inflated target
//
// The target is header + deflate(inflated target) + CRC-32 + ISIZE (both
// little endian, computed), and must be exactly target_size bytes.
//
// Zip archives (jar, whl...) take forms 3 (standalone) and 4 (pack): the
// inner patch makes the target's expanded form (its deflated members
// inflated in place, deflate::ExpandZip) from the base's, and a member table
// under one zlib recipe deflates them back (docs/format.md, "The zip forms").
//
// Encode refuses (FailedPrecondition) a target that is neither a
// single-member gzip file nor a zip archive, or whose streams no recipe
// reproduces; diff's auto then keeps the other codecs' patches.
#pragma once

#include "d4c/codec.h"

namespace d4c::codec_internal {

class GzipCodec final : public DeltaCodec {
 public:
  CodecId id() const override { return CodecId::kGzip; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override {
    return EncodeForm(base, target, false);
  }
  absl::StatusOr<std::string> EncodeForPack(std::string_view base, std::string_view target) const override {
    return EncodeForm(base, target, true);
  }
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override {
    return DecodeForm(base, patch, target_size, false);
  }
  absl::StatusOr<std::string> DecodeFromPack(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const override {
    return DecodeForm(base, patch, target_size, true);
  }

 private:
  absl::StatusOr<std::string> EncodeForm(std::string_view base, std::string_view target, bool pack) const;
  absl::StatusOr<std::string> DecodeForm(std::string_view base, std::string_view patch, uint64_t target_size,
                                         bool pack) const;
};

}  // namespace d4c::codec_internal
