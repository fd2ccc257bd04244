#include "relcopy_match.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "relcopy_format.h"

namespace d4c::codec_internal::relcopy {

namespace {

// Search comparisons stop at this many bytes: longer matches are extended
// afterwards, and without the cap periodic data makes every candidate
// compare long runs.
constexpr int64_t kSearchCap = 4096;
// Matches anywhere in the base are found through a hash of their first
// kHashBytes bytes; shorter ones only by continuing a recent alignment. A
// shorter hash fills the chains with common prefixes and finds less (typescript
// pairs, bytes of the delta: 16-byte hash and depth 1024: 1,364 / 3,834 / 593;
// 8 bytes: 1,634 / 3,822 / 710; depth 128: 1,485 / 3,834 / 623; the suffix
// array this replaced: 1,308 / 3,841 / 595 at three times the diff time).
constexpr int64_t kHashBytes = 16;
static_assert(kHashBytes % 8 == 0);
// Candidates weighed per search, newest base position first.
constexpr int kChainDepth = 1024;
// A recent alignment matching this long is taken without a search.
constexpr int64_t kGoodEnough = 64;
// Byte comparisons allowed for searches (as bsdiff_diff.cc's budget).
constexpr uint64_t kWorkPerByte = 64;
constexpr uint64_t kWorkBase = uint64_t{256} << 20;

struct Candidate {
  int64_t len = 0;
  uint64_t src = 0;
  int64_t score = std::numeric_limits<int64_t>::min();  // bytes saved over literals
};

// Hash chains over every position of the base rather than a suffix array:
// building them is linear (~20 ms for typescript's 9 MB bundles, where
// divsufsort took ~0.5 s and was two thirds of a diff), and a search weighs
// every candidate by what its address costs, not only the longest.
class Matcher {
 public:
  Matcher(std::string_view base, std::string_view target)
      : old_(reinterpret_cast<const uint8_t*>(base.data())),
        oldsize_(static_cast<int64_t>(base.size())),
        new_(reinterpret_cast<const uint8_t*>(target.data())),
        newsize_(static_cast<int64_t>(target.size())),
        budget_(kWorkBase + kWorkPerByte * (base.size() + target.size())) {}

  void BuildIndex();
  void Run(std::string* out);

 private:
  uint32_t Hash(const uint8_t* p) const {
    uint64_t h = 0;
    for (int64_t i = 0; i < kHashBytes; i += 8) {
      uint64_t v;
      std::memcpy(&v, p + i, 8);
      h = (h ^ v) * 0x9E3779B185EBCA87ull;
    }
    return static_cast<uint32_t>(h >> (64 - hash_bits_));
  }
  int64_t MatchLen(int64_t oldpos, int64_t newpos, int64_t cap) const;
  Candidate Best(int64_t at, int64_t lit_start, const Slots& slots);
  void Consider(const Slots& slots, int64_t src, int64_t len, Candidate* best) const;
  void Search(int64_t at, const Slots& slots, Candidate* best);

  const uint8_t* old_;
  int64_t oldsize_;
  const uint8_t* new_;
  int64_t newsize_;
  int hash_bits_ = 10;
  std::vector<int32_t> head_;  // newest position per hash, -1 if none
  // The previous position with the same hash. Not a vector: every element
  // is written by BuildIndex, and zero-filling 4 bytes per base byte first
  // was 5% of a typescript diff.
  std::unique_ptr<int32_t[]> prev_;
  uint64_t budget_;
  uint64_t work_ = 0;
};

void Matcher::BuildIndex() {
  if (oldsize_ < kHashBytes) return;
  while (hash_bits_ < 20 && (int64_t{1} << hash_bits_) < oldsize_) ++hash_bits_;
  head_.assign(size_t{1} << hash_bits_, -1);
  prev_.reset(new int32_t[static_cast<size_t>(oldsize_ - kHashBytes + 1)]);
  for (int64_t i = 0; i + kHashBytes <= oldsize_; ++i) {
    int32_t& h = head_[Hash(old_ + i)];
    prev_[i] = h;
    h = static_cast<int32_t>(i);
  }
}

// Common prefix of old[oldpos..] and new[newpos..], at most `cap` bytes.
int64_t Matcher::MatchLen(int64_t oldpos, int64_t newpos, int64_t cap) const {
  if (oldpos < 0 || oldpos >= oldsize_) return 0;
  int64_t n = std::min({oldsize_ - oldpos, newsize_ - newpos, cap});
  const uint8_t* a = old_ + oldpos;
  const uint8_t* b = new_ + newpos;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    if (x != y) return i + (std::countr_zero(x ^ y) >> 3);
  }
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

void Matcher::Consider(const Slots& slots, int64_t src, int64_t len, Candidate* best) const {
  if (len <= 0) return;
  int slot;
  int64_t cost = VarintLen(static_cast<uint64_t>(len) << 1 | 1) + VarintLen(slots.Address(src, &slot));
  int64_t score = len - cost;
  if (score > best->score || (score == best->score && len > best->len)) *best = {len, static_cast<uint64_t>(src), score};
}

// The best-scoring match of new[at..] among the base positions that share
// its first bytes' hash (newest first, kChainDepth of them): the longest,
// less what its address costs, so that of equally long matches the one
// nearest a recent copy wins.
void Matcher::Search(int64_t at, const Slots& slots, Candidate* best) {
  if (head_.empty() || work_ > budget_ || newsize_ - at < kHashBytes) return;
  int64_t cap = std::min(kSearchCap, newsize_ - at);
  Candidate found;
  int32_t p = head_[Hash(new_ + at)];
  for (int depth = 0; p >= 0 && depth < kChainDepth; ++depth, p = prev_[p]) {
    int64_t l = MatchLen(p, at, cap);
    work_ += static_cast<uint64_t>(l) + 1;
    if (l < kHashBytes) continue;
    Consider(slots, p, l, &found);
  }
  if (found.len == 0) return;
  if (found.len == cap) found.len = MatchLen(static_cast<int64_t>(found.src), at, newsize_);
  Consider(slots, static_cast<int64_t>(found.src), found.len, best);
}

// Best copy starting at `at`, given literals pending since `lit_start`: the
// recent alignments continued (as if the literals replaced base bytes, or were
// inserted), else a search.
Candidate Matcher::Best(int64_t at, int64_t lit_start, const Slots& slots) {
  Candidate best;
  int64_t seen[2 * kSlots];
  int nseen = 0;
  auto aligned = [&](int64_t src) {
    if (src < 0 || src >= oldsize_ || std::find(seen, seen + nseen, src) != seen + nseen) return;
    seen[nseen++] = src;
    Consider(slots, src, MatchLen(src, at, newsize_), &best);
  };
  for (int s = 0; s < kSlots; ++s) {
    int64_t end = static_cast<int64_t>(slots.at(s));
    aligned(end + (at - lit_start));
    if (at > lit_start) aligned(end);
  }
  if (best.len < kGoodEnough) Search(at, slots, &best);
  return best;
}

void Matcher::Run(std::string* out) {
  Writer w(out);
  int64_t at = 0, lit = 0;
  while (at < newsize_) {
    Candidate c = Best(at, lit, w.slots());
    if (c.score <= 0) {
      ++at;
      continue;
    }
    // Lazy step: a clearly better copy one byte later wins over this one.
    if (at + 1 < newsize_ && Best(at + 1, lit, w.slots()).score > c.score + 1) {
      ++at;
      continue;
    }
    w.Op(std::string_view(reinterpret_cast<const char*>(new_) + lit, at - lit), c.src, c.len);
    at += c.len;
    lit = at;
  }
  if (lit < newsize_)
    w.Op(std::string_view(reinterpret_cast<const char*>(new_) + lit, newsize_ - lit), 0, 0);
}

}  // namespace

absl::StatusOr<std::string> Match(std::string_view base, std::string_view target) {
  constexpr uint64_t kMax = std::numeric_limits<int32_t>::max();
  if (base.size() > kMax || target.size() > kMax)
    return absl::InvalidArgumentError("relcopy: inputs of 2 GiB or more are not supported");
  try {
    Matcher m(base, target);
    m.BuildIndex();
    std::string out;
    m.Run(&out);
    if (out.size() > LiteralOnlySize(target.size())) {
      out.clear();
      Writer(&out).Op(target, 0, 0);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("relcopy: out of memory");
  }
}

}  // namespace d4c::codec_internal::relcopy
