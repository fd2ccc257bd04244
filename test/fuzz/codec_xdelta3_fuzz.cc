// libFuzzer target for the xdelta3 codec's decoder (modes: codec_fuzz.h).
#include "codec_fuzz.h"

namespace {

// VCDIFF checks each window with Adler-32, which small rearrangements fool
// (the fuzzer finds such flips within seconds); the cdimg index's sha256
// catches those, so here only the size guarantee is enforced for flips.
constexpr d4c::fuzz::CodecFuzzSpec kSpec{d4c::CodecId::kXdelta3, 64 << 10, /*strong_checksum=*/false};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return d4c::fuzz::FuzzCodec(kSpec, data, size);
}
