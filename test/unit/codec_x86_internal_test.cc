// The x86 code form of bsdiff (x86_code.h): the transform's round trip, the
// ELF code span, and the patch form on a real executable rebuilt the way a
// linker moves code.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "bsdiff_codec.h"
#include "x86_adjust.h"
#include "x86_code.h"
#include "d4c/base/varint.h"
#include "d4c/codec.h"
#include "thread_helpers.h"

namespace d4c::codec_internal {
namespace {

using d4c::testing::ThreadHelpers;

std::string ReadAll(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Bytes dense in the patterns the transform rewrites: call/jmp opcodes, REX
// prefixes, mov/lea opcodes and RIP-relative modrm bytes, 0x00/0xFF.
std::string Codeish(size_t n, uint64_t seed) {
  static const uint8_t kBytes[] = {0xE8, 0xE9, 0x48, 0x4C, 0x8B, 0x8D, 0x89, 0x0F, 0x10, 0xB6,
                                   0x05, 0x0D, 0x15, 0x00, 0xFF, 0x3D, 0x85, 0x01};
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() % 3 ? kBytes[rng() % sizeof(kBytes)] : rng());
  return s;
}

bool IsX86Form(const std::string& patch) { return patch.size() >= 4 && (static_cast<uint8_t>(patch[3]) & 0x80); }

uint32_t Get32(const std::string& s, size_t i) {
  uint32_t v;
  std::memcpy(&v, s.data() + i, 4);
  return v;
}

std::string CorpusRoot() {
  const char* env = std::getenv("D4C_CORPUS");
  return env && *env ? env : "/var/cache/d4c-corpus";
}

// `file` with 777 bytes of code inserted a third into its code span and 777
// removed two thirds in: everything between moves, as in a rebuild.
std::string CodeMoved(std::string file, X86Span span) {
  file.insert(span.start + span.size / 3, Codeish(777, 4));
  file.erase(span.start + span.size * 2 / 3, 777);
  return file;
}

TEST_CASE("x86 code: the transform is its own inverse's inverse, on any bytes and spans", "[codec][bsdiff]") {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::string x = Codeish(3000 + seed * 7, seed);
    X86Span span{seed % 13, x.size() - seed % 13 - seed % 5};
    std::string t = x;
    X86ToAbsolute(t, span);
    CHECK(t != x);  // such dense input always has something to rewrite
    X86ToRelative(t, span);
    CHECK(t == x);
    X86ToRelative(t, span);
    X86ToAbsolute(t, span);
    CHECK(t == x);
  }
  // Spans shorter than one instruction change nothing.
  std::string x = "\xE8\x01\x02\x03";
  X86ToAbsolute(x, X86Span{0, 4});
  CHECK(x == "\xE8\x01\x02\x03");
}

TEST_CASE("x86 code: calls and RIP-relative operands become absolute", "[codec][bsdiff]") {
  // call -16 at offset 100: next instruction at 105, target 89.
  std::string code(200, '\x90');
  std::memcpy(code.data() + 100, "\xE8\xF0\xFF\xFF\xFF", 5);
  // mov rax, [rip + 0x20] at offset 150: next instruction at 157, target 189.
  std::memcpy(code.data() + 150, "\x48\x8B\x05\x20\x00\x00\x00", 7);
  // jmp -16 at offset 50: jumps stay relative.
  std::memcpy(code.data() + 50, "\xE9\xF0\xFF\xFF\xFF", 5);
  std::string t = code;
  X86ToAbsolute(t, X86Span{0, t.size()});
  CHECK(Get32(t, 101) == 89);
  CHECK(Get32(t, 153) == 189);
  CHECK(t.substr(50, 5) == code.substr(50, 5));
  X86ToRelative(t, X86Span{0, t.size()});
  CHECK(t == code);
  // The operands it rewrote: the call's and the RIP-relative one, not the jmp's.
  std::string u = code;
  CHECK(X86ToAbsoluteOperands(u, X86Span{0, u.size()}) ==
        std::vector<X86Operand>{{101, true}, {153, false}});
  std::string v = code;
  X86ToAbsolute(v, X86Span{0, v.size()});
  CHECK(u == v);
}

TEST_CASE("x86 code: the operands reported are the bytes the transform rewrites", "[codec][bsdiff]") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::string x = Codeish(50000 + seed * 11, seed);
    X86Span span{seed % 7, x.size() - seed % 7 - seed % 3};
    std::string parts = x, one = x, reported = x;
    ThreadHelpers helpers;
    X86ToAbsolute(parts, span, helpers, 4096);  // in parts, on helpers
    std::vector<X86Operand> ops = X86ToAbsoluteOperands(one, span, NoHelpers(), 0);  // one part
    REQUIRE(one == parts);  // the same bytes as the parallel scan
    // In parts on helpers: the same bytes and the same operands.
    CHECK(X86ToAbsoluteOperands(reported, span, helpers, 4096) == ops);
    CHECK(reported == one);
    // Every changed byte lies in a reported operand; operands are in order,
    // 4 bytes each, inside the span, and do not overlap.
    std::vector<bool> in_op(x.size());
    uint64_t next = span.start;
    for (const X86Operand& op : ops) {
      REQUIRE(op.pos >= next);
      REQUIRE(op.pos + 4 <= span.start + span.size);
      for (uint64_t k = 0; k < 4; ++k) in_op[op.pos + k] = true;
      next = op.pos + 4;
    }
    for (size_t i = 0; i < x.size(); ++i)
      if (one[i] != x[i]) REQUIRE(in_op[i]);
    CHECK(ops.size() > 100);
  }
}

// The transform as first written: every position decoded one after the
// other. X86ToAbsolute/X86ToRelative skip ahead to the bytes that can start a
// rewrite; they must give these very bytes (patches made by either read with
// the other).
void ReferenceTransform(std::string& b, X86Span span, bool to_absolute) {
  static const std::string kRipOps = "\x01\x03\x09\x0B\x21\x23\x29\x2B\x31\x33\x38\x39\x3A\x3B\x84\x85\x87\x88\x89\x8A\x8B\x8D";
  static const std::string kRip0FOps = "\x10\x11\x28\x29\x2E\x2F\x54\x57\x58\x59\x5C\x5E\x6E\x6F\x7E\x7F\xB6\xB7\xBE\xBF\xD6";
  auto in = [](const std::string& set, uint8_t op) { return set.find(static_cast<char>(op)) != std::string::npos; };
  const uint64_t end = span.start + span.size;
  auto at = [&](uint64_t k) { return static_cast<uint8_t>(b[k]); };
  auto put = [&](uint64_t k, uint32_t v) { std::memcpy(b.data() + k, &v, 4); };
  int64_t guard = -1;
  uint64_t i = span.start;
  while (i + 5 <= end) {
    const uint8_t op = at(i);
    if (op == 0xE8) {
      const uint8_t high = at(i + 4);
      if ((high == 0x00 || high == 0xFF) && static_cast<int64_t>(i + 1) > guard) {
        uint32_t next = static_cast<uint32_t>(i + 5), v = Get32(b, i + 1);
        v = to_absolute ? v + next : v - next;
        put(i + 1, (v & 0x00FFFFFF) | ((v & 0x01000000) ? 0xFF000000 : 0));
        i += 5;
        continue;
      }
      guard = std::max<int64_t>(guard, static_cast<int64_t>(i + 4));
      ++i;
      continue;
    }
    uint64_t k = (op & 0xF0) == 0x40 ? i + 1 : i;
    uint64_t modrm, read;
    bool known;
    if (at(k) == 0x0F) {
      known = in(kRip0FOps, at(k + 1));
      modrm = k + 2;
      read = known ? modrm : k + 1;
    } else {
      known = in(kRipOps, at(k));
      modrm = k + 1;
      read = known ? modrm : k;
    }
    if (known && (at(modrm) & 0xC7) == 0x05 && modrm + 5 <= end && static_cast<int64_t>(modrm + 1) > guard) {
      uint32_t next = static_cast<uint32_t>(modrm + 5), v = Get32(b, modrm + 1);
      put(modrm + 1, to_absolute ? v + next : v - next);
      i = modrm + 5;
      continue;
    }
    guard = std::max<int64_t>(guard, static_cast<int64_t>(read));
    ++i;
  }
}

// Both directions of the transform on `x` over `span` give the reference's
// bytes, in one part and split into parts of `part_bytes` run at once on
// threads of their own.
void CheckSameAsReference(const std::string& x, X86Span span, uint64_t part_bytes = 61) {
  ThreadHelpers threads;
  for (bool to_absolute : {true, false}) {
    std::string ref = x;
    ReferenceTransform(ref, span, to_absolute);
    for (uint64_t part : {kX86PartBytes, part_bytes}) {
      std::string fast = x;
      if (to_absolute) X86ToAbsolute(fast, span, threads, part);
      else X86ToRelative(fast, span, threads, part);
      REQUIRE(fast.size() == ref.size());
      size_t diff = std::mismatch(fast.begin(), fast.end(), ref.begin()).first - fast.begin();
      INFO("span [" << span.start << ", +" << span.size << "), to_absolute " << to_absolute << ", parts of "
                    << part << ", first difference at " << diff);
      CHECK(fast == ref);
    }
  }
}

TEST_CASE("x86 code: the skipping scan rewrites the same bytes as a byte-by-byte one", "[codec][bsdiff]") {
  std::mt19937_64 rng(7);
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    // Dense patterns, plain random bytes, and sparse ones (long stretches
    // without a trigger byte, as the skip sees in real code) of every small
    // length and alignment.
    std::string dense = Codeish(1 + seed * 37 % 3000, seed);
    std::string random(1 + seed * 53 % 3000, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    std::string sparse(1 + seed * 71 % 3000, '\x90');
    for (size_t k = 0; k < sparse.size(); k += 1 + rng() % 40) sparse[k] = static_cast<char>(rng());
    for (const std::string* x : {&dense, &random, &sparse}) {
      uint64_t start = std::min<uint64_t>(seed % 17, x->size());
      CheckSameAsReference(*x, X86Span{start, x->size() - start - std::min<uint64_t>(seed % 7, x->size() - start)});
      CheckSameAsReference(*x, X86Span{0, x->size()});
    }
  }
  std::string ls = ReadAll("/bin/ls");
  if (auto span = X86_64CodeSpan(ls)) CheckSameAsReference(ls, *span, 4096);
  // A big Rust binary (biome's, the corpus's largest file) where present.
  std::string big = ReadAll((CorpusRoot() + "/biome/rootfs/1.9.2/rootfs/app/node_modules/@biomejs/cli-linux-x64/biome").c_str());
  if (auto span = X86_64CodeSpan(big)) CheckSameAsReference(big, *span, 1 << 20);
}

// /bin/ls into *bytes and its code span; nullopt, with a warning that the
// test is skipped, where it is not an x86-64 ELF file.
std::optional<X86Span> LsCodeSpan(std::string* bytes) {
  *bytes = ReadAll("/bin/ls");
  auto span = X86_64CodeSpan(*bytes);
  if (!span) WARN("skipped: /bin/ls is not an x86-64 ELF file here");
  return span;
}

TEST_CASE("x86 code: the code span of an ELF file", "[codec][bsdiff]") {
  std::string ls;
  auto span = LsCodeSpan(&ls);
  if (!span) return;
  CHECK(span->start > 0);
  CHECK(span->size > 0);
  CHECK(span->start + span->size <= ls.size());
  CHECK_FALSE(X86_64CodeSpan(ls.substr(0, 1 << 12)));  // section table cut off
  std::string other = ls;
  other[18] = 40;  // e_machine: ARM
  CHECK_FALSE(X86_64CodeSpan(other));
  CHECK_FALSE(X86_64CodeSpan("\x7f" "ELF"));
  CHECK_FALSE(X86_64CodeSpan(Codeish(4096, 3)));
}

TEST_CASE("x86 code: a rebuilt library gets a smaller bsdiff patch in the x86 form", "[codec][bsdiff]") {
  // A real rebuild from the corpus (docs/corpus.md): libapt-pkg in Debian's
  // apt-get upgrade, where every call into moved code changed.
  const std::string lib = "/rootfs/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0";
  std::string base = ReadAll((CorpusRoot() + "/debian-python/rootfs/v1" + lib).c_str());
  std::string target = ReadAll((CorpusRoot() + "/debian-python/rootfs/v2" + lib).c_str());
  if (base.empty() || target.empty() || base == target) {
    WARN("skipped: no debian-python corpus at " << CorpusRoot() << " (scripts/corpus.sh debian-python)");
    return;
  }
  auto patch = GetCodec(CodecId::kBsdiff).Encode(base, target);
  REQUIRE(patch.ok());
  CHECK(IsX86Form(*patch));
  auto back = GetCodec(CodecId::kBsdiff).Decode(base, *patch, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
  // The same pair as plain bytes (no ELF magic): the form the encoder beat.
  std::string plain_base = base, plain_target = target;
  plain_base[0] = plain_target[0] = 'X';
  auto plain = GetCodec(CodecId::kBsdiff).Encode(plain_base, plain_target);
  REQUIRE(plain.ok());
  CHECK_FALSE(IsX86Form(*plain));
  INFO("x86 form " << patch->size() << " B, plain " << plain->size() << " B");
  CHECK(patch->size() * 10 < plain->size() * 8);  // at least 20% smaller (measured: 48%)
}

TEST_CASE("x86 code: the x86 form of an edited executable decodes", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  // Bytes inserted into the code: everything after them moves.
  std::string target = CodeMoved(base, *span);
  auto target_span = X86_64CodeSpan(target);
  REQUIRE(target_span);
  auto patch = BsdiffCodec().EncodeX86(base, target, *span, *target_span, NoHelpers(), UINT64_MAX);
  REQUIRE(patch.ok());
  REQUIRE(IsX86Form(*patch));
  auto back = GetCodec(CodecId::kBsdiff).Decode(base, *patch, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
  // The target hash is of the real target: a wrong base fails.
  std::string other = base;
  other[span->start + 50] ^= 1;
  CHECK_FALSE(GetCodec(CodecId::kBsdiff).Decode(other, *patch, target.size()).ok());
}

// Where the adjusted form's record starts in a patch (after the header, the
// form byte and the four span varints), or npos if it is not that form.
size_t LayoutRecordAt(const std::string& patch) {
  size_t pos = 20;
  if (patch.size() <= pos || patch[pos] != 2) return std::string::npos;
  ++pos;
  uint64_t v;
  for (int k = 0; k < 4; ++k)
    if (!GetVarint(patch, &pos, &v)) return std::string::npos;
  return pos;
}

TEST_CASE("x86 code: the adjusted form moves references along the patch's own blocks", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  // Code inserted and removed: calls and RIP-relative operands into the
  // moved part change in the target, which the adjustment predicts.
  std::string target = CodeMoved(base, *span);
  auto target_span = X86_64CodeSpan(target);
  REQUIRE(target_span);
  const BsdiffCodec codec;
  auto x86 = codec.EncodeX86(base, target, *span, *target_span, NoHelpers(), UINT64_MAX);
  auto adjusted = codec.EncodeAdjusted(base, target, *span, *target_span, NoHelpers(), UINT64_MAX);
  REQUIRE(x86.ok());
  REQUIRE(adjusted.ok());
  REQUIRE(LayoutRecordAt(*adjusted) != std::string::npos);
  // (Which form is smaller here depends on the edit; the corpus test below
  // checks the gain on a real relink.)
  auto back = GetCodec(CodecId::kBsdiff).Decode(base, *adjusted, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
  // DecodeWith (patch's and di3fs's path, the base made beside the sections).
  ThreadHelpers threads;
  auto with = codec.DecodeWith([&] { return absl::StatusOr<std::string>(base); }, *adjusted, target.size(), false,
                               threads);
  REQUIRE(with.ok());
  CHECK(*with == target);
  // Told the x86 form's patch, the adjusted form compresses its extra
  // section only in the form that patch chose (its last `extra` bytes, the
  // length at byte 8); it still decodes.
  auto extra_form = [](const std::string& patch) -> char {
    uint32_t n = static_cast<uint32_t>(GetLE(patch.data() + 8, 4));
    if (n == 0) return 'e';
    char c = patch[patch.size() - n];
    return c == 0x02 || c == 0x03 ? c : 'z';
  };
  auto reusing = codec.EncodeAdjusted(base, target, *span, *target_span, NoHelpers(), UINT64_MAX, nullptr, *x86);
  REQUIRE(reusing.ok());
  CHECK(extra_form(*reusing) == extra_form(*x86));
  back = GetCodec(CodecId::kBsdiff).Decode(base, *reusing, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
  // A wrong base fails, and so does a base that is no ELF file any more.
  std::string other = base;
  other[span->start + 50] ^= 1;
  CHECK_FALSE(codec.Decode(other, *adjusted, target.size()).ok());
  other = base;
  other[0] = 'X';
  auto not_elf = codec.Decode(other, *adjusted, target.size());
  REQUIRE_FALSE(not_elf.ok());
  CHECK(not_elf.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(not_elf.status().message()).find("no ELF program headers") != std::string::npos);
}

TEST_CASE("x86 code: malformed adjusted records are refused", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  std::string target = base;
  target.insert(span->start + span->size / 2, Codeish(333, 5));
  target.erase(span->start + span->size * 3 / 4, 333);
  auto target_span = X86_64CodeSpan(target);
  REQUIRE(target_span);
  auto patch = BsdiffCodec().EncodeAdjusted(base, target, *span, *target_span, NoHelpers(), UINT64_MAX);
  REQUIRE(patch.ok());
  size_t at = LayoutRecordAt(*patch);
  REQUIRE(at != std::string::npos);
  auto refused = [&](std::string p) {
    auto out = GetCodec(CodecId::kBsdiff).Decode(base, p, target.size());
    return !out.ok() && out.status().code() == absl::StatusCode::kDataLoss;
  };
  std::string p = *patch;
  p[at] = 0;  // no segments
  CHECK(refused(p));
  p = *patch;
  p[at] = 17;  // more than kMaxLoads
  CHECK(refused(p));
  p = *patch;
  p[20] = 3;  // an unknown form
  CHECK(refused(p));
  CHECK(refused(patch->substr(0, at + 2)));  // cut inside the record
}

TEST_CASE("x86 code: ELF layouts, their record, and the map of a control stream", "[codec][bsdiff]") {
  std::string ls;
  if (!LsCodeSpan(&ls)) return;
  auto layout = ParseElfLayout(ls);
  REQUIRE(layout);
  CHECK(std::any_of(layout->loads.begin(), layout->loads.end(), [](const LoadSegment& s) { return s.exec; }));
  std::string rec;
  PutLayoutRecord(&rec, *layout);
  size_t pos = 0;
  ElfLayout back;
  REQUIRE(ParseLayoutRecord(rec, &pos, &back));
  CHECK(pos == rec.size());
  CHECK(back.loads == layout->loads);
  CHECK_FALSE(ParseElfLayout(ls.substr(0, 63)));
  std::string bad = ls;
  bad[0x36] = 1;  // e_phentsize
  CHECK_FALSE(ParseElfLayout(bad));
  // Blocks: add 10 at old 0 -> new 0; copy 5; seek +20; add 10 at old 30 -> new 15.
  std::vector<BsdiffTriple> ctrl = {{10, 5, 20}, {10, 0, 0}};
  auto map = MoveMap::FromCtrl(ctrl, 100, 25);
  REQUIRE(map);
  CHECK(map->Map(3) == std::optional<uint64_t>(3));
  CHECK(map->Map(35) == std::optional<uint64_t>(20));
  CHECK_FALSE(map->Map(15));  // in no add block
  CHECK_FALSE(MoveMap::FromCtrl(ctrl, 100, 24));  // the target is too short
  CHECK_FALSE(MoveMap::FromCtrl({{10, 0, -11}}, 100, 10));  // seeks before the base
}

// The map's order among blocks of the same old start is part of the format
// (encoder and decoder build the same map): the block added last in the
// control stream wins, as when the blocks were stable-sorted by old start.
TEST_CASE("x86 adjust: of blocks with the same old start the last one added wins", "[codec][bsdiff]") {
  // old 0..10 -> new 0, seek back; old 0..10 -> new 10, seek back; old 0..4 -> new 20
  std::vector<BsdiffTriple> ctrl = {{10, 0, -10}, {10, 0, -10}, {4, 0, 0}};
  auto map = MoveMap::FromCtrl(ctrl, 100, 24);
  REQUIRE(map);
  CHECK(map->Map(3) == std::optional<uint64_t>(23));
  CHECK(map->Map(7) == std::optional<uint64_t>(17));  // not covered by the last: the one before
  // Random control streams against a reference: blocks stable-sorted by old
  // start, the same look-back.
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; ++round) {
    const uint64_t base = 64;
    std::vector<BsdiffTriple> c;
    uint64_t oldpos = 0, newpos = 0;
    struct Block {
      uint64_t old_start, length, new_start;
    };
    std::vector<Block> ref;
    for (int k = 0; k < 40; ++k) {
      uint64_t add = rng() % 6;
      if (add > base - oldpos) add = base - oldpos;
      uint64_t copy = rng() % 3;
      if (add > 0) ref.push_back({oldpos, add, newpos});
      oldpos += add;
      newpos += add + copy;
      int64_t to = static_cast<int64_t>(rng() % 16);  // back near the start: many equal old starts
      c.push_back({add, copy, to - static_cast<int64_t>(oldpos)});
      oldpos = static_cast<uint64_t>(to);
    }
    auto m = MoveMap::FromCtrl(c, base, newpos);
    REQUIRE(m);
    std::stable_sort(ref.begin(), ref.end(), [](const Block& x, const Block& y) { return x.old_start < y.old_start; });
    for (uint64_t o = 0; o < base; ++o) {
      std::optional<uint64_t> want;
      auto it = std::upper_bound(ref.begin(), ref.end(), o, [](uint64_t v, const Block& b) { return v < b.old_start; });
      for (int k = 0; k < kLookBack && it != ref.begin(); ++k) {
        --it;
        if (o - it->old_start < it->length) {
          want = it->new_start + (o - it->old_start);
          break;
        }
      }
      INFO("round " << round << " old " << o);
      CHECK(m->Map(o) == want);
    }
  }
}

TEST_CASE("x86 code: a relinked executable gets the adjusted form", "[codec][bsdiff]") {
  // python3.11 in Debian's apt-get upgrade (docs/benchmarks.md): a non-PIE
  // executable whose code, rodata and data all moved.
  const std::string exe = "/rootfs/usr/bin/python3.11";
  std::string base = ReadAll((CorpusRoot() + "/debian-python/rootfs/v1" + exe).c_str());
  std::string target = ReadAll((CorpusRoot() + "/debian-python/rootfs/v2" + exe).c_str());
  if (base.empty() || target.empty() || base == target) {
    WARN("skipped: no debian-python corpus at " << CorpusRoot() << " (scripts/corpus.sh debian-python)");
    return;
  }
  ThreadHelpers threads;
  const BsdiffCodec codec;
  auto patch = codec.EncodeParallel(base, target, threads);
  REQUIRE(patch.ok());
  CHECK(LayoutRecordAt(*patch) != std::string::npos);
  auto x86 = codec.EncodeX86(base, target, *X86_64CodeSpan(base), *X86_64CodeSpan(target), threads, UINT64_MAX);
  REQUIRE(x86.ok());
  INFO("adjusted " << patch->size() << " B, x86 form " << x86->size() << " B");
  CHECK(patch->size() * 10 < x86->size() * 9);  // at least 10% smaller (measured: 13%)
  auto back = codec.DecodeWith([&] { return absl::StatusOr<std::string>(base); }, *patch, target.size(), false,
                               threads);
  REQUIRE(back.ok());
  CHECK(*back == target);
  // As for targets over kAllFormsMaxTarget: the adjusted form from the
  // target scanned again in the x86 base's index (the searches replayed,
  // the alignments scored on the moved base), its blocks stored as the
  // control stream a decoder rebuilds the map from, so that the base it
  // moves is the one diffed against (a different map would move other
  // references and fail the checksum).
  const BsdiffCodec one_sort(19, BsdiffCodec::kSideBySideMaxBase, /*all_forms_max_target=*/0);
  auto first = one_sort.EncodeParallel(base, target, threads);
  REQUIRE(first.ok());
  CHECK(LayoutRecordAt(*first) != std::string::npos);
  INFO("rescanned in the x86 index " << first->size() << " B");
  CHECK(*first != *patch);
  // The moved base's own index gains (measured: 2.1%; the x86 scan's blocks
  // kept unscanned were 3.7% over it).
  CHECK(first->size() >= patch->size());
  CHECK(first->size() * 100 < x86->size() * 91);  // still at least 9% under the x86 form (measured: 11.2%)
  back = codec.DecodeWith([&] { return absl::StatusOr<std::string>(base); }, *first, target.size(), false, threads);
  REQUIRE(back.ok());
  CHECK(*back == target);
  back = codec.Decode(base, *first, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
}

TEST_CASE("x86 code: a pair the transform does not help keeps the plain form", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  // An edit outside the code: nothing for absolute references to gain.
  std::string target = base;
  target[span->start - 1] ^= 1;
  auto patch = GetCodec(CodecId::kBsdiff).Encode(base, target);
  REQUIRE(patch.ok());
  auto forced = BsdiffCodec().EncodeX86(base, target, *span, *span, NoHelpers(), UINT64_MAX);
  REQUIRE(forced.ok());
  CHECK(patch->size() < forced->size());
  CHECK_FALSE(IsX86Form(*patch));
}

// What EncodeWithin returned when the forms ran one after the other: the
// plain form within `limit`, then the x86 form within the plain patch's size.
absl::StatusOr<std::string> SerialForms(const std::string& base, const std::string& target, uint64_t limit) {
  const BsdiffCodec codec;
  auto plain = codec.EncodePlain(base, target, NoHelpers(), limit);
  if (!plain.ok() && !absl::IsOutOfRange(plain.status())) return plain;
  auto x86 = codec.EncodeX86(base, target, *X86_64CodeSpan(base), *X86_64CodeSpan(target), NoHelpers(),
                             plain.ok() ? plain->size() : limit);
  if (!x86.ok()) return absl::IsOutOfRange(x86.status()) ? plain : x86.status();
  if (plain.ok() && plain->size() <= x86->size()) return plain;
  // The x86 form won: the adjusted form too, within its size.
  if (x86->size() < BsdiffCodec::kAdjustMinPatch) return x86;
  auto adjusted =
      codec.EncodeAdjusted(base, target, *X86_64CodeSpan(base), *X86_64CodeSpan(target), NoHelpers(), x86->size());
  if (adjusted.ok() && adjusted->size() < x86->size()) return adjusted;
  return x86;
}

TEST_CASE("x86 code: both forms computed side by side give the serial result", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  // Code moved and an edit outside the code (the plain form wins), and where
  // the corpus is there, libapt-pkg rebuilt (the x86 form wins, then the
  // adjusted one) and perl rebuilt (the plain form wins). Both corpus
  // targets are over kQuickChoiceMinTarget: their forms are chosen by
  // level-1 sizes, and must still give the serial result (every form
  // compressed, the smallest kept).
  std::string moved = CodeMoved(base, *span);
  std::string outside = base;
  outside[span->start - 1] ^= 1;
  struct Pair {
    const char* what;
    std::string base, target;
  };
  std::vector<Pair> pairs = {{"code moved", base, moved}, {"edit outside the code", base, outside}};
  // Over kQuickChoiceMinTarget, forms close at level 1 (every form is
  // compressed): data appended after the section table and edited there,
  // which the x86 form leaves as it is.
  std::string data = Codeish(BsdiffCodec::kQuickChoiceMinTarget + 200000, 11), edited = data;
  for (size_t i = 0; i < edited.size(); i += 5000) edited[i] ^= 0x5A;
  std::string big_base = base + data, big_target = base + edited;
  pairs.push_back({"big, data edited", big_base, big_target});
  const std::string lib = "/rootfs/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0";
  std::string apt1 = ReadAll((CorpusRoot() + "/debian-python/rootfs/v1" + lib).c_str());
  std::string apt2 = ReadAll((CorpusRoot() + "/debian-python/rootfs/v2" + lib).c_str());
  if (!apt1.empty() && !apt2.empty()) pairs.push_back({"libapt-pkg", apt1, apt2});
  std::string perl1 = ReadAll((CorpusRoot() + "/debian/rootfs/v1/rootfs/usr/bin/perl").c_str());
  std::string perl2 = ReadAll((CorpusRoot() + "/debian/rootfs/v2/rootfs/usr/bin/perl").c_str());
  if (!perl1.empty() && !perl2.empty()) {
    REQUIRE(perl2.size() >= BsdiffCodec::kQuickChoiceMinTarget);
    pairs.push_back({"perl", perl1, perl2});
  }
  const BsdiffCodec codec;
  for (const Pair& p : pairs) {
    INFO(p.what);
    auto unlimited = SerialForms(p.base, p.target, UINT64_MAX);
    REQUIRE(unlimited.ok());
    if (p.target == outside) CHECK_FALSE(IsX86Form(*unlimited));
    if (p.target == apt2) CHECK(IsX86Form(*unlimited));
    if (p.target == perl2) CHECK_FALSE(IsX86Form(*unlimited));
    auto plain = codec.EncodePlain(p.base, p.target, NoHelpers(), UINT64_MAX);
    REQUIRE(plain.ok());
    // No limit; limits around both forms' sizes, where either may give up
    // early (ClearlyOver); a limit both give up on.
    std::vector<uint64_t> limits = {UINT64_MAX, unlimited->size(), plain->size(), plain->size() / 3,
                                    unlimited->size() / 3, 10};
    if (p.target == perl2 || p.target == big_target) limits.resize(2);  // the time of a unit test
    for (uint64_t limit : limits) {
      INFO("limit " << limit);
      auto serial = SerialForms(p.base, p.target, limit);
      ThreadHelpers threads;
      // A base over side_by_side_max_base runs the forms in turn (here: any base).
      const BsdiffCodec in_turn(19, /*side_by_side_max_base=*/0);
      for (const BsdiffCodec* c : {&codec, &in_turn}) {
        for (Helpers* h : {static_cast<Helpers*>(&threads), &NoHelpers()}) {
          auto both = c->EncodeWithin(p.base, p.target, *h, limit);
          REQUIRE(both.ok() == serial.ok());
          if (serial.ok()) {
            CHECK(*both == *serial);
          } else {
            CHECK(both.status().code() == serial.status().code());
          }
        }
      }
      // Targets over all_forms_max_target (here: any) get the x86 form and
      // the adjusted one rescanned in the x86 index, the smaller kept; within
      // a limit neither meets, neither.
      if (limit != UINT64_MAX || (p.target != moved && p.target != apt2)) continue;
      const BsdiffCodec lean(19, BsdiffCodec::kSideBySideMaxBase, /*all_forms_max_target=*/0);
      auto x86 = codec.EncodeX86(p.base, p.target, *X86_64CodeSpan(p.base), *X86_64CodeSpan(p.target), NoHelpers(),
                                 limit);
      auto adjusted = lean.EncodeAdjusted(p.base, p.target, *X86_64CodeSpan(p.base), *X86_64CodeSpan(p.target),
                                          NoHelpers(), limit);
      REQUIRE(x86.ok());
      REQUIRE(adjusted.ok());
      auto both = lean.EncodeWithin(p.base, p.target, threads, limit);
      REQUIRE(both.ok());
      CHECK(*both == (adjusted->size() < x86->size() ? *adjusted : *x86));
      auto back = lean.Decode(p.base, *both, p.target.size());
      REQUIRE(back.ok());
      CHECK(*back == p.target);
      auto over = lean.EncodeWithin(p.base, p.target, threads, 10);
      REQUIRE_FALSE(over.ok());
      CHECK(absl::IsOutOfRange(over.status()));
    }
  }
}

TEST_CASE("x86 code: malformed x86 records are refused", "[codec][bsdiff]") {
  std::string base;
  auto span = LsCodeSpan(&base);
  if (!span) return;
  std::string target = base;
  target[span->start + 100] ^= 0x55;
  auto patch = BsdiffCodec().EncodeX86(base, target, *span, *span, NoHelpers(), UINT64_MAX);
  REQUIRE(patch.ok());
  REQUIRE(IsX86Form(*patch));
  const BsdiffCodec codec;
  auto back = codec.Decode(base, *patch, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
  constexpr size_t kRecord = 20;  // after the 20-byte header: form byte, four varints
  std::string bad_form = *patch;
  bad_form[kRecord] = 3;  // 1: the x86 form, 2: the adjusted one
  auto r = codec.Decode(base, bad_form, target.size());
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("unknown x86 code form") != std::string::npos);
  // A span past the end of the base: the record is rewritten with a huge
  // size (its length is implicit, so the header's total still matches).
  std::string huge = patch->substr(0, kRecord);
  huge += '\x01';
  for (uint64_t v : {span->start, uint64_t{1} << 40, span->start, span->size}) {
    do {
      huge += static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
      v >>= 7;
    } while (v);
  }
  size_t pos = kRecord + 1;
  for (int i = 0; i < 4; ++i)
    while (static_cast<uint8_t>((*patch)[pos++]) & 0x80) {
    }
  huge += patch->substr(pos);
  r = codec.Decode(base, huge, target.size());
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("x86 code span outside") != std::string::npos);
  // Truncated record.
  r = codec.Decode(base, patch->substr(0, kRecord + 2), target.size());
  REQUIRE_FALSE(r.ok());
}

}  // namespace
}  // namespace d4c::codec_internal
