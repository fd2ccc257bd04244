// 64-bit content checksum (the XXH64 algorithm) used by the bsdiff container so
// that a wrong base or a damaged patch is reported instead of returning bytes.
#pragma once

#include <cstdint>
#include <string_view>

namespace d4c::codec_internal {

uint64_t Hash64(std::string_view data, uint64_t seed = 0);

}  // namespace d4c::codec_internal
