// Delta codecs: encode(base, target) -> patch; decode(base, patch) -> target.
// The codec id is stored per entry in a cdimg, so images mixing codecs decode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c {

// Stored on disk: never renumber.
enum class CodecId : uint8_t {
  kZstd = 1,     // zstd with the base as prefix (--patch-from), long matching
  kXdelta3 = 2,  // VCDIFF via libxdelta3
  kBsdiff = 3,   // suffix-array diff, zstd-compressed control/diff/extra
  kRelcopy = 4,  // copy/add with relative addresses, left for the pack's zstd
};

const char* CodecName(CodecId id);
// Accepts "zstd", "xdelta3", "bsdiff", "relcopy".
absl::StatusOr<CodecId> ParseCodecName(std::string_view name);

class DeltaCodec {
 public:
  virtual ~DeltaCodec() = default;
  virtual CodecId id() const = 0;
  virtual absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const = 0;
  // A patch that will be compressed again together with others (a cdimg
  // pack): codecs that can skip their own entropy coding and checksums do so.
  // Decode reads both kinds.
  virtual absl::StatusOr<std::string> EncodeForPack(std::string_view base, std::string_view target) const {
    return Encode(base, target);
  }
  // Must never return bytes of a size other than `target_size`, and must fail
  // cleanly (no crash, bounded memory) on corrupt or hostile patches.
  virtual absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const = 0;
};

// Codecs are stateless and thread-safe; the returned reference is static.
const DeltaCodec& GetCodec(CodecId id);

}  // namespace d4c
