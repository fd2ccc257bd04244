#include "x86_code.h"

#include <algorithm>

#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

// One-byte opcodes taking a modrm and no immediate, with a register or
// memory operand: add/or/and/sub/xor/cmp, test, xchg, mov, lea.
bool IsRipOp(uint8_t op) {
  switch (op) {
    case 0x01: case 0x03: case 0x09: case 0x0B: case 0x21: case 0x23: case 0x29: case 0x2B:
    case 0x31: case 0x33: case 0x38: case 0x39: case 0x3A: case 0x3B: case 0x84: case 0x85:
    case 0x87: case 0x88: case 0x89: case 0x8A: case 0x8B: case 0x8D:
      return true;
    default:
      return false;
  }
}

// 0F-prefixed ones: SSE moves and arithmetic, movzx/movsx.
bool IsRip0FOp(uint8_t op) {
  switch (op) {
    case 0x10: case 0x11: case 0x28: case 0x29: case 0x2E: case 0x2F: case 0x54: case 0x57:
    case 0x58: case 0x59: case 0x5C: case 0x5E: case 0x6E: case 0x6F: case 0x7E: case 0x7F:
    case 0xB6: case 0xB7: case 0xBE: case 0xBF: case 0xD6:
      return true;
    default:
      return false;
  }
}

uint32_t Get32(const std::string& b, uint64_t i) {
  return static_cast<uint32_t>(GetLE(b.data() + i, 4));
}

void Put32(std::string& b, uint64_t i, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[i + k] = static_cast<char>(v >> (8 * k));
}

void Transform(std::string& b, X86Span span, bool to_absolute) {
  const uint64_t end = span.start + span.size;
  auto at = [&](uint64_t k) { return static_cast<uint8_t>(b[k]); };
  // The last byte that a position left unchanged looked at: nothing at or
  // before it may be rewritten, or the inverse would decide differently.
  int64_t guard = -1;
  auto free_from = [&](uint64_t first) { return static_cast<int64_t>(first) > guard; };
  uint64_t i = span.start;
  while (i + 5 <= end) {
    const uint8_t op = at(i);
    if (op == 0xE8) {
      const uint8_t high = at(i + 4);
      if ((high == 0x00 || high == 0xFF) && free_from(i + 1)) {
        uint32_t next = static_cast<uint32_t>(i + 5);
        uint32_t v = Get32(b, i + 1);
        v = to_absolute ? v + next : v - next;
        v = (v & 0x00FFFFFF) | ((v & 0x01000000) ? 0xFF000000 : 0);
        Put32(b, i + 1, v);
        i += 5;
        continue;
      }
      guard = std::max<int64_t>(guard, static_cast<int64_t>(i + 4));
      ++i;
      continue;
    }
    // [REX] op modrm disp32 or [REX] 0F op modrm disp32; i + 5 <= end keeps
    // every byte read here (up to i + 3) inside the span.
    uint64_t k = (op & 0xF0) == 0x40 ? i + 1 : i;
    uint64_t modrm, read;
    bool known;
    if (at(k) == 0x0F) {
      known = IsRip0FOp(at(k + 1));
      modrm = k + 2;
      read = known ? modrm : k + 1;
    } else {
      known = IsRipOp(at(k));
      modrm = k + 1;
      read = known ? modrm : k;
    }
    if (known && (at(modrm) & 0xC7) == 0x05 && modrm + 5 <= end && free_from(modrm + 1)) {
      uint32_t next = static_cast<uint32_t>(modrm + 5);
      uint32_t v = Get32(b, modrm + 1);
      Put32(b, modrm + 1, to_absolute ? v + next : v - next);
      i = modrm + 5;
      continue;
    }
    guard = std::max<int64_t>(guard, static_cast<int64_t>(read));
    ++i;
  }
}

}  // namespace

std::optional<X86Span> X86_64CodeSpan(std::string_view f) {
  constexpr uint64_t kEhdrSize = 64, kShdrSize = 64;
  constexpr uint32_t kNobits = 8;
  constexpr uint64_t kExecInstr = 4;
  constexpr uint16_t kX86_64 = 62;
  if (f.size() < kEhdrSize || f.substr(0, 4) != std::string_view("\x7f" "ELF", 4)) return std::nullopt;
  if (f[4] != 2 || f[5] != 1) return std::nullopt;  // ELFCLASS64, little endian
  if (GetLE(f.data() + 18, 2) != kX86_64) return std::nullopt;
  uint64_t shoff = GetLE(f.data() + 0x28, 8);
  uint64_t shentsize = GetLE(f.data() + 0x3A, 2), shnum = GetLE(f.data() + 0x3C, 2);
  if (shentsize != kShdrSize || shoff > f.size() || shnum > (f.size() - shoff) / kShdrSize) return std::nullopt;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (uint64_t s = 0; s < shnum; ++s) {
    const char* h = f.data() + shoff + s * kShdrSize;
    if (GetLE(h + 4, 4) == kNobits || !(GetLE(h + 8, 8) & kExecInstr)) continue;
    uint64_t off = GetLE(h + 0x18, 8), size = GetLE(h + 0x20, 8);
    if (size == 0 || off > f.size() || size > f.size() - off) continue;
    lo = std::min(lo, off);
    hi = std::max(hi, off + size);
  }
  if (lo >= hi) return std::nullopt;
  return X86Span{lo, hi - lo};
}

void X86ToAbsolute(std::string& data, X86Span span) { Transform(data, span, true); }
void X86ToRelative(std::string& data, X86Span span) { Transform(data, span, false); }

}  // namespace d4c::codec_internal
