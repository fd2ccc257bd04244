// libFuzzer target for the bsdiff codec's decoder (modes: codec_fuzz.h).
#include "codec_fuzz.h"

namespace {

// The patch header carries a 64-bit hash of the target; level-19 encoding
// keeps inputs small.
constexpr d4c::fuzz::CodecFuzzSpec kSpec{d4c::CodecId::kBsdiff, 16 << 10, /*strong_checksum=*/true};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return d4c::fuzz::FuzzCodec(kSpec, data, size);
}
