// exe_adjust_bench: how much smaller bsdiff's patch of a rebuilt x86-64
// executable gets when the base's absolute references are first moved to
// where their targets went (Courgette's "adjustment"): the measurement behind
// bsdiff's adjusted x86 form (issue 15, debian-python's python3.11).
//
//   exe_adjust_bench BASE TARGET
//
// Both files in bsdiff's x86 code form (calls and RIP-relative operands as
// absolute positions, x86_code.h). The map "old file offset -> new file
// offset" is read from bsdiff's own match blocks between the two (each add
// block of the control stream copies old[o, o + n) to new[p, p + n)); the
// base then gets, as far as the map knows the target:
//   - every operand the transform rewrote, moved to its target's new place;
//   - (ET_EXEC files, whose data holds absolute addresses) every aligned
//     8-byte word outside the code segment that points into a loaded
//     segment, moved likewise.
// Printed: the x86 form's patch, the codec's (the smallest of its forms,
// since 2026-12-05 with the adjusted one, docs/format.md form 2), this
// probe's bsdiff on the adjusted base with a new scan (the map a decoder
// would need is not counted: it is the first scan's), and, with the first
// scan's blocks kept, the zstd -19 size of the diff stream against the base
// as it is and as adjusted. The probe's patches are not meant to be stored.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bsdiff_codec.h"
#include "bsdiff_diff.h"
#include "d4c/base/zstd.h"
#include "d4c/codec.h"
#include "x86_code.h"

namespace {

using d4c::codec_internal::X86Operand;
using d4c::codec_internal::X86Span;

bool ReadFile(const char* path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

uint64_t Le(const std::string& b, uint64_t at, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = v << 8 | static_cast<uint8_t>(b[at + k]);
  return v;
}

struct Segment {
  uint64_t offset, vaddr, filesz;
  bool exec;
};

// PT_LOAD segments of a little-endian ELF64 file (checked by X86_64CodeSpan).
std::vector<Segment> Loads(const std::string& f) {
  std::vector<Segment> out;
  uint64_t phoff = Le(f, 0x20, 8), es = Le(f, 0x36, 2), n = Le(f, 0x38, 2);
  for (uint64_t k = 0; k < n && phoff + (k + 1) * es <= f.size(); ++k) {
    uint64_t h = phoff + k * es;
    if (Le(f, h, 4) != 1) continue;
    out.push_back({Le(f, h + 8, 8), Le(f, h + 16, 8), Le(f, h + 32, 8), (Le(f, h + 4, 4) & 1) != 0});
  }
  return out;
}

std::optional<uint64_t> VaddrToOffset(uint64_t v, const std::vector<Segment>& s) {
  for (const Segment& g : s)
    if (v >= g.vaddr && v - g.vaddr < g.filesz) return g.offset + (v - g.vaddr);
  return std::nullopt;
}
std::optional<uint64_t> OffsetToVaddr(uint64_t o, const std::vector<Segment>& s) {
  for (const Segment& g : s)
    if (o >= g.offset && o - g.offset < g.filesz) return g.vaddr + (o - g.offset);
  return std::nullopt;
}
// vaddr - offset of the code segment: the transform's absolute positions are
// file offsets as the code segment maps them.
int64_t CodeDelta(const std::vector<Segment>& s) {
  for (const Segment& g : s)
    if (g.exec) return static_cast<int64_t>(g.vaddr - g.offset);
  return 0;
}

struct Block {
  uint64_t old_start, length, new_start;
};

// Add blocks of a control stream, sorted by old position.
std::vector<Block> BlocksOf(const std::vector<d4c::codec_internal::BsdiffTriple>& ctrl) {
  std::vector<Block> out;
  uint64_t oldpos = 0, newpos = 0;
  for (const auto& t : ctrl) {
    if (t.add > 0) out.push_back({oldpos, t.add, newpos});
    oldpos += t.add;
    newpos += t.add + t.copy;
    oldpos = static_cast<uint64_t>(static_cast<int64_t>(oldpos) + t.seek);
  }
  std::sort(out.begin(), out.end(), [](const Block& a, const Block& b) { return a.old_start < b.old_start; });
  return out;
}

std::optional<uint64_t> MapOffset(const std::vector<Block>& blocks, uint64_t o) {
  auto it = std::upper_bound(blocks.begin(), blocks.end(), o,
                             [](uint64_t v, const Block& b) { return v < b.old_start; });
  for (int k = 0; k < 8 && it != blocks.begin(); ++k) {
    --it;
    if (o - it->old_start < it->length) return it->new_start + (o - it->old_start);
  }
  return std::nullopt;
}

struct Counts {
  uint64_t operands = 0, moved = 0, unmapped = 0, words = 0;
};

// The base (already in the x86 form, `ops` its operands) with its references
// moved along `blocks`.
std::string Adjust(std::string a, const std::vector<X86Operand>& ops, const std::vector<Segment>& la,
                   const std::vector<Segment>& lb, const std::vector<Block>& blocks, bool exec_file,
                   X86Span span, Counts* c) {
  const int64_t da = CodeDelta(la), db = CodeDelta(lb);
  auto move = [&](uint64_t vaddr) -> std::optional<uint64_t> {
    auto o = VaddrToOffset(vaddr, la);
    if (!o) return std::nullopt;
    auto n = MapOffset(blocks, *o);
    if (!n) return std::nullopt;
    return OffsetToVaddr(*n, lb);
  };
  c->operands = ops.size();
  for (const X86Operand& op : ops) {
    uint32_t v = static_cast<uint32_t>(Le(a, op.pos, 4));
    uint64_t pos = op.call ? (v & 0x01FFFFFF) : v;  // files under 16 MiB: calls keep 25 bits
    auto nv = move(static_cast<uint64_t>(static_cast<int64_t>(pos) + da));
    if (!nv) {
      ++c->unmapped;
      continue;
    }
    uint64_t np = static_cast<uint64_t>(static_cast<int64_t>(*nv) - db);
    uint32_t w = op.call ? static_cast<uint32_t>((np & 0x00FFFFFF) | ((np & 0x01000000) ? 0xFF000000 : 0))
                         : static_cast<uint32_t>(np);
    if (w != v) {
      std::memcpy(a.data() + op.pos, &w, 4);
      ++c->moved;
    }
  }
  if (!exec_file) return a;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const Segment& g : la) lo = std::min(lo, g.vaddr), hi = std::max(hi, g.vaddr + g.filesz);
  for (uint64_t off = 0; off + 8 <= a.size(); off += 8) {
    if (off >= span.start && off < span.start + span.size) continue;
    uint64_t v = Le(a, off, 8);
    if (v < lo || v >= hi) continue;
    auto nv = move(v);
    if (nv && *nv != v) {
      std::memcpy(a.data() + off, &*nv, 8);
      ++c->words;
    }
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace d4c;
  using namespace d4c::codec_internal;
  if (argc != 3) {
    std::fprintf(stderr, "usage: exe_adjust_bench BASE TARGET\n");
    return 2;
  }
  std::string a, b;
  if (!ReadFile(argv[1], &a) || !ReadFile(argv[2], &b)) {
    std::fprintf(stderr, "exe_adjust_bench: cannot read %s or %s\n", argv[1], argv[2]);
    return 2;
  }
  auto sa = X86_64CodeSpan(a), sb = X86_64CodeSpan(b);
  if (!sa || !sb) {
    std::fprintf(stderr, "exe_adjust_bench: both files must be x86-64 ELF files with code\n");
    return 2;
  }
  auto today = GetCodec(CodecId::kBsdiff).Encode(a, b);  // the smallest form, the adjusted one included
  auto x86_form = BsdiffCodec().EncodeX86(a, b, *sa, *sb, NoHelpers(), UINT64_MAX);
  if (!today.ok() || !x86_form.ok()) {
    std::fprintf(stderr, "exe_adjust_bench: %s\n",
                 (today.ok() ? x86_form.status() : today.status()).ToString().c_str());
    return 1;
  }
  std::string a_abs = a, b_abs = b;
  std::vector<X86Operand> ops = X86ToAbsoluteOperands(a_abs, *sa);
  X86ToAbsolute(b_abs, *sb);
  auto first = BsdiffCompute(a_abs, b_abs);
  if (!first.ok()) {
    std::fprintf(stderr, "exe_adjust_bench: %s\n", first.status().ToString().c_str());
    return 1;
  }
  std::vector<Block> blocks = BlocksOf(first->ctrl);
  std::vector<Segment> la = Loads(a), lb = Loads(b);
  Counts c;
  const bool exec_file = Le(a, 16, 2) == 2;  // ET_EXEC: absolute addresses in data
  std::string adjusted = Adjust(a_abs, ops, la, lb, blocks, exec_file, *sa, &c);
  // A new scan of the adjusted base; the result is a plain patch between two
  // files already in the x86 form (the codec's x86 form of them would
  // transform twice and lose).
  auto rescan = GetCodec(CodecId::kBsdiff).Encode(adjusted, b_abs);
  if (!rescan.ok()) {
    std::fprintf(stderr, "exe_adjust_bench: %s\n", rescan.status().ToString().c_str());
    return 1;
  }
  auto z_before = ZstdCompressFrame(BsdiffDiffStream(first->ctrl, a_abs, b_abs), 19, 0);
  auto z_after = ZstdCompressFrame(BsdiffDiffStream(first->ctrl, adjusted, b_abs), 19, 0);
  if (!z_before.ok() || !z_after.ok()) return 1;
  std::printf("operands=%lu moved=%lu unmapped=%lu data_words_moved=%lu blocks=%zu %s\n",
              static_cast<unsigned long>(c.operands), static_cast<unsigned long>(c.moved),
              static_cast<unsigned long>(c.unmapped), static_cast<unsigned long>(c.words), blocks.size(),
              exec_file ? "ET_EXEC" : "ET_DYN");
  std::printf("x86_form=%zu codec=%zu (%.1f%%) probe_adjusted_rescan=%zu (%.1f%%)\n", x86_form->size(),
              today->size(), 100.0 * (static_cast<double>(today->size()) / static_cast<double>(x86_form->size()) - 1),
              rescan->size(),
              100.0 * (static_cast<double>(rescan->size()) / static_cast<double>(x86_form->size()) - 1));
  std::printf("same_blocks_diff_zstd19 before=%zu after=%zu (%+ld bytes)\n", z_before->size(), z_after->size(),
              static_cast<long>(z_after->size()) - static_cast<long>(z_before->size()));
  return 0;
}
