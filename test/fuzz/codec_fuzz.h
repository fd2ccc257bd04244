// The shared body of the codec fuzz targets (codec_*_fuzz.cc). Modes, picked
// by the first input byte:
//   raw:     [1 flag][3 target_size][2 base_len][base][patch]  decode arbitrary bytes
//   mutated: [1 flag][2 pos][1 xor][2 base_len][base][target] encode, flip one
//            byte of the patch, decode: reaches far deeper than random patches.
// Flag bit 1 uses the pack form (EncodeForPack / DecodeFromPack), as a cdimg
// does for packed members. Either way a decode must fail or return exactly
// target_size bytes, and an unmodified patch must reproduce the target. Where
// the codec's own checksum is strong, a flipped standalone patch must also
// never yield different bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "d4c/codec.h"

namespace d4c::fuzz {

struct CodecFuzzSpec {
  CodecId codec;
  size_t max_encode;         // base + target bytes to encode per input, for speed
  bool strong_checksum;      // of the standalone form
};

inline constexpr uint64_t kMaxTarget = 1 << 20;  // bounded, as the format's caller would

inline uint32_t Le(const uint8_t* p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline void Check(bool ok) {
  if (!ok) __builtin_trap();
}

inline void Raw(const CodecFuzzSpec& spec, std::string_view base, std::string_view patch, uint64_t target_size,
                bool pack) {
  auto out = GetCodec(spec.codec).DecodeForm(base, patch, target_size, pack);
  if (out.ok()) Check(out->size() == target_size);
}

inline void Mutated(const CodecFuzzSpec& spec, std::string_view base, std::string_view target, uint32_t pos,
                    uint8_t x, bool pack) {
  if (base.size() + target.size() > spec.max_encode) return;
  const DeltaCodec& codec = GetCodec(spec.codec);
  auto patch = pack ? codec.EncodeForPack(base, target) : codec.Encode(base, target);
  Check(patch.ok());
  if (x != 0 && !patch->empty()) (*patch)[pos % patch->size()] ^= static_cast<char>(x);
  auto out = codec.DecodeForm(base, *patch, target.size(), pack);
  if (x == 0) Check(out.ok() && *out == target);
  // A pack member has no checksum of its own: the cdimg's sha256 checks it.
  bool strong = spec.strong_checksum && !pack;
  if (out.ok()) Check(out->size() == target.size() && (*out == target || !strong));
}

inline int FuzzCodec(const CodecFuzzSpec& spec, const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
  std::string_view rest(reinterpret_cast<const char*>(data) + 6, size - 6);
  std::string_view base = rest.substr(0, base_len), tail = rest.substr(base_len);
  bool pack = data[0] & 2;
  if (data[0] & 1) {
    Mutated(spec, base, tail, Le(data + 1, 2), data[3], pack);
  } else {
    Raw(spec, base, tail, Le(data + 1, 3) % (kMaxTarget + 1), pack);
  }
  return 0;
}

}  // namespace d4c::fuzz
