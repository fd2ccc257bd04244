// x86-64 code transform for bsdiff (docs/format.md, "The x86 code form").
//
// When a compiler moves code, every relative reference that crosses the move
// changes its 32-bit displacement, although the code around it is the same:
// bsdiff then stores thousands of scattered small differences. Rewriting the
// displacements as absolute positions (displacement + offset of the next
// instruction in the file) before diffing makes a reference to an unmoved
// target the same bytes in both versions, wherever the instruction moved.
// xz's x86 BCJ filter does this for E8/E9 (call/jmp); liblzma offers it only
// as a stage of its own compressed streams (lzma_raw_encoder), not as a
// transform of a buffer, so the transform is written here, also covering
// RIP-relative memory operands, which BCJ leaves alone. Jumps (E9) stay
// relative: most stay inside their function, whose internal distances do not
// change when it moves (debian-python corpus, system bsdiff on transformed
// files, E8+E9 instead of E8: python3.11 +1.4% patch bytes; libcrypto, perl
// and libapt-pkg +5% to +18%).
//
// Which bytes are rewritten, scanning left to right from span.start:
//   E8 rel32 (call) whose fourth displacement byte is 0x00 or 0xFF
//   (|rel| < 16 MiB): the 4 bytes become the low 25 bits of rel + next,
//   sign-extended from bit 24, so the fourth byte stays 0x00 or 0xFF;
//   [REX] op modrm disp32 and [REX] 0F op modrm disp32 with a modrm of
//   mod 00 rm 101 (RIP-relative) and op one of kRipOps / kRip0FOps below: the
//   4 bytes become disp + next, modulo 2^32;
// after a rewrite the scan continues after the 4 bytes. The scan never
// rewrites a byte that an earlier position left unchanged had looked at (its
// decision bytes), so the inverse scan sees the same decisions: the transform
// is a bijection on every buffer and every span, and ToRelative(ToAbsolute(x))
// == x for all bytes (tested and fuzzed).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "d4c/codec.h"

namespace d4c::codec_internal {

struct X86Span {
  uint64_t start = 0;
  uint64_t size = 0;
};

// The file range from the first to the end of the last executable section
// (SHF_EXECINSTR, not NOBITS) of a little-endian ELF64 file for x86-64
// (e_machine 62); nullopt for anything else or a malformed header.
std::optional<X86Span> X86_64CodeSpan(std::string_view file);

// In place, on data[span]; span must lie within data (callers check). The
// scan is split into parts of about `part_bytes` (at most kX86MaxParts)
// at points where its state is known from the bytes around them alone, run
// as tasks on `helpers`: the bytes do not depend on the split.
inline constexpr uint64_t kX86PartBytes = 2 << 20;
inline constexpr uint64_t kX86MaxParts = 16;
void X86ToAbsolute(std::string& data, X86Span span, Helpers& helpers = NoHelpers(),
                   uint64_t part_bytes = kX86PartBytes);
void X86ToRelative(std::string& data, X86Span span, Helpers& helpers = NoHelpers(),
                   uint64_t part_bytes = kX86PartBytes);

// A 4-byte operand the transform rewrote: at `pos`, a call's (the low 25
// bits of an absolute position, sign-extended) or a RIP-relative operand's
// (an absolute position modulo 2^32).
struct X86Operand {
  uint64_t pos = 0;
  bool call = false;
  bool operator==(const X86Operand&) const = default;
};
// X86ToAbsolute (the same bytes, in the same parts), returning the operands
// it rewrote in file order: the adjusted form (x86_adjust.h) moves them to
// where their targets went.
std::vector<X86Operand> X86ToAbsoluteOperands(std::string& data, X86Span span, Helpers& helpers = NoHelpers(),
                                              uint64_t part_bytes = kX86PartBytes);

}  // namespace d4c::codec_internal
