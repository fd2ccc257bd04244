// libFuzzer target for the zstd codec's decoder (modes: codec_fuzz.h).
#include "codec_fuzz.h"

namespace {

// The frame checksum (XXH64, 32 bits kept) is not fooled by small edits.
constexpr d4c::fuzz::CodecFuzzSpec kSpec{d4c::CodecId::kZstd, 16 << 10, /*strong_checksum=*/true};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return d4c::fuzz::FuzzCodec(kSpec, data, size);
}
