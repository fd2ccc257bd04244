// bsdiff internals: the search starts, the zero-run split, the ctrl
// columns, the LZMA2/bzip2 section forms, and patches written in earlier
// layouts.
#include <catch2/catch.hpp>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>
#include <vector>
#include <iterator>
#include <random>
#include <string>
#include <thread>

#include "alt_section.h"
#include "bsdiff_ctrl.h"
#include "bsdiff_diff.h"
#include "bsdiff_zero_runs.h"
#include "hash64.h"
#include "multi_frame.h"
#include "d4c/codec.h"
#include "thread_helpers.h"

namespace d4c::codec_internal {
namespace {

using d4c::testing::ThreadHelpers;

std::string Z(const std::string& s) {
  if (s.empty()) return s;
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 19));
  return out;
}

void PutLE(std::string* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

std::string Binaryish(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() % 4 ? rng() % 16 : rng());
  return s;
}

// Real machine code: this test binary's first MiB, and a copy edited the
// way a rebuild edits one (shifted addresses, an inserted function).
std::string OwnCode() {
  std::ifstream in("/proc/self/exe", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.substr(0, 1 << 20);
}

std::string Rebuilt(std::string s) {
  for (size_t i = 0; i + 4 < s.size(); i += 37) {
    if (s[i] == '\xe8') s[i + 1] = static_cast<char>(s[i + 1] + 16);  // call rel32
  }
  s.insert(s.size() / 3, Binaryish(5000, 9));
  s.erase(s.size() / 2, 3000);
  return s;
}

// Words from a small vocabulary: many suffixes share long prefixes, so a
// pattern's place is often several entries away from a linked start.
std::string Wordy(size_t n, uint64_t seed) {
  static const char* const kWords[] = {"the ", "them ", "then ", "there ", "a ", "an ", "and ", "andes ", "x", "xy"};
  std::mt19937_64 rng(seed);
  std::string s;
  while (s.size() < n) s += kWords[rng() % 10];
  return s;
}

std::string Letters(size_t n, int letters, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, 'a');
  for (char& c : s) c = static_cast<char>('a' + rng() % letters);
  return s;
}

std::string Periodic(size_t n, size_t period) {
  std::string s;
  while (s.size() < n) s += Binaryish(period, 7);
  return s.substr(0, n);
}

TEST_CASE("bsdiff: searches started from a link or a prefix key find what a whole-array search finds",
          "[codec][bsdiff]") {
  std::string code = OwnCode();
  REQUIRE(code.size() > 100000);
  std::string bin = Binaryish(300000, 3);
  std::string scattered = bin;
  for (size_t i = 100; i < scattered.size(); i += 101) scattered[i] = static_cast<char>(scattered[i] ^ 0x40);
  struct Pair {
    const char* what;
    std::string base, target;
  } pairs[] = {
      {"machine code, rebuilt", code, Rebuilt(code)},
      {"scattered byte edits", bin, scattered},
      {"words", Wordy(100000, 1), Wordy(100000, 2)},
      {"words, edited", Wordy(100000, 1), Wordy(30000, 1) + Wordy(2000, 3) + Wordy(100000, 1).substr(30000)},
      {"two letters", Letters(20000, 2, 1), Letters(20000, 2, 2)},
      {"three letters", Letters(20000, 3, 3), Letters(25000, 3, 4)},
      {"periodic base, shifted period", Periodic(200000, 61), Periodic(200000, 67)},
      {"target longer than a run of the base", std::string(1000, 'a'), std::string(5000, 'a') + "b"},
      {"unrelated", Binaryish(50000, 4), Binaryish(60000, 5)},
      {"tiny base", "ab", "abababba"},
      // Bases from 256 KiB have keys of more than two bytes' bits (18 here, 19 below).
      {"binary base of 18-bit keys, edited", Binaryish(700000, 11), Rebuilt(Binaryish(700000, 11))},
      {"words base of 19-bit keys, edited", Wordy(1200000, 1),
       Wordy(400000, 1) + Wordy(3000, 5) + Wordy(1200000, 1).substr(400000)},
      // The base's last two suffixes are short: they count under zero-padded
      // keys, which patterns at the target's end and zero runs share.
      {"base ending in a byte and a zero, 18-bit keys", Binaryish(600000, 12) + std::string("\x07\x00", 2),
       Binaryish(600000, 12).substr(0, 1000) + std::string("\x07\x00\x00\x01", 4) + std::string(300, '\0') +
           Binaryish(600000, 12).substr(1000, 5000) + std::string("\x07\x00", 2) + "\x07"},
  };
  for (const Pair& p : pairs) {
    INFO(p.what);
    auto whole = BsdiffCompute(p.base, p.target, NoHelpers(), SearchStart::kWholeArray);
    REQUIRE(whole.ok());
    for (SearchStart start : {SearchStart::kLinked, SearchStart::kBucketOnly}) {
      INFO("start " << static_cast<int>(start));
      auto got = BsdiffCompute(p.base, p.target, NoHelpers(), start);
      REQUIRE(got.ok());
      CHECK(got->ctrl == whole->ctrl);
      CHECK(got->diff == whole->diff);
      CHECK(got->extra == whole->extra);
    }
  }
}

TEST_CASE("bsdiff: diffs computed side by side or in steps are each the diff computed alone", "[codec][bsdiff]") {
  std::string code = Binaryish(300000, 7), rebuilt = Rebuilt(code);
  std::string big = Binaryish(9 << 20, 8);  // three scan segments
  std::string big_target = big.substr(0, 5 << 20) + Binaryish(70000, 9) + big.substr(5 << 20);
  // The third input's bytes are prepared (here: reversed) by its task.
  std::string prepared_base, prepared_target;
  std::string want_base(code.rbegin(), code.rend()), want_target(rebuilt.rbegin(), rebuilt.rend());
  std::vector<BsdiffInput> inputs = {
      {code, rebuilt, nullptr, nullptr},
      {big, big_target, nullptr, nullptr},
      {{}, {}, [&] { std::reverse(prepared_base.begin(), prepared_base.end()); },
       [&] { std::reverse(prepared_target.begin(), prepared_target.end()); }},
      {"", "new", nullptr, nullptr},
      {"old", "", nullptr, nullptr},
  };
  std::vector<std::pair<std::string_view, std::string_view>> alone = {
      {code, rebuilt}, {big, big_target}, {want_base, want_target}, {"", "new"}, {"old", ""}};
  ThreadHelpers threads;
  for (Helpers* h : {static_cast<Helpers*>(&threads), &NoHelpers()}) {
    prepared_base = code;
    prepared_target = rebuilt;
    inputs[2].base = prepared_base;
    inputs[2].target = prepared_target;
    auto many = BsdiffComputeMany(inputs, *h);
    REQUIRE(many.size() == inputs.size());
    // The same in steps: scanned last input first, each with a task beside.
    prepared_base = code;
    prepared_target = rebuilt;
    BsdiffBatch batch(inputs);
    batch.Build(*h);
    std::vector<absl::StatusOr<BsdiffStreams>> stepped(inputs.size(), absl::UnknownError("not scanned"));
    int beside_ran = 0;
    for (size_t j = inputs.size(); j-- > 0;) stepped[j] = batch.Scan(j, *h, {[&] { ++beside_ran; }});
    CHECK(beside_ran == static_cast<int>(inputs.size()));
    for (size_t j = 0; j < inputs.size(); ++j) {
      INFO("input " << j);
      auto one = BsdiffCompute(alone[j].first, alone[j].second);
      REQUIRE(one.ok());
      for (const auto* got : {&many[j], &stepped[j]}) {
        REQUIRE(got->ok());
        CHECK((*got)->ctrl == one->ctrl);
        CHECK((*got)->diff == one->diff);
        CHECK((*got)->extra == one->extra);
      }
    }
  }
}

// The target from a bsdiff's blocks against `base`: each block's bytes as
// `base` plus the diff stream, then its extra bytes.
std::string ApplyBlocks(const std::vector<BsdiffTriple>& ctrl, std::string_view base, std::string_view diff,
                        std::string_view extra) {
  std::string out;
  uint64_t oldpos = 0, d = 0, e = 0;
  for (const BsdiffTriple& t : ctrl) {
    for (uint64_t k = 0; k < t.add; ++k) out.push_back(static_cast<char>(base[oldpos + k] + diff[d + k]));
    d += t.add;
    out.append(extra.substr(e, t.copy));
    e += t.copy;
    oldpos = static_cast<uint64_t>(static_cast<int64_t>(oldpos + t.add) + t.seek);
  }
  return out;
}

// Rebuilt's call edits alone, in place: the base with its references
// moved to where the rebuilt code has them, as the adjusted form moves them.
std::string CallsMoved(std::string s) {
  for (size_t i = 0; i + 4 < s.size(); i += 37) {
    if (s[i] == '\xe8') s[i + 1] = static_cast<char>(s[i + 1] + 16);
  }
  return s;
}

// Every 29th byte of [from, to) changed.
std::string Touched(std::string s, size_t from, size_t to) {
  for (size_t i = from; i < to && i < s.size(); i += 29) s[i] = static_cast<char>(s[i] + 1);
  return s;
}

size_t NonZero(std::string_view diff) { return diff.size() - std::count(diff.begin(), diff.end(), '\0'); }

TEST_CASE("bsdiff: a rescan replays the first scan's searches and scores on the rewritten base", "[codec][bsdiff]") {
  std::string code = OwnCode();
  std::string big = Binaryish(9 << 20, 8);  // three scan segments
  std::string words = Wordy(100000, 1);
  // `scored`: the rewritten base. `closer`: it has the target's bytes where
  // the base had others (the property checked: the rescan's blocks diff to
  // fewer non-zero bytes); else it differs from both in a window next to the
  // target's insertion (checked: the blocks change). Not a rewrite inside
  // the long matches: a rescan searches where the first scan jumped over a
  // match, a search as long as that match, so that many of them reach the
  // segment's work budget, which counts the searches run, not those
  // replayed (then the two rescans below may part).
  struct Pair {
    const char* what;
    std::string base, target, scored;
    bool closer;
  } pairs[] = {
      {"machine code, rebuilt", code, Rebuilt(code), CallsMoved(code), true},
      {"three segments", big, big.substr(0, 5 << 20) + Binaryish(70000, 9) + big.substr(5 << 20),
       Touched(big, (5 << 20) - 2000, (5 << 20) + 2000), false},
      {"words, edited", words, Wordy(30000, 1) + Wordy(2000, 3) + words.substr(30000), Touched(words, 28000, 32000),
       false},
  };
  ThreadHelpers threads;
  for (const Pair& p : pairs) {
    for (Helpers* h : {static_cast<Helpers*>(&threads), &NoHelpers()}) {
      INFO(p.what << (h == &threads ? ", on threads" : ", serial"));
      // Scored on an unchanged copy, the rescan finds the first scan's blocks.
      BsdiffBatch batch({{p.base, p.target, nullptr, nullptr}});
      batch.Build(*h);
      auto first = batch.Scan(0, *h, {}, /*keep_index=*/true);
      REQUIRE(first.ok());
      std::string copy = p.base;
      auto same = batch.Rescan(0, copy, *h);
      REQUIRE(same.ok());
      CHECK(same->ctrl == first->ctrl);
      CHECK(same->extra == first->extra);
      CHECK(same->diff.empty());  // the caller's to make
      // Scored on the rewritten base: replayed searches give what searching
      // again gives, and the blocks rebuild the target from that base.
      BsdiffBatch replayed({{p.base, p.target, nullptr, nullptr}});
      replayed.Build(*h);
      // Scanned twice: the second scan's record replaces the first's.
      REQUIRE(replayed.Scan(0, *h, {}, /*keep_index=*/true).ok());
      auto again = replayed.Scan(0, *h, {}, /*keep_index=*/true);
      REQUIRE(again.ok());
      CHECK(again->ctrl == first->ctrl);
      CHECK(again->diff == first->diff);
      auto got = replayed.Rescan(0, p.scored, *h);
      REQUIRE(got.ok());
      BsdiffBatch searched({{p.base, p.target, nullptr, nullptr}});
      searched.Build(*h);  // no first scan: every search runs
      auto want = searched.Rescan(0, p.scored, *h);
      REQUIRE(want.ok());
      CHECK(got->ctrl == want->ctrl);
      CHECK(got->extra == want->extra);
      std::string diff = BsdiffDiffStream(got->ctrl, p.scored, p.target);
      CHECK(ApplyBlocks(got->ctrl, p.scored, diff, got->extra) == p.target);
      if (p.closer) {
        INFO("non-zero diff bytes: first scan " << NonZero(first->diff) << ", rescan " << NonZero(diff));
        CHECK(NonZero(diff) < NonZero(first->diff));
      } else {
        CHECK(got->ctrl != first->ctrl);
      }
    }
  }
  // Misuse is refused, not scanned.
  std::string base = Binaryish(5000, 1), target = Binaryish(5000, 2);
  BsdiffBatch batch({{base, target, nullptr, nullptr}});
  batch.Build(NoHelpers());
  CHECK(absl::IsInvalidArgument(batch.Rescan(0, base.substr(1), NoHelpers()).status()));
  REQUIRE(batch.Scan(0, NoHelpers()).ok());  // the index freed
  CHECK(absl::IsFailedPrecondition(batch.Rescan(0, base, NoHelpers()).status()));
}

// Stored in every bsdiff patch: its values must never change (XXH64's
// published test values).
TEST_CASE("Hash64 is XXH64", "[codec][bsdiff]") {
  CHECK(Hash64("") == 0xEF46DB3751D8E999ull);
  CHECK(Hash64("abc") == 0x44BC2CF5AD770999ull);
  CHECK(Hash64("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ull);
  // Every length up to several stripes and a tail, at every alignment.
  std::string data = Binaryish(300, 5);
  for (size_t n = 0; n + 8 <= data.size(); n += 7) {
    std::string alone = data.substr(0, n);
    for (size_t off = 1; off < 8; ++off) {
      std::string shifted = std::string(off, 'x') + alone;
      CHECK(Hash64(std::string_view(shifted).substr(off)) == Hash64(alone));
    }
  }
}

TEST_CASE("zero runs: split and join give the stream back", "[codec][bsdiff]") {
  std::string mixed = std::string(5, '\0') + "ab" + std::string(300, '\0') + "c" + std::string(2, '\0');
  for (const std::string& s : {std::string(), std::string(1000, '\0'), std::string("xyz"), mixed,
                               std::string("\x01\x00\x02\x00\x00\x03", 6), Binaryish(100000, 1)}) {
    ZeroRuns r = SplitZeroRuns(s);
    CHECK(r.runs.size() <= MaxRunsSize(s.size()));
    auto back = JoinZeroRuns(r.runs, r.literals, s.size());
    REQUIRE(back.ok());
    CHECK(*back == s);
  }
  ZeroRuns r = SplitZeroRuns(mixed);
  CHECK(r.literals == "abc");
}

TEST_CASE("zero runs: malformed runs are refused", "[codec][bsdiff]") {
  CHECK_FALSE(JoinZeroRuns(std::string("\0\0", 2), "", 10).ok());            // empty pair
  CHECK_FALSE(JoinZeroRuns(std::string("\0\x02", 2), "a", 10).ok());         // literals missing
  CHECK_FALSE(JoinZeroRuns(std::string("\0\x01", 2), "ab", 10).ok());        // literal left over
  CHECK_FALSE(JoinZeroRuns(std::string("\x0b\0", 2), "", 10).ok());          // beyond max_size
  CHECK_FALSE(JoinZeroRuns(std::string("\x80", 1), "", 10).ok());            // truncated varint
  CHECK_FALSE(JoinZeroRuns(std::string(11, '\xff'), "", 10).ok());           // overlong varint
  auto ok = JoinZeroRuns(std::string("\x02\x01", 2), "q", 3);
  REQUIRE(ok.ok());
  CHECK(*ok == std::string("\0\0q", 3));
}

TEST_CASE("zero runs: read in place, they give what JoinZeroRuns gives and refuse what it refuses", "[codec][bsdiff]") {
  std::string mixed = std::string(5, '\0') + "ab" + std::string(300, '\0') + "c" + std::string(2, '\0');
  for (const std::string& s : {std::string(1000, '\0'), std::string("xyz"), mixed, Binaryish(100000, 1)}) {
    ZeroRuns r = SplitZeroRuns(s);
    auto length = ZeroRunsLength(r.runs, r.literals, s.size());
    REQUIRE(length.ok());
    CHECK(*length == s.size());
    for (uint64_t piece : {uint64_t{1}, uint64_t{3}, uint64_t{1000}, uint64_t{1} << 40}) {
      ZeroRunsReader reader(r.runs, r.literals);
      std::string back;
      for (ZeroRunsReader::Piece p = reader.Next(piece); p.length > 0; p = reader.Next(piece)) {
        CHECK(p.length <= piece);
        if (p.data) back.append(p.data, p.length);
        else back.append(p.length, '\0');
      }
      CHECK(back == s);
    }
  }
  const std::pair<std::string, std::string> bad[] = {
      {std::string("\0\0", 2), ""},     {std::string("\0\x02", 2), "a"}, {std::string("\0\x01", 2), "ab"},
      {std::string("\x0b\0", 2), ""},   {std::string("\x80", 1), ""},     {std::string(11, '\xff'), ""}};
  for (const auto& [runs, literals] : bad) {
    CHECK_FALSE(JoinZeroRuns(runs, literals, 10).ok());
    CHECK_FALSE(ZeroRunsLength(runs, literals, 10).ok());
  }
}

std::string Assemble(const std::string& ctrl, const std::string& diff, const std::string& extra,
                     std::string_view target) {
  std::string patch;
  for (const std::string* s : {&ctrl, &diff, &extra}) PutLE(&patch, s->size(), 4);
  PutLE(&patch, Hash64(target), 8);
  return patch + ctrl + diff + extra;
}

std::string ZeroRunsSection(const std::string& diff) {
  ZeroRuns r = SplitZeroRuns(diff);
  return JoinFrames({Z(r.runs), Z(r.literals)});
}

struct EditedPair {
  std::string base, target;
  EditedPair() : base(Binaryish(200000, 2)), target(base) {
    for (size_t i = 1000; i < target.size(); i += 997) target[i] = static_cast<char>(target[i] + 1);
    for (size_t at = 10000; at < 190000; at += 20000) target.insert(at, Binaryish(40, at));
  }
};

// Images store patches of every earlier layout: they must stay readable.
TEST_CASE("bsdiff: patches of earlier layouts still decode", "[codec][bsdiff]") {
  EditedPair p;
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  std::string fixed = Z(FixedCtrl(streams->ctrl)), extra = Z(streams->extra);
  CtrlColumns c = SplitCtrl(streams->ctrl);
  std::string columns = JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)});
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  auto now = bsdiff.Encode(p.base, p.target);
  REQUIRE(now.ok());
  struct Layout {
    const char* what;
    std::string patch;
  } layouts[] = {
      {"fixed ctrl, whole diff frame", Assemble(fixed, Z(streams->diff), extra, p.target)},
      {"fixed ctrl, zero runs", Assemble(fixed, ZeroRunsSection(streams->diff), extra, p.target)},
      // What the encoder wrote before the LZMA2 and bzip2 section forms.
      {"ctrl columns, zero runs, zstd extra", Assemble(columns, ZeroRunsSection(streams->diff), extra, p.target)},
  };
  for (const Layout& l : layouts) {
    INFO(l.what);
    auto out = bsdiff.Decode(p.base, l.patch, p.target.size());
    INFO(out.status().ToString());
    REQUIRE(out.ok());
    CHECK(*out == p.target);
    CHECK(now->size() <= l.patch.size());
  }
  auto back = bsdiff.Decode(p.base, *now, p.target.size());
  REQUIRE(back.ok());
  CHECK(*back == p.target);
}

TEST_CASE("bsdiff: malformed ctrl columns are refused", "[codec][bsdiff]") {
  EditedPair p;
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  REQUIRE(streams->ctrl.size() > 2);
  std::string diff = ZeroRunsSection(streams->diff), extra = Z(streams->extra);
  CtrlColumns good = SplitCtrl(streams->ctrl);
  auto decode = [&](const std::string& ctrl_section) {
    return GetCodec(CodecId::kBsdiff).Decode(p.base, Assemble(ctrl_section, diff, extra, p.target), p.target.size());
  };
  auto section = [](const CtrlColumns& c) { return JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)}); };
  REQUIRE(decode(section(good)).ok());

  CtrlColumns short_seeks = good;
  short_seeks.seeks = SplitCtrl({streams->ctrl.begin(), streams->ctrl.end() - 1}).seeks;
  CHECK(decode(section(short_seeks)).status().message().find("different lengths") != std::string::npos);

  CtrlColumns cut = good;
  cut.copies.back() = '\x80';  // a varint that never ends
  CHECK(decode(section(cut)).status().message().find("varint") != std::string::npos);

  std::string s = section(good);
  CHECK(decode(s.substr(0, s.size() - 1)).status().message().find("truncated") != std::string::npos);
  CHECK(decode(s.substr(0, 3)).status().message().find("truncated") != std::string::npos);
  CHECK_FALSE(decode(JoinFrames({Z(good.adds), "", Z(good.seeks)})).ok());
}

// A Go binary's rebuild: every few bytes a pointer moved by a small amount,
// so the diff stream is short gaps between small deltas rather than long
// zero runs (esbuild 0.20.0 -> 0.20.1 has that shape).
struct PointerShiftPair {
  std::string base, target;
  PointerShiftPair() : base(Binaryish(400000, 11)) {
    std::mt19937_64 rng(12);
    for (size_t i = 0; i + 8 < base.size(); i += 8 * (1 + rng() % 4)) base[i + 4] = base[i + 5] = 0;
    target = base;
    for (size_t i = 0; i + 8 < target.size(); i += 8 * (1 + rng() % 3)) {
      target[i] = static_cast<char>(target[i] + (i < 200000 ? 0x20 : 0x40));
    }
  }
};

std::string_view Section(std::string_view patch, int k) {
  uint64_t lens[3];
  for (int i = 0; i < 3; ++i) {
    lens[i] = 0;
    for (int b = 0; b < 4; ++b) lens[i] |= uint64_t{static_cast<uint8_t>(patch[4 * i + b])} << (8 * b);
  }
  size_t off = 20;
  for (int i = 0; i < k; ++i) off += lens[i];
  return patch.substr(off, lens[k]);
}

TEST_CASE("bsdiff: Go-like diffs are stored in the bzip2 form, smaller than zstd's zero runs", "[codec][bsdiff]") {
  PointerShiftPair p;
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  auto patch = bsdiff.Encode(p.base, p.target);
  REQUIRE(patch.ok());
  std::string_view diff = Section(*patch, 1);
  REQUIRE(!diff.empty());
  CHECK(diff[0] == kBzip2Form);
  CHECK(diff.size() < ZeroRunsSection(streams->diff).size());
  auto back = bsdiff.Decode(p.base, *patch, p.target.size());
  REQUIRE(back.ok());
  CHECK(*back == p.target);
}

TEST_CASE("bsdiff: on machine code the diff section is the smallest form", "[codec][bsdiff]") {
  // Which form wins depends on the code (this binary's own, so on the build):
  // the property is that the encoder keeps the smallest of zstd's zero runs and
  // bzip2, and that it decodes.
  std::string code = OwnCode();
  std::string target = Rebuilt(code);
  auto streams = BsdiffCompute(code, target, NoHelpers());
  REQUIRE(streams.ok());
  auto patch = GetCodec(CodecId::kBsdiff).Encode(code, target);
  REQUIRE(patch.ok());
  std::string_view diff = Section(*patch, 1);
  auto bz = Bzip2CompressSection(streams->diff);
  REQUIRE(bz.ok());
  std::string zero_runs = ZeroRunsSection(streams->diff);
  CHECK(diff.size() <= std::min(zero_runs.size(), bz->size()));
  if (!diff.empty() && diff[0] == kBzip2Form) CHECK(bz->size() < zero_runs.size());
  if (IsMultiFrame(diff)) CHECK(zero_runs.size() <= bz->size());
  auto back = GetCodec(CodecId::kBsdiff).Decode(code, *patch, target.size());
  REQUIRE(back.ok());
  CHECK(*back == target);
}

TEST_CASE("bsdiff: every section form decodes", "[codec][bsdiff]") {
  EditedPair p;
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  CtrlColumns c = SplitCtrl(streams->ctrl);
  std::string ctrl = JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)});
  auto lzma_diff = Lzma2CompressSection(streams->diff), bz_diff = Bzip2CompressSection(streams->diff);
  auto lzma_extra = Lzma2CompressSection(streams->extra), bz_extra = Bzip2CompressSection(streams->extra);
  REQUIRE(lzma_diff.ok());
  REQUIRE(bz_diff.ok());
  REQUIRE(lzma_extra.ok());
  REQUIRE(bz_extra.ok());
  CHECK((*lzma_diff)[0] == kLzma2Form);
  CHECK((*bz_diff)[0] == kBzip2Form);
  for (const std::string* diff : {&*lzma_diff, &*bz_diff}) {
    for (const std::string* extra : {&*lzma_extra, &*bz_extra}) {
      auto out = GetCodec(CodecId::kBsdiff).Decode(p.base, Assemble(ctrl, *diff, *extra, p.target), p.target.size());
      INFO(out.status().ToString());
      REQUIRE(out.ok());
      CHECK(*out == p.target);
    }
  }
}

// The raw pack form: every section stored as it is, read only from a pack.
TEST_CASE("bsdiff: the raw pack form decodes from a pack only and in every decoder", "[codec][bsdiff]") {
  EditedPair p;
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  auto raw = bsdiff.EncodeRawForPack(p.base, p.target, NoHelpers());
  REQUIRE(raw.ok());
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  // Sections as the format says: the columns, the zero runs and literals, and the extra stream, uncompressed.
  CtrlColumns c = SplitCtrl(streams->ctrl);
  ZeroRuns z = SplitZeroRuns(streams->diff);
  CHECK(*raw == Assemble(JoinFrames({c.adds, c.copies, c.seeks}, kRawPartsForm),
                         JoinFrames({z.runs, z.literals}, kRawPartsForm), kRawPartsForm + streams->extra, p.target));
  auto back = bsdiff.DecodeFromPack(p.base, *raw, p.target.size());
  REQUIRE(back.ok());
  CHECK(*back == p.target);
  ThreadHelpers helpers;
  auto with = bsdiff.DecodeWith([&]() -> absl::StatusOr<std::string> { return p.base; }, *raw, p.target.size(),
                                /*packed=*/true, helpers);
  REQUIRE(with.ok());
  CHECK(*with == p.target);
  // Outside a pack a raw section is refused, whichever it is.
  auto standalone = bsdiff.Decode(p.base, *raw, p.target.size());
  CHECK(standalone.status().message().find("raw pack form outside a pack") != std::string::npos);
  auto unpacked = bsdiff.DecodeWith([&]() -> absl::StatusOr<std::string> { return p.base; }, *raw, p.target.size(),
                                    /*packed=*/false, helpers);
  CHECK(unpacked.status().message().find("raw pack form outside a pack") != std::string::npos);
  std::string ctrl = JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)});
  std::string diff = ZeroRunsSection(streams->diff), extra = Z(streams->extra);
  for (int raw_section = 0; raw_section < 3; ++raw_section) {
    std::string patch = Assemble(raw_section == 0 ? JoinFrames({c.adds, c.copies, c.seeks}, kRawPartsForm) : ctrl,
                                 raw_section == 1 ? JoinFrames({z.runs, z.literals}, kRawPartsForm) : diff,
                                 raw_section == 2 ? kRawPartsForm + streams->extra : extra, p.target);
    INFO(raw_section);
    CHECK(bsdiff.Decode(p.base, patch, p.target.size()).status().message().find("outside a pack") !=
          std::string::npos);
    auto mixed = bsdiff.DecodeFromPack(p.base, patch, p.target.size());
    REQUIRE(mixed.ok());
    CHECK(*mixed == p.target);
  }
  // Damage is an error, never other bytes: cut parts, a literal changed (the hash), runs past the target.
  std::string cut = *raw;
  cut.resize(cut.size() - 1);
  CHECK_FALSE(bsdiff.DecodeFromPack(p.base, cut, p.target.size()).ok());
  std::string flipped = Assemble(JoinFrames({c.adds, c.copies, c.seeks}, kRawPartsForm),
                                 JoinFrames({z.runs, std::string(z.literals).replace(0, 1, "\x7f")}, kRawPartsForm),
                                 kRawPartsForm + streams->extra, p.target);
  CHECK(bsdiff.DecodeFromPack(p.base, flipped, p.target.size()).status().message().find("checksum") !=
        std::string::npos);
  CHECK_FALSE(bsdiff.DecodeFromPack(p.base, *raw, p.target.size() - 1).ok());
}

TEST_CASE("bsdiff: malformed LZMA2 and bzip2 sections are refused", "[codec][bsdiff]") {
  std::string data = Binaryish(100000, 21);
  for (auto compress : {Lzma2CompressSection, Bzip2CompressSection}) {
    auto s = compress(data);
    REQUIRE(s.ok());
    auto back = DecompressAltSection(*s, data.size());
    REQUIRE(back.ok());
    CHECK(*back == data);
    auto over = DecompressAltSection(*s, data.size() - 1);
    CHECK(over.status().message().find("longer than its bound") != std::string::npos);
    auto cut = DecompressAltSection(s->substr(0, s->size() - 5), data.size());
    CHECK(cut.status().message().find("truncated") != std::string::npos);
    auto trailing = DecompressAltSection(*s + "x", data.size());
    CHECK(trailing.status().message().find("bytes after") != std::string::npos);
  }
  auto lz = Lzma2CompressSection(data);
  REQUIRE(lz.ok());
  std::string bad_dict = *lz;
  bad_dict[1] = 40;
  CHECK(DecompressAltSection(bad_dict, data.size()).status().message().find("dictionary") != std::string::npos);
  CHECK_FALSE(DecompressAltSection(std::string(1, kLzma2Form), data.size()).ok());
  CHECK_FALSE(DecompressAltSection(std::string(1, kBzip2Form), data.size()).ok());
}

// DecodeWith decodes the sections on helper threads while the base is made
// (patch's path for a big changed file): the same bytes and the same errors
// as Decode, and the base's error before the patch's.
TEST_CASE("bsdiff: DecodeWith on helper threads gives Decode's bytes and errors", "[codec][bsdiff]") {
  EditedPair p;
  auto streams = BsdiffCompute(p.base, p.target, NoHelpers());
  REQUIRE(streams.ok());
  CtrlColumns c = SplitCtrl(streams->ctrl);
  std::string ctrl = JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)});
  auto lzma_extra = Lzma2CompressSection(streams->extra), bz_diff = Bzip2CompressSection(streams->diff);
  REQUIRE(lzma_extra.ok());
  REQUIRE(bz_diff.ok());
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  auto now = bsdiff.Encode(p.base, p.target);
  REQUIRE(now.ok());
  const std::string patches[] = {
      *now,
      Assemble(ctrl, ZeroRunsSection(streams->diff), *lzma_extra, p.target),
      Assemble(ctrl, *bz_diff, Z(streams->extra), p.target),
      Assemble(Z(FixedCtrl(streams->ctrl)), Z(streams->diff), Z(streams->extra), p.target),  // oldest layout
  };
  int base_calls = 0;
  auto base = [&]() -> absl::StatusOr<std::string> {
    ++base_calls;
    return p.base;
  };
  for (const std::string& patch : patches) {
    ThreadHelpers helpers;
    base_calls = 0;
    auto out = bsdiff.DecodeWith(base, patch, p.target.size(), false, helpers);
    INFO(out.status().ToString());
    REQUIRE(out.ok());
    CHECK(*out == p.target);
    CHECK(base_calls == 1);
    CHECK(helpers.parallel_runs() == 1);
    // Damage anywhere in the streams: the same error as Decode's.
    for (size_t at : {size_t{20}, patch.size() / 3, patch.size() / 2, patch.size() - 3}) {
      std::string bad = patch;
      bad[at] = static_cast<char>(bad[at] ^ 0x5A);
      auto serial = bsdiff.Decode(p.base, bad, p.target.size());
      auto parallel = bsdiff.DecodeWith(base, bad, p.target.size(), false, helpers);
      INFO("byte " << at << " of " << patch.size());
      REQUIRE_FALSE(serial.ok());
      REQUIRE_FALSE(parallel.ok());
      CHECK(parallel.status() == serial.status());
    }
  }
  // A failing base: its error, whatever the patch.
  auto no_base = []() -> absl::StatusOr<std::string> { return absl::UnavailableError("base: read error"); };
  ThreadHelpers helpers;
  for (const std::string& patch : {*now, now->substr(0, 10)}) {
    auto out = bsdiff.DecodeWith(no_base, patch, p.target.size(), false, helpers);
    CHECK(out.status() == absl::UnavailableError("base: read error"));
  }
}


// A patch made by hand from random triples (add blocks with sparse
// differences, extra bytes, seeks both ways) over a base of `base_size`
// bytes, and the target it describes, computed here byte by byte.
struct HandPatch {
  std::string base, target, patch;
  std::vector<BsdiffTriple> triples;
  std::string diff, extra;
  HandPatch(size_t base_size, size_t min_add, size_t max_add, uint64_t seed) : base(Binaryish(base_size, seed)) {
    std::mt19937_64 rng(seed);
    uint64_t oldpos = 0;
    while (target.size() < base_size) {
      uint64_t add = std::min<uint64_t>(min_add + rng() % (max_add - min_add + 1), base.size() - oldpos);
      for (uint64_t k = 0; k < add; ++k) {
        char d = rng() % 50 == 0 ? static_cast<char>(rng()) : 0;
        diff.push_back(d);
        target.push_back(static_cast<char>(base[oldpos + k] + d));
      }
      oldpos += add;
      uint64_t copy = rng() % 3 == 0 ? rng() % std::min<uint64_t>(300, max_add) : 0;
      std::string fresh = Binaryish(copy, rng());
      extra += fresh;
      target += fresh;
      // Seek anywhere that leaves at least max_add bytes of base.
      int64_t to = static_cast<int64_t>(rng() % (base.size() - max_add));
      triples.push_back({add, copy, to - static_cast<int64_t>(oldpos)});
      oldpos = static_cast<uint64_t>(to);
    }
    patch = Build(triples);
  }
  std::string Build(const std::vector<BsdiffTriple>& t) const {
    CtrlColumns c = SplitCtrl(t);
    return Assemble(JoinFrames({Z(c.adds), Z(c.copies), Z(c.seeks)}), ZeroRunsSection(diff), Z(extra), target);
  }
};

// Targets of 4 MiB and more are rebuilt in parts (a checking pass, then the
// parts on helpers): the bytes and errors of a serial rebuild, whatever the
// helpers; patches of too many triples to list are streamed, also correctly.
TEST_CASE("bsdiff: a big target rebuilt in parts on helpers gives the serial bytes and errors", "[codec][bsdiff]") {
  const DeltaCodec& bsdiff = GetCodec(CodecId::kBsdiff);
  HandPatch h(6 << 20, 2000, 60000, 11);
  REQUIRE(h.target.size() >= (6u << 20));
  auto base = [&]() -> absl::StatusOr<std::string> { return h.base; };
  ThreadHelpers helpers;
  auto serial = bsdiff.Decode(h.base, h.patch, h.target.size());
  auto parallel = bsdiff.DecodeWith(base, h.patch, h.target.size(), false, helpers);
  REQUIRE(serial.ok());
  REQUIRE(parallel.ok());
  CHECK(*serial == h.target);
  CHECK(*parallel == h.target);
  CHECK(helpers.parallel_runs() == 2);  // the sections, then the parts
  // A triple out of bounds anywhere (first, middle, last part): the serial
  // error, and no bytes.
  for (size_t k : {size_t{0}, h.triples.size() / 2, h.triples.size() - 1}) {
    for (int what = 0; what < 3; ++what) {
      std::vector<BsdiffTriple> t = h.triples;
      if (what == 0) t[k].add += 1 << 20;
      if (what == 1) t[k].copy += 1 << 20;
      if (what == 2) t[k].seek = -static_cast<int64_t>(8 << 20);
      std::string bad = h.Build(t);
      auto s = bsdiff.Decode(h.base, bad, h.target.size());
      auto p = bsdiff.DecodeWith(base, bad, h.target.size(), false, helpers);
      INFO("triple " << k << " damage " << what << ": " << s.status());
      REQUIRE_FALSE(s.ok());
      CHECK(s.status().code() == absl::StatusCode::kDataLoss);
      CHECK(p.status() == s.status());
    }
  }
  // A ctrl stream cut short: the triples before it are checked first.
  {
    std::vector<BsdiffTriple> t(h.triples.begin(), h.triples.end() - 1);
    auto s = bsdiff.Decode(h.base, h.Build(t), h.target.size());
    auto p = bsdiff.DecodeWith(base, h.Build(t), h.target.size(), false, helpers);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(std::string(s.status().message()), Catch::Contains("do not cover target"));
    CHECK(p.status() == s.status());
  }
  // More triples than are listed (one per 64 target bytes): streamed.
  HandPatch many(5 << 20, 8, 40, 12);
  REQUIRE(many.triples.size() > many.target.size() / 64 + 4096);
  auto many_base = [&]() -> absl::StatusOr<std::string> { return many.base; };
  auto out = bsdiff.DecodeWith(many_base, many.patch, many.target.size(), false, helpers);
  REQUIRE(out.ok());
  CHECK(*out == many.target);
}

}  // namespace
}  // namespace d4c::codec_internal
