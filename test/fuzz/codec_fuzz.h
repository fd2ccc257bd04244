// The shared body of the codec fuzz targets (codec_*_fuzz.cc). Modes, picked
// by the first input byte:
//   raw:     [1 flag][3 target_size][2 base_len][base][patch]  decode arbitrary bytes
//   mutated: [1 flag][2 pos][1 xor][2 base_len][base][target] encode, flip one
//            byte of the patch, decode: reaches far deeper than random patches.
// Flag bit 1 uses the pack form (EncodeForPack / DecodeFromPack), as a cdimg
// does for packed members; with bit 2 as well, mutated mode encodes the raw
// pack form (EncodeRawForPack) where the codec has one. Either way a decode must fail or return exactly
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
                    uint8_t x, bool pack, bool raw) {
  if (base.size() + target.size() > spec.max_encode) return;
  const DeltaCodec& codec = GetCodec(spec.codec);
  auto patch = !pack ? codec.Encode(base, target)
               : raw ? codec.EncodeRawForPack(base, target, NoHelpers())
                     : codec.EncodeForPack(base, target);
  if (raw && absl::IsUnimplemented(patch.status())) return;
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
    Mutated(spec, base, tail, Le(data + 1, 2), data[3], pack, data[0] & 4);
  } else {
    Raw(spec, base, tail, Le(data + 1, 3) % (kMaxTarget + 1), pack);
  }
  return 0;
}

// `body` wrapped as a minimal x86-64 ET_EXEC file: ELF header, two PT_LOAD
// segments (the first half of the body executable, at 0x400000 with the
// headers; the second half at 0x600000), and a section table whose one
// section, the first half, is code. For the adjusted x86 form, which needs
// program headers and a code span.
inline std::string MinimalElf(std::string_view body) {
  const uint64_t head = 64 + 2 * 56, half = body.size() / 2;
  std::string f(head, '\0');
  auto put = [&f](size_t at, uint64_t v, int n) {
    for (int k = 0; k < n; ++k) f[at + k] = static_cast<char>(v >> (8 * k));
  };
  f.replace(0, 4, "\x7f" "ELF");
  put(4, 2, 1), put(5, 1, 1), put(6, 1, 1);
  put(16, 2, 2), put(18, 62, 2), put(20, 1, 4);
  put(0x20, 64, 8), put(0x28, head + body.size(), 8);
  put(0x34, 64, 2), put(0x36, 56, 2), put(0x38, 2, 2), put(0x3A, 64, 2), put(0x3C, 2, 2);
  put(64, 1, 4), put(68, 5, 4), put(72, 0, 8), put(80, 0x400000, 8), put(96, head + half, 8), put(104, head + half, 8);
  put(120, 1, 4), put(124, 6, 4), put(128, head + half, 8), put(136, 0x600000 + head + half, 8);
  put(152, body.size() - half, 8), put(160, body.size() - half, 8);
  f += body;
  std::string sh(128, '\0');
  auto put_sh = [&sh](size_t at, uint64_t v, int n) {
    for (int k = 0; k < n; ++k) sh[at + k] = static_cast<char>(v >> (8 * k));
  };
  put_sh(64 + 4, 1, 4), put_sh(64 + 8, 6, 8), put_sh(64 + 0x18, head, 8), put_sh(64 + 0x20, half, 8);
  return f + sh;
}

}  // namespace d4c::fuzz
