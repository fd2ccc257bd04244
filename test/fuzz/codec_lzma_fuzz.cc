// libFuzzer target for the lzma codec's decoder (codec id 7; modes:
// codec_fuzz.h).
#include "codec_fuzz.h"

namespace {

// The CRC32 of the target after the stream is not fooled by small edits.
constexpr d4c::fuzz::CodecFuzzSpec kSpec{d4c::CodecId::kLzma, 16 << 10, /*strong_checksum=*/true};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return d4c::fuzz::FuzzCodec(kSpec, data, size);
}
