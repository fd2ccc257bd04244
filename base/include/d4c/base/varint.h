// Integer encodings of the codecs' patch formats: LEB128 varints (7 bits per
// byte, low first) and fixed-width little-endian fields.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace d4c::codec_internal {

inline void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

inline int VarintLen(uint64_t v) {
  int n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}

// Reads a varint of at most 64 bits at *pos; false if truncated or overlong.
inline bool GetVarint(std::string_view in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return false;
    uint8_t c = static_cast<uint8_t>(in[(*pos)++]);
    if (shift == 63 && c > 1) return false;
    *v |= static_cast<uint64_t>(c & 0x7f) << shift;
    if (c < 0x80) return true;
  }
  return false;
}

// The low n bytes of v, least significant first.
inline void PutLE(std::string* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

inline uint64_t GetLE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace d4c::codec_internal
