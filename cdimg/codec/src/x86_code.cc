#include "x86_code.h"

#include <algorithm>
#include <functional>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "d4c/base/memory.h"
#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

// One-byte opcodes taking a modrm and no immediate, with a register or
// memory operand: add/or/and/sub/xor/cmp, test, xchg, mov, lea.
constexpr uint8_t kRipOps[] = {0x01, 0x03, 0x09, 0x0B, 0x21, 0x23, 0x29, 0x2B, 0x31, 0x33, 0x38,
                               0x39, 0x3A, 0x3B, 0x84, 0x85, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D};
// 0F-prefixed ones: SSE moves and arithmetic, movzx/movsx.
constexpr uint8_t kRip0FOps[] = {0x10, 0x11, 0x28, 0x29, 0x2E, 0x2F, 0x54, 0x57, 0x58, 0x59, 0x5C,
                                 0x5E, 0x6E, 0x6F, 0x7E, 0x7F, 0xB6, 0xB7, 0xBE, 0xBF, 0xD6};

// Both sets as one table (bit 0: kRipOps, bit 1: kRip0FOps): a load instead
// of a jump per test.
struct OpTable {
  uint8_t bits[256] = {};
  constexpr OpTable() {
    for (uint8_t op : kRipOps) bits[op] |= 1;
    for (uint8_t op : kRip0FOps) bits[op] |= 2;
  }
};
constexpr OpTable kOps;

inline bool IsRipOp(uint8_t op) { return kOps.bits[op] & 1; }
inline bool IsRip0FOp(uint8_t op) { return kOps.bits[op] & 2; }

uint32_t Get32(const std::string& b, uint64_t i) {
  return static_cast<uint32_t>(GetLE(b.data() + i, 4));
}

void Put32(std::string& b, uint64_t i, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[i + k] = static_cast<char>(v >> (8 * k));
}

// Bytes that can make a position rewrite something: a call opcode, or a
// modrm of mod 00 rm 101 (RIP-relative). A position none of whose first four
// bytes is one of them is left unchanged whatever its opcode; it only looked
// at some of those bytes (LastLooked).
inline bool IsTrigger(uint8_t b) { return b == 0xE8 || (b & 0xC7) == 0x05; }

// The last byte that position i, not a call (0xE8) and left unchanged, looked
// at to decide so: its opcode, or the modrm of a known one (as in Transform).
uint64_t LastLooked(const uint8_t* d, uint64_t i) {
  uint64_t k = (d[i] & 0xF0) == 0x40 ? i + 1 : i;
  if (d[k] == 0x0F) return IsRip0FOp(d[k + 1]) ? k + 2 : k + 1;
  return IsRipOp(d[k]) ? k + 1 : k;
}

// The first position in [from, to) holding a trigger byte, else `to`. Code
// has one every ~20 bytes; most of the scan is this search.
uint64_t NextTrigger(const uint8_t* d, uint64_t from, uint64_t to) {
#if defined(__SSE2__)
  const __m128i mask = _mm_set1_epi8(static_cast<char>(0xC7));
  const __m128i rip = _mm_set1_epi8(0x05);
  const __m128i call = _mm_set1_epi8(static_cast<char>(0xE8));
  for (; from + 16 <= to; from += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + from));
    __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(_mm_and_si128(v, mask), rip), _mm_cmpeq_epi8(v, call));
    if (int m = _mm_movemask_epi8(hit)) return from + static_cast<uint64_t>(__builtin_ctz(m));
  }
#endif
  while (from < to && !IsTrigger(d[from])) ++from;
  return from;
}

// The scan of the span ending at `end`, from position `from` (with `guard`
// as the scan up to there left it) up to position `stop`, which the scan
// must reach without a rewrite across it (SplitPoint).
// `ops` (may be null): receives every rewritten operand, in order.
void Transform(std::string& b, uint64_t end, uint64_t from, uint64_t stop, int64_t guard, bool to_absolute,
               std::vector<X86Operand>* ops = nullptr) {
  const uint8_t* d = reinterpret_cast<const uint8_t*>(b.data());
  auto at = [&](uint64_t k) { return d[k]; };
  // `guard`: the last byte that a position left unchanged looked at: nothing
  // at or before it may be rewritten, or the inverse would decide differently.
  auto free_from = [&](uint64_t first) { return static_cast<int64_t>(first) > guard; };
  uint64_t i = from;
  while (i + 5 <= end && i < stop) {
    // Positions up to t - 4 have no trigger among their first four bytes
    // (all of which lie before end - 1): unchanged, one after the other.
    // Their guard is the largest of the last three, as LastLooked(p) lies
    // in [p, p + 3].
    // (The search stops 3 bytes past `stop`: a part never reads bytes that
    // the next part may rewrite, from stop + 5 on.)
    uint64_t t = NextTrigger(d, i, std::min(end - 1, stop + 3));
    if (t >= i + 4) {
      uint64_t s = t - 3;
      if (s + 5 > end || s >= stop) break;  // no trigger left before the stop: the rest is unchanged
      for (uint64_t p = std::max(i, s - 3); p < s; ++p)
        guard = std::max<int64_t>(guard, static_cast<int64_t>(LastLooked(d, p)));
      i = s;
    }
    const uint8_t op = at(i);
    if (op == 0xE8) {
      const uint8_t high = at(i + 4);
      if ((high == 0x00 || high == 0xFF) && free_from(i + 1)) {
        uint32_t next = static_cast<uint32_t>(i + 5);
        uint32_t v = Get32(b, i + 1);
        v = to_absolute ? v + next : v - next;
        v = (v & 0x00FFFFFF) | ((v & 0x01000000) ? 0xFF000000 : 0);
        Put32(b, i + 1, v);
        if (ops) ops->push_back({i + 1, true});
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
      if (ops) ops->push_back({modrm + 1, false});
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

namespace {

// Where the scan can be split: a position m, at or after `from` and before
// `limit`, after 11 bytes [m - 7, m + 4) without a trigger byte. No rewrite
// reaches past m - 3 (a rewrite ends 5 bytes after its trigger), so the scan
// visits m - 3 .. m one by one; no position before m - 3 looked further than
// m - 1, which LastLooked(m - 1) reaches; so the scan arrives at m with
// guard = the largest LastLooked of m - 3 .. m - 1, whatever came before.
// The two sides are then independent: the same bytes as one scan.
std::optional<uint64_t> SplitPoint(const uint8_t* d, uint64_t from, uint64_t limit) {
  for (uint64_t q = from; q + 11 <= limit;) {
    uint64_t t = NextTrigger(d, q, q + 11);
    if (t == q + 11) return q + 7;
    q = t + 1;
  }
  return std::nullopt;
}

// Operand vectors are reserved for one operand per this many bytes of code,
// and the first pages for one per kBytesPerOperandExpected are faulted in at
// once when that is at least kPrefaultOperandsFrom bytes.
constexpr uint64_t kBytesPerOperandReserved = 24;
constexpr uint64_t kBytesPerOperandExpected = 48;
constexpr size_t kPrefaultOperandsFrom = 256 << 10;

// `ops` (may be null): receives the rewritten operands, in order.
void TransformSpan(std::string& data, X86Span span, bool to_absolute, Helpers& helpers, uint64_t part_bytes,
                   std::vector<X86Operand>* ops = nullptr) {
  const uint64_t end = span.start + span.size;
  const uint8_t* d = reinterpret_cast<const uint8_t*>(data.data());
  // Parts of about part_bytes (at most kX86MaxParts), each starting at a
  // split point; the last part ends with the span.
  struct Part {
    uint64_t from, stop;
    int64_t guard;
  };
  std::vector<Part> parts{{span.start, end, -1}};
  uint64_t n = part_bytes == 0 ? 1 : std::min<uint64_t>(kX86MaxParts, span.size / part_bytes);
  for (uint64_t k = 1; k < n; ++k) {
    uint64_t want = span.start + span.size / n * k;
    if (want < parts.back().from + 8) continue;
    auto m = SplitPoint(d, want - 7, end);
    if (!m || *m + 5 > end) break;
    int64_t guard = -1;
    for (uint64_t p = *m - 3; p < *m; ++p) guard = std::max<int64_t>(guard, static_cast<int64_t>(LastLooked(d, p)));
    parts.back().stop = *m;
    parts.push_back({*m, end, guard});
  }
  std::vector<std::vector<X86Operand>> part_ops(ops ? parts.size() : 0);
  std::vector<std::function<void()>> tasks;
  for (size_t k = 0; k < parts.size(); ++k) {
    std::vector<X86Operand>* out = ops ? &part_ops[k] : nullptr;
    tasks.push_back([&data, end, p = parts[k], to_absolute, out] {
      // Room for twice the operands real code has (one per 36-48 bytes:
      // python3.11, biome), so the vector does not grow by doubling, each
      // step a fresh block faulted in and copied (with the final vector
      // below, a third of a patch's page faults on biome's 28 MB binary).
      // A 2 MiB part's room stays under kHugeAllocationFrom: a whole huge
      // page per part would outlive the part in glibc's heap.
      if (out) {
        out->reserve((p.stop - p.from) / kBytesPerOperandReserved + 1);
        // The room is mostly a fresh block (a 2 MiB part's is over glibc's
        // initial mmap threshold); fault in what real code fills, one
        // operand per 48 bytes, with one call instead of a fault per 4 KiB
        // (pages already there cost the call a page-table walk).
        PrefaultForWrite(out->data(), (p.stop - p.from) / kBytesPerOperandExpected * sizeof(X86Operand),
                         kPrefaultOperandsFrom);
      }
      Transform(data, end, p.from, p.stop, p.guard, to_absolute, out);
    });
  }
  helpers.Run(tasks);
  if (!ops) return;
  size_t total = ops->size();
  for (const auto& v : part_ops) total += v.size();
  ops->reserve(total);
  for (auto& v : part_ops) ops->insert(ops->end(), v.begin(), v.end());
}

}  // namespace

void X86ToAbsolute(std::string& data, X86Span span, Helpers& helpers, uint64_t part_bytes) {
  TransformSpan(data, span, true, helpers, part_bytes);
}
void X86ToRelative(std::string& data, X86Span span, Helpers& helpers, uint64_t part_bytes) {
  TransformSpan(data, span, false, helpers, part_bytes);
}

std::vector<X86Operand> X86ToAbsoluteOperands(std::string& data, X86Span span, Helpers& helpers,
                                              uint64_t part_bytes) {
  std::vector<X86Operand> ops;
  TransformSpan(data, span, true, helpers, part_bytes, &ops);
  return ops;
}

}  // namespace d4c::codec_internal
