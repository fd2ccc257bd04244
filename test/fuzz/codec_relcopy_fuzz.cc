// libFuzzer target for the relcopy codec's decoder (modes: codec_fuzz.h).
#include "codec_fuzz.h"

namespace {

// The standalone form carries a 64-bit hash of the target; the pack form
// none (each form is read only as itself: see codec_relcopy_test.cc).
constexpr d4c::fuzz::CodecFuzzSpec kSpec{d4c::CodecId::kRelcopy, 16 << 10, /*strong_checksum=*/true};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return d4c::fuzz::FuzzCodec(kSpec, data, size);
}
