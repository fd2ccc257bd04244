// libFuzzer target for the relcopy codec's decoder. Modes, picked by the
// first input byte:
//   raw:     [1 flag][3 target_size][2 base_len][base][patch]  decode arbitrary bytes
//            (flag bit 1: as a pack member, else as a standalone patch)
//   mutated: [1 flag][2 pos][1 xor][2 base_len][base][target] encode, flip one
//            byte of the patch, decode: reaches far deeper than random patches.
//            Flag bit 1 encodes the pack form (raw instructions, no checksum).
// Either way a decode must fail or return exactly target_size bytes, and an
// unmodified patch must reproduce the target. Where the codec's own checksum
// is strong, a flipped patch must also never yield different bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "d4c/codec.h"

namespace {

constexpr d4c::CodecId kCodec = d4c::CodecId::kRelcopy;
constexpr uint64_t kMaxTarget = 1 << 20;  // bounded, as the format's caller would
constexpr size_t kMaxEncode = 16 << 10;   // keeps level-19 encoding per input fast

// The standalone form's header holds a 64-bit hash of the target; the pack
// form has none (the cdimg checks each file's sha256).

uint32_t Le(const uint8_t* p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void Raw(std::string_view base, std::string_view patch, uint64_t target_size, bool pack) {
  auto out = d4c::GetCodec(kCodec).DecodeForm(base, patch, target_size, pack);
  if (out.ok()) Check(out->size() == target_size);
}

void Mutated(std::string_view base, std::string_view target, uint32_t pos, uint8_t x, bool pack) {
  if (base.size() + target.size() > kMaxEncode) return;
  const d4c::DeltaCodec& codec = d4c::GetCodec(kCodec);
  const bool strong_checksum = !pack;
  auto patch = pack ? codec.EncodeForPack(base, target) : codec.Encode(base, target);
  Check(patch.ok());
  if (x != 0 && !patch->empty()) (*patch)[pos % patch->size()] ^= static_cast<char>(x);
  auto out = codec.DecodeForm(base, *patch, target.size(), pack);
  if (x == 0) Check(out.ok() && *out == target);
  if (out.ok()) Check(out->size() == target.size() && (*out == target || !strong_checksum));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
  std::string_view rest(reinterpret_cast<const char*>(data) + 6, size - 6);
  std::string_view base = rest.substr(0, base_len), tail = rest.substr(base_len);
  if (data[0] & 1) {
    Mutated(base, tail, Le(data + 1, 2), data[3], data[0] & 2);
  } else {
    Raw(base, tail, Le(data + 1, 3) % (kMaxTarget + 1), data[0] & 2);
  }
  return 0;
}
