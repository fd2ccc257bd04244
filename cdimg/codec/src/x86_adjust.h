// The adjusted x86 code form of bsdiff (docs/format.md, "The x86 code form",
// form 2): before the patch is applied, every absolute reference of the base
// (the x86 form's call and RIP-relative operands, and in ET_EXEC files the
// aligned pointers outside the code) is moved to where its target went, so
// that it equals the new file's reference (Courgette's "adjustment").
//
// Where a target went is read from the patch's own control stream: each add
// block copies old[o, o + n) to new[p, p + n), so an old position inside it
// moved by p - o. Nothing else is stored but the target's PT_LOAD table (the
// decoder needs the new file's address layout before the file exists).
// Encoder and decoder compute the same map from the same control stream, so
// the adjustment is part of the patch format: any change here changes what
// stored patches decode to.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bsdiff_diff.h"
#include "x86_code.h"

namespace d4c::codec_internal {

// A PT_LOAD segment: file bytes [offset, offset + filesz) at vaddr.
struct LoadSegment {
  uint64_t offset = 0, vaddr = 0, filesz = 0;
  bool exec = false;
  bool operator==(const LoadSegment&) const = default;
};

struct ElfLayout {
  std::vector<LoadSegment> loads;  // file order
  bool exec_file = false;          // ET_EXEC: data holds absolute addresses
  bool operator==(const ElfLayout&) const = default;
};

// At most this many PT_LOAD segments are used (real files have 2-5).
inline constexpr size_t kMaxLoads = 16;

// The layout of a little-endian ELF64 file, or nullopt if its program
// headers are missing, malformed, out of the file or too many.
std::optional<ElfLayout> ParseElfLayout(std::string_view file);

// The record stored after the x86 spans: varint count, then per segment
// varint offset, vaddr, filesz and a byte exec (0/1). ParseLayoutRecord
// advances *pos and checks the counts and values it reads.
void PutLayoutRecord(std::string* out, const ElfLayout& layout);
bool ParseLayoutRecord(std::string_view in, size_t* pos, ElfLayout* layout);

// How many blocks before the one found a MoveMap lookup checks for one
// covering the position (blocks may overlap in the base: one old region
// copied twice).
inline constexpr int kLookBack = 8;

// The add blocks of a control stream, as a map from old to new positions.
class MoveMap {
 public:
  // Fails (nullopt) if a block leaves the base or the target: such a
  // control stream is refused by the patcher anyway.
  static std::optional<MoveMap> FromCtrl(const std::vector<BsdiffTriple>& ctrl, uint64_t base_size,
                                         uint64_t target_size);
  // Where old position `o` went, if an add block covers it.
  std::optional<uint64_t> Map(uint64_t o) const;

 private:
  struct Block {
    uint64_t old_start, length, new_start;
  };
  std::vector<Block> blocks_;  // by old_start
  uint64_t max_length_ = 0;
};

// Moves the references of `base_abs` (the base in the x86 form, `ops` its
// rewritten operands, `span` its code span) along `map`, from the base's
// layout `a` to the target's `b`. Deterministic; touches only operands and,
// if a.exec_file, aligned 8-byte words outside `span`.
// The work runs in parts on `helpers` (disjoint bytes; the same result).
void AdjustBase(std::string& base_abs, const std::vector<X86Operand>& ops, X86Span span, const ElfLayout& a,
                const ElfLayout& b, const MoveMap& map, Helpers& helpers = NoHelpers());

}  // namespace d4c::codec_internal
