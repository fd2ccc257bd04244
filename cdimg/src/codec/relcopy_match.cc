#include "codec/relcopy_match.h"

#include <divsufsort.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "codec/relcopy_format.h"

namespace d4c::codec_internal::relcopy {

namespace {

// Search comparisons stop at this many bytes: longer matches are extended
// afterwards, and without the cap periodic data makes every search compare
// long runs at each step of the binary search.
constexpr int64_t kSearchCap = 4096;
// Equal-length matches neighbour each other in the suffix array; this many
// on each side are weighed for the cheapest address.
constexpr int kTieScan = 256;
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

class Matcher {
 public:
  Matcher(std::string_view base, std::string_view target)
      : old_(reinterpret_cast<const uint8_t*>(base.data())),
        oldsize_(static_cast<int64_t>(base.size())),
        new_(reinterpret_cast<const uint8_t*>(target.data())),
        newsize_(static_cast<int64_t>(target.size())),
        budget_(kWorkBase + kWorkPerByte * (base.size() + target.size())) {}

  bool BuildSuffixArray() {
    if (oldsize_ == 0) return true;
    sa_.resize(oldsize_);
    return divsufsort(old_, sa_.data(), static_cast<saidx_t>(oldsize_)) == 0;
  }
  void Run(std::string* out);

 private:
  int64_t MatchLen(int64_t oldpos, int64_t newpos, int64_t cap) const;
  Candidate Best(int64_t at, int64_t lit_start, const Slots& slots);
  void Consider(const Slots& slots, int64_t src, int64_t len, Candidate* best) const;
  void Search(int64_t at, const Slots& slots, Candidate* best);

  const uint8_t* old_;
  int64_t oldsize_;
  const uint8_t* new_;
  int64_t newsize_;
  std::vector<saidx_t> sa_;
  uint64_t budget_;
  uint64_t work_ = 0;
};

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
    if (x != y) break;
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

// The longest match of new[at..] anywhere in the base (binary search of the
// suffix array, as in bsdiff_diff.cc), then the cheapest address among the
// suffixes that match as long.
void Matcher::Search(int64_t at, const Slots& slots, Candidate* best) {
  if (oldsize_ == 0 || work_ > budget_) return;
  int64_t cap = std::min(kSearchCap, newsize_ - at);
  auto len = [&](int64_t i, int64_t limit) {
    int64_t l = MatchLen(sa_[i], at, limit);
    work_ += static_cast<uint64_t>(l) + 1;
    return l;
  };
  int64_t lo = 0, hi = oldsize_ - 1;
  int64_t llo = len(lo, cap), lhi = len(hi, cap);
  while (hi - lo >= 2) {
    int64_t mid = lo + (hi - lo) / 2;
    int64_t p = sa_[mid];
    int64_t l = len(mid, cap);
    bool less = l < cap && (l == oldsize_ - p || old_[p + l] < new_[at + l]);
    if (less) lo = mid, llo = l;
    else hi = mid, lhi = l;
  }
  int64_t l = std::max(llo, lhi);
  if (l == 0) return;
  int64_t idx = llo >= lhi ? lo : hi;
  // Cheapest address among the equally long matches; ties to the lowest source.
  int64_t pick = sa_[idx];
  int slot;
  uint64_t pick_cost = VarintLen(slots.Address(pick, &slot));
  for (int dir = -1; dir <= 1; dir += 2) {
    for (int64_t j = idx + dir, k = 0; j >= 0 && j < oldsize_ && k < kTieScan; j += dir, ++k) {
      if (len(j, l) < l) break;
      int64_t p = sa_[j];
      uint64_t c = VarintLen(slots.Address(p, &slot));
      if (c < pick_cost || (c == pick_cost && p < pick)) pick = p, pick_cost = c;
    }
  }
  Consider(slots, pick, l == cap ? MatchLen(pick, at, newsize_) : l, best);
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
  constexpr uint64_t kMax = std::numeric_limits<saidx_t>::max();
  if (base.size() > kMax || target.size() > kMax)
    return absl::InvalidArgumentError("relcopy: inputs of 2 GiB or more are not supported");
  try {
    Matcher m(base, target);
    if (!m.BuildSuffixArray()) return absl::InternalError("relcopy: divsufsort failed");
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
