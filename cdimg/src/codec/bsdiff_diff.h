// The bsdiff difference algorithm (Colin Percival, "Naive differences of
// executable code", 2003; his bsdiff 4.3 is BSD-licensed), reimplemented here:
// suffix-array matches extended approximately, so that the "diff" stream of
// bytewise differences is mostly zeros and compresses well.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c::codec_internal {

// Each control triple is three little-endian 64-bit values:
//   add  (u64): bytes out[i] = diff[j] + base[old_pos] for the next `add` bytes
//   copy (u64): then `copy` bytes taken verbatim from extra
//   seek (i64): then old_pos moves by `seek`
inline constexpr size_t kBsdiffTripleSize = 24;

struct BsdiffStreams {
  std::string ctrl;
  std::string diff;
  std::string extra;
};

// Fails only for inputs divsufsort cannot index (>= 2 GiB) or out of memory.
absl::StatusOr<BsdiffStreams> BsdiffCompute(std::string_view base, std::string_view target);

}  // namespace d4c::codec_internal
