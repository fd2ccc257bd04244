#include "x86_adjust.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "d4c/base/memory.h"
#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

// Blocks a map may hold: far above any real patch (biome's 28 MB binary:
// 135 k), low enough that a hostile control stream cannot make the decoder
// allocate more than ~400 MB for it.
constexpr size_t kMaxBlocks = size_t{1} << 24;

std::optional<uint64_t> VaddrToOffset(uint64_t v, const ElfLayout& l) {
  for (const LoadSegment& s : l.loads)
    if (v >= s.vaddr && v - s.vaddr < s.filesz) return s.offset + (v - s.vaddr);
  return std::nullopt;
}

std::optional<uint64_t> OffsetToVaddr(uint64_t o, const ElfLayout& l) {
  for (const LoadSegment& s : l.loads)
    if (o >= s.offset && o - s.offset < s.filesz) return s.vaddr + (o - s.offset);
  return std::nullopt;
}

// vaddr - offset of the first executable segment: the x86 form's absolute
// positions are file positions as that segment maps them.
std::optional<uint64_t> CodeDelta(const ElfLayout& l) {
  for (const LoadSegment& s : l.loads)
    if (s.exec) return s.vaddr - s.offset;  // modulo 2^64, undone by the same addition
  return std::nullopt;
}

uint32_t Get32(const std::string& b, uint64_t i) {
  uint32_t v;
  std::memcpy(&v, b.data() + i, 4);
  return v;
}

}  // namespace

std::optional<ElfLayout> ParseElfLayout(std::string_view f) {
  constexpr uint64_t kEhdrSize = 64, kPhdrSize = 56;
  constexpr uint32_t kPtLoad = 1, kPfX = 1;
  if (f.size() < kEhdrSize || f.substr(0, 4) != std::string_view("\x7f" "ELF", 4)) return std::nullopt;
  if (f[4] != 2 || f[5] != 1) return std::nullopt;  // ELFCLASS64, little endian
  uint64_t phoff = GetLE(f.data() + 0x20, 8);
  uint64_t phentsize = GetLE(f.data() + 0x36, 2), phnum = GetLE(f.data() + 0x38, 2);
  if (phentsize != kPhdrSize || phoff > f.size() || phnum > (f.size() - phoff) / kPhdrSize) return std::nullopt;
  ElfLayout l;
  l.exec_file = GetLE(f.data() + 16, 2) == 2;  // ET_EXEC
  for (uint64_t k = 0; k < phnum; ++k) {
    const char* h = f.data() + phoff + k * kPhdrSize;
    if (GetLE(h, 4) != kPtLoad) continue;
    LoadSegment s{GetLE(h + 8, 8), GetLE(h + 16, 8), GetLE(h + 32, 8), (GetLE(h + 4, 4) & kPfX) != 0};
    if (s.offset > f.size() || s.filesz > f.size() - s.offset) return std::nullopt;
    if (l.loads.size() == kMaxLoads) return std::nullopt;
    l.loads.push_back(s);
  }
  if (l.loads.empty()) return std::nullopt;
  return l;
}

void PutLayoutRecord(std::string* out, const ElfLayout& l) {
  PutVarint(out, l.loads.size());
  for (const LoadSegment& s : l.loads) {
    PutVarint(out, s.offset);
    PutVarint(out, s.vaddr);
    PutVarint(out, s.filesz);
    out->push_back(s.exec ? 1 : 0);
  }
}

bool ParseLayoutRecord(std::string_view in, size_t* pos, ElfLayout* l) {
  uint64_t n;
  if (!GetVarint(in, pos, &n) || n == 0 || n > kMaxLoads) return false;
  l->loads.clear();
  for (uint64_t k = 0; k < n; ++k) {
    LoadSegment s;
    if (!GetVarint(in, pos, &s.offset) || !GetVarint(in, pos, &s.vaddr) || !GetVarint(in, pos, &s.filesz))
      return false;
    if (*pos >= in.size()) return false;
    uint8_t e = static_cast<uint8_t>(in[(*pos)++]);
    if (e > 1) return false;
    s.exec = e == 1;
    l->loads.push_back(s);
  }
  return true;
}

std::optional<MoveMap> MoveMap::FromCtrl(const std::vector<BsdiffTriple>& ctrl, uint64_t base_size,
                                         uint64_t target_size) {
  MoveMap m;
  // One block per triple with an add, written right away: allocated once and
  // faulted in with one call (biome: 140 k blocks, 3.4 MB, ~840 page faults).
  size_t adds = std::count_if(ctrl.begin(), ctrl.end(), [](const BsdiffTriple& t) { return t.add > 0; });
  if (adds > kMaxBlocks) return std::nullopt;
  m.blocks_.reserve(adds);
  PrefaultForWrite(m.blocks_.data(), adds * sizeof(Block));
  uint64_t oldpos = 0, newpos = 0;
  for (const BsdiffTriple& t : ctrl) {
    if (t.add > base_size - oldpos || t.add > target_size - newpos) return std::nullopt;
    if (t.add > 0) {
      m.blocks_.push_back({oldpos, t.add, newpos});
      m.max_length_ = std::max(m.max_length_, t.add);
    }
    oldpos += t.add;
    newpos += t.add;
    if (t.copy > target_size - newpos) return std::nullopt;
    newpos += t.copy;
    uint64_t mag = t.seek < 0 ? 0 - static_cast<uint64_t>(t.seek) : static_cast<uint64_t>(t.seek);
    if (t.seek < 0 ? mag > oldpos : mag > base_size - oldpos) return std::nullopt;
    oldpos = t.seek < 0 ? oldpos - mag : oldpos + mag;
  }
  // By old_start, blocks of equal old_start in control-stream order (the
  // last one wins in Map). Their new_start grows with that order, so sorting
  // by (old_start, new_start) is the same order, in place: std::stable_sort's
  // buffer of half the blocks was ~400 more page faults on biome.
  std::sort(m.blocks_.begin(), m.blocks_.end(), [](const Block& x, const Block& y) {
    return x.old_start != y.old_start ? x.old_start < y.old_start : x.new_start < y.new_start;
  });
  return m;
}

std::optional<uint64_t> MoveMap::Map(uint64_t o) const {
  auto it = std::upper_bound(blocks_.begin(), blocks_.end(), o,
                             [](uint64_t v, const Block& b) { return v < b.old_start; });
  for (int k = 0; k < kLookBack && it != blocks_.begin(); ++k) {
    --it;
    if (o - it->old_start < it->length) return it->new_start + (o - it->old_start);
  }
  return std::nullopt;
}

void AdjustBase(std::string& a, const std::vector<X86Operand>& ops, X86Span span, const ElfLayout& la,
                const ElfLayout& lb, const MoveMap& map, Helpers& helpers) {
  auto da = CodeDelta(la), db = CodeDelta(lb);
  if (!da || !db) return;
  // The new address of the byte at old address v, if the map knows it.
  auto move = [&](uint64_t v) -> std::optional<uint64_t> {
    auto o = VaddrToOffset(v, la);
    if (!o) return std::nullopt;
    auto n = map.Map(*o);
    if (!n) return std::nullopt;
    return OffsetToVaddr(*n, lb);
  };
  constexpr uint64_t k25 = uint64_t{1} << 25;
  auto move_operand = [&](const X86Operand& op) {
    uint32_t v = Get32(a, op.pos);
    uint64_t pos;
    if (op.call) {
      // The low 25 bits of a position within 16 MiB of the operand (the
      // transform only rewrites calls that near): the candidate nearest it.
      uint64_t low = v & (k25 - 1);
      pos = (op.pos & ~(k25 - 1)) | low;
      if (pos > op.pos + k25 / 2 && pos >= k25) pos -= k25;
      else if (pos + k25 / 2 < op.pos) pos += k25;
    } else {
      pos = v;  // modulo 2^32: files under 4 GiB
    }
    auto nv = move(pos + *da);
    if (!nv) return;
    uint64_t np = *nv - *db;
    uint32_t w = op.call ? static_cast<uint32_t>((np & 0x00FFFFFF) | ((np & 0x01000000) ? 0xFF000000 : 0))
                         : static_cast<uint32_t>(np);
    std::memcpy(a.data() + op.pos, &w, 4);
  };
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const LoadSegment& s : la.loads) lo = std::min(lo, s.vaddr), hi = std::max(hi, s.vaddr + s.filesz);
  // Words [from, to) (offsets, multiples of 8) outside the code span.
  auto move_words = [&](uint64_t from, uint64_t to) {
    for (uint64_t off = from; off + 8 <= to; off += 8) {
      if (off + 8 > span.start && off < span.start + span.size) continue;
      uint64_t v = GetLE(a.data() + off, 8);
      if (v < lo || v >= hi) continue;
      if (auto nv = move(v)) std::memcpy(a.data() + off, &*nv, 8);
    }
  };
  // Operands lie in the span, words outside it, and neither overlaps another
  // of its kind: the parts write disjoint bytes.
  constexpr size_t kParts = 4;
  std::vector<std::function<void()>> tasks;
  for (size_t k = 0; k < kParts; ++k) {
    size_t first = ops.size() * k / kParts, last = ops.size() * (k + 1) / kParts;
    tasks.push_back([&, first, last] {
      for (size_t i = first; i < last; ++i) move_operand(ops[i]);
    });
    if (la.exec_file) {
      uint64_t words = a.size() / 8;
      uint64_t from = words * k / kParts * 8, to = words * (k + 1) / kParts * 8;
      tasks.push_back([&, from, to] { move_words(from, to); });
    }
  }
  helpers.Run(tasks);
}

}  // namespace d4c::codec_internal
