#include "bsdiff_diff.h"

#include <divsufsort.h>

#include <algorithm>
#include <functional>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

// Cursor of the scan over the target; names follow Percival's bsdiff.c.
struct ScanState {
  int64_t scan = 0, len = 0, pos = 0;
  int64_t lastscan = 0, lastpos = 0, lastoffset = 0;
};

// The classic scan is quadratic on some inputs (long near-identical repeats:
// every position re-verifies a long match). Work is counted in byte
// comparisons; past this budget the rest of the target is emitted the way the
// algorithm ends anyway, so time stays bounded and the patch stays valid.
// Real binaries use a fraction of it (biome 1.9.2 -> 1.9.3, 28 MB: 0.6 G of 3.9 G).
constexpr uint64_t kWorkPerByte = 64;
constexpr uint64_t kWorkBase = uint64_t{256} << 20;

// Where in the suffix array the suffixes of each key start: a key is the top
// `bits` bits of a suffix's first three bytes, zero-padded past the end of
// the base (24 bits: the whole three bytes; 16: the first two). A shorter
// suffix pads with bytes no real byte is below, so keys never decrease along
// the suffix array: the suffixes of key k are the entries [starts[k],
// starts[k + 1]), those before all sort below a pattern of key k (padded
// the same way) and those after above it.
struct PrefixTable {
  int bits = 16;
  std::unique_ptr<uint32_t[]> starts;  // 2^bits + 1 entries; null for SearchStart::kWholeArray
  uint32_t Key(const uint8_t* p, int64_t avail) const {
    uint32_t v = uint32_t{p[0]} << 16;
    if (avail > 1) v |= uint32_t{p[1]} << 8;
    if (avail > 2) v |= p[2];
    return v >> (24 - bits);
  }
};

// Key bits for a base of `size` bytes: one key per two to eight base bytes
// (a table of at most two bytes per base byte), from the two-byte keys up
// to whole three-byte ones. Each bit more is one binary-search step less
// for a search started from its key (FromPrefixKey), a step that reads the
// base at random.
int PrefixBitsFor(int64_t size) {
  int bits = 16;
  while (bits < 24 && (int64_t{4} << bits) <= size) ++bits;
  return bits;
}

// The base with its suffix array and prefix table: built once, then read by
// the scans of all segments of the target.
struct SuffixIndex {
  SuffixIndex(std::string_view base, SearchStart start)
      : old(reinterpret_cast<const uint8_t*>(base.data())), size(static_cast<int64_t>(base.size())), start(start) {}
  void Allocate();
  void Sort();
  void CountPrefixes();
  // The tasks that fill the rank once the suffix array is sorted.
  void RankTasks(std::vector<std::function<void()>>* tasks);

  const uint8_t* old;
  int64_t size;
  SearchStart start;
  std::unique_ptr<saidx_t[]> sa;
  std::unique_ptr<saidx_t[]> rank;  // the inverse of sa (rank[sa[i]] == i); kLinked only
  PrefixTable prefixes;
  bool sorted = false;
};

// Where a segment's searches ended, in target order, for a rescan of the
// same target in the same index: a search's outcome depends on the index
// and the target only (where it starts changes only its cost). A scan
// searches at a fraction of the positions (biome 1.9.2 -> 1.9.3: 7.8 M of
// 28 M), mostly on the previous search's diagonal, hence a byte list: per
// search the distance from the previous one (a varint, times two, plus one
// if on its diagonal), then the base position unless on the diagonal
// (4 bytes). ~2.5 bytes per search on biome.
class SearchMemo {
 public:
  void Record(int64_t scan, int64_t pos) {
    uint64_t d = static_cast<uint64_t>(scan - scan_);
    bool diagonal = pos - pos_ == scan - scan_;
    PutVarint(&bytes_, d * 2 + (diagonal ? 1 : 0));
    if (!diagonal) PutLE(&bytes_, static_cast<uint64_t>(pos), 4);
    scan_ = scan;
    pos_ = pos;
  }
  // Once recording is over: replays from the start, asked in ascending order.
  std::optional<int64_t> Replay(int64_t scan) {
    if (!replaying_) {
      replaying_ = true;
      next_ = 0;
      scan_ = -1;
      pos_ = -1;
      Step();
    }
    while (scan_ < scan && Step()) {
    }
    if (scan_ == scan) return pos_;
    return std::nullopt;
  }

 private:
  // Decodes the next search into scan_/pos_; false at the end.
  bool Step() {
    if (next_ >= bytes_.size()) {
      scan_ = std::numeric_limits<int64_t>::max();
      return false;
    }
    uint64_t v = 0;
    GetVarint(bytes_, &next_, &v);  // our own bytes: never truncated
    int64_t d = static_cast<int64_t>(v >> 1);
    scan_ += d;
    if (v & 1) {
      pos_ += d;
    } else {
      pos_ = static_cast<int64_t>(GetLE(bytes_.data() + next_, 4));
      next_ += 4;
    }
    return true;
  }

  std::string bytes_;
  size_t next_ = 0;
  bool replaying_ = false;
  int64_t scan_ = -1, pos_ = -1;  // the last recorded (or replayed) search
};

// A search's last match, which the next position's search starts from.
struct LastMatch {
  int64_t scan = -1, pos = 0, len = 0;
};

// Where a pattern sorts among the base's suffixes: between sa[lo] and sa[hi],
// whose common prefixes with it are llo and lhi bytes long. lo may be -1 and
// hi the array's size: ends standing for "before all" and "after all".
struct Bracket {
  int64_t lo, hi, llo, lhi;
};

// Scans one segment of the target against the whole base.
class Differ {
 public:
  // `scored`: the bytes the alignments are scored on (the index's base, or
  // a rewrite of it of the same size); the searches read the index's base.
  Differ(const SuffixIndex& index, std::string_view target, uint64_t budget, const uint8_t* scored = nullptr,
         SearchMemo* memo = nullptr)
      : memo_(memo),
        rescan_(scored != nullptr),
        old_(index.old),
        scored_(scored != nullptr ? scored : index.old),
        oldsize_(index.size),
        new_(reinterpret_cast<const uint8_t*>(target.data())),
        newsize_(static_cast<int64_t>(target.size())),
        sa_(index.sa.get()),
        rank_(index.rank.get()),
        prefixes_(index.prefixes),
        budget_(budget) {}

  // Appends the segment's triples and bytes; returns where in the base the
  // last triple leaves the decoder (its old position).
  int64_t Run(BsdiffStreams* out);

 private:
  int64_t MatchLen(int64_t oldpos, int64_t newpos, int64_t skip) const;
  // Whether the base suffix at oldpos, which shares l bytes with new[scan..],
  // sorts before it.
  bool Less(int64_t oldpos, int64_t scan, int64_t l) const {
    return l < newsize_ - scan && (l == oldsize_ - oldpos || old_[oldpos + l] < new_[scan + l]);
  }
  Bracket FromPrefixKey(int64_t scan) const;
  bool FromLastMatch(int64_t scan, Bracket* b) const;
  void Narrow(int64_t scan, Bracket* b) const;
  int64_t Search(int64_t scan, int64_t* pos);
  int64_t FindMatch(ScanState& st);
  int64_t ForwardLen(const ScanState& st) const;
  int64_t BackwardLen(const ScanState& st) const;
  void ResolveOverlap(const ScanState& st, int64_t* lenf, int64_t* lenb) const;
  void Emit(ScanState& st, BsdiffStreams* out) const;
  bool OldMatches(int64_t newpos, int64_t offset) const {
    int64_t o = newpos + offset;
    return o >= 0 && o < oldsize_ && scored_[o] == new_[newpos];
  }
  // The match at `pos` as scored: its length on the scored bytes.
  int64_t ScoredLen(int64_t pos, int64_t scan) const;

  SearchMemo* memo_;  // recorded by a first scan, replayed by a rescan
  bool rescan_;
  const uint8_t* old_;
  const uint8_t* scored_;  // old_ unless rescanning against a rewritten base
  int64_t oldsize_;
  const uint8_t* new_;
  int64_t newsize_;
  const saidx_t* sa_;
  const saidx_t* rank_;  // null unless SearchStart::kLinked
  const PrefixTable& prefixes_;
  uint64_t budget_;
  mutable uint64_t work_ = 0;  // counted by the const helpers
  LastMatch last_;
};

// The suffix sort is most of the work and one thread's; the prefix keys need
// only the base and are counted beside it, and the rank is filled in halves.
// Build's steps are tasks, so that several indexes can be built side by
// side (BsdiffComputeMany): Allocate on the caller (where bad_alloc is
// caught), then the Sort and CountPrefixes tasks, then the Rank tasks.
void SuffixIndex::Allocate() {
  if (size == 0) return;
  sa = std::make_unique_for_overwrite<saidx_t[]>(size);
  prefixes.bits = PrefixBitsFor(size);
  if (start != SearchStart::kWholeArray)
    prefixes.starts = std::make_unique<uint32_t[]>((size_t{1} << prefixes.bits) + 1);
  if (start == SearchStart::kLinked) rank = std::make_unique_for_overwrite<saidx_t[]>(size);
}

void SuffixIndex::Sort() {
  sorted = size == 0 || divsufsort(old, sa.get(), static_cast<saidx_t>(size)) == 0;
}

void SuffixIndex::RankTasks(std::vector<std::function<void()>>* tasks) {
  if (size == 0 || !rank || !sorted) return;
  auto fill = [this](int64_t from, int64_t to) {
    for (int64_t i = from; i < to; ++i) rank[sa[i]] = static_cast<saidx_t>(i);
  };
  tasks->push_back([fill, this] { fill(0, size / 2); });
  tasks->push_back([fill, this] { fill(size / 2, size); });
}

// Counting the keys gives every key's place without touching the suffix
// array (PrefixTable).
void SuffixIndex::CountPrefixes() {
  if (size == 0 || !prefixes.starts) return;
  uint32_t* starts = prefixes.starts.get();
  for (int64_t i = 0; i < size; ++i) ++starts[prefixes.Key(old + i, size - i) + 1];
  const size_t keys = size_t{1} << prefixes.bits;
  for (size_t k = 1; k <= keys; ++k) starts[k] += starts[k - 1];
}

// Length of the common prefix of a[..n) and b[..n), compared 8 bytes at a
// time from `skip` (a length already known to match).
int64_t CommonPrefix(const uint8_t* a, const uint8_t* b, int64_t n, int64_t skip) {
  int64_t i = skip;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    if (x != y) break;
  }
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// Length of the common prefix of old[oldpos..] and new[newpos..], from `skip`.
int64_t Differ::MatchLen(int64_t oldpos, int64_t newpos, int64_t skip) const {
  int64_t i = CommonPrefix(old_ + oldpos, new_ + newpos, std::min(oldsize_ - oldpos, newsize_ - newpos), skip);
  work_ += i - skip + 1;
  return i;
}

int64_t Differ::ScoredLen(int64_t pos, int64_t scan) const {
  int64_t i = CommonPrefix(scored_ + pos, new_ + scan, std::min(oldsize_ - pos, newsize_ - scan), 0);
  work_ += i + 1;
  return i;
}

// The longest match of new[scan..] is at one of the two neighbours of the
// pattern's place in sorted order, found by binary search (Narrow). Every
// suffix between lo and hi shares min(llo, lhi) bytes with the pattern, so
// comparisons start there instead of rescanning long common prefixes (they
// made this the hot spot on real binaries).
//
// Where the search starts does not change its outcome, only its cost; there
// are two starts. FromPrefixKey: the suffixes just outside those of the
// pattern's key (PrefixTable) bracket the pattern (biome 1.9.2 -> 1.9.3: two-
// byte keys took 13.5 steps per search instead of ~25; its 23-bit keys cut
// the binary search steps of its three scans from 131 M to 73 M, the diff's
// CPU by ~9%, for a 32 MB table per index). FromLastMatch: the scan mostly moves one
// byte at a time, and if the previous position matched the base at pos for
// len bytes, this one shares len - 1 bytes with the suffix at pos + 1, whose
// place in sorted order (rank) is then at or next to the pattern's: one or two
// suffixes to compare instead of a binary search whose every step reads the
// suffix array and the base at random. On biome it serves 55% of the
// searches at a third of the cost (one thread: 7.6 -> 5.5-6.0 s with the
// 1.3 s suffix sort), for 4 more bytes of memory per base byte.
Bracket Differ::FromPrefixKey(int64_t scan) const {
  Bracket b{0, oldsize_ - 1, 0, 0};
  if (prefixes_.starts && oldsize_ >= 2 && newsize_ - scan >= 2) {
    uint32_t k = prefixes_.Key(new_ + scan, newsize_ - scan);
    int64_t start = prefixes_.starts[k], end = prefixes_.starts[k + 1];
    // Clamped like a search over the whole array: it ends on a pair within [0, n-1].
    b.lo = std::min<int64_t>(start > 0 ? start - 1 : 0, oldsize_ - 2);
    b.hi = std::max<int64_t>(std::min<int64_t>(end, oldsize_ - 1), b.lo + 1);
  }
  b.llo = MatchLen(sa_[b.lo], scan, 0);
  b.lhi = MatchLen(sa_[b.hi], scan, 0);
  return b;
}

// Short previous matches leave the pattern among many suffixes sharing its
// first bytes, where the binary search from the prefix key is the cheaper start.
constexpr int64_t kMinLinkedLen = 4;

bool Differ::FromLastMatch(int64_t scan, Bracket* b) const {
  if (!rank_ || last_.scan != scan - 1 || last_.len <= kMinLinkedLen || last_.pos + 1 >= oldsize_) return false;
  int64_t p = last_.pos + 1;
  int64_t k = rank_[p];
  // Misses dominate here, so they are started early. sa[k] itself is known
  // (p), but its neighbours, compared next, share its cache line. Two thirds
  // of these searches end at p, so the next two positions' searches will
  // start at p + 1 and p + 2: their suffix array lines, and for p + 1 the
  // base bytes its neighbours point to (biome, one thread, run side by side
  // with the version without: 5-10% faster).
  __builtin_prefetch(&sa_[k]);
  if (p + 2 < oldsize_) {
    __builtin_prefetch(&sa_[rank_[p + 2]]);
    int64_t k1 = rank_[p + 1];
    if (k1 > 0) __builtin_prefetch(old_ + sa_[k1 - 1]);
    if (k1 + 1 < oldsize_) __builtin_prefetch(old_ + sa_[k1 + 1]);
  }
  int64_t lk = MatchLen(p, scan, last_.len - 1);
  *b = Bracket{-1, oldsize_, 0, 0};
  // Gallop away from k until the pattern is bracketed.
  if (Less(p, scan, lk)) {
    b->lo = k, b->llo = lk;
    for (int64_t step = 1; b->lo + step < oldsize_; step *= 2) {
      int64_t j = b->lo + step;
      int64_t l = MatchLen(sa_[j], scan, 0);
      if (!Less(sa_[j], scan, l)) {
        b->hi = j, b->lhi = l;
        break;
      }
      b->lo = j, b->llo = l;
    }
  } else {
    b->hi = k, b->lhi = lk;
    for (int64_t step = 1; b->hi - step >= 0; step *= 2) {
      int64_t j = b->hi - step;
      int64_t l = MatchLen(sa_[j], scan, 0);
      if (Less(sa_[j], scan, l)) {
        b->lo = j, b->llo = l;
        break;
      }
      b->hi = j, b->lhi = l;
    }
  }
  return true;
}

// Binary search down to a pair of neighbours, then clamped to the array
// (a pattern before or after every suffix ends on the first or last pair).
//
// Each step reads the suffix array at random, then the base where that entry
// points: two dependent misses. So each step also starts the misses of the
// next ones: the suffix array entries of both possible next midpoints and of
// their four possible successors, and the base bytes of the two next
// midpoints, whose entries the step before started (biome's scans on one
// thread, run alternately with and without: 4-6% less CPU).
void Differ::Narrow(int64_t scan, Bracket* b) const {
  while (b->hi - b->lo >= 2) {
    int64_t mid = b->lo + (b->hi - b->lo) / 2;
    if (b->hi - b->lo >= 8) {
      int64_t m1 = b->lo + (mid - b->lo) / 2, m2 = mid + (b->hi - mid) / 2;
      for (int64_t m : {b->lo + (m1 - b->lo) / 2, m1 + (mid - m1) / 2, mid + (m2 - mid) / 2, m2 + (b->hi - m2) / 2})
        __builtin_prefetch(&sa_[m]);
      int64_t skip = std::min(b->llo, b->lhi);
      for (int64_t m : {m1, m2}) __builtin_prefetch(old_ + std::min<int64_t>(sa_[m] + skip, oldsize_ - 1));
    }
    int64_t p = sa_[mid];
    int64_t l = MatchLen(p, scan, std::min(b->llo, b->lhi));
    // True lexicographic order: a suffix that is a proper prefix of the
    // pattern sorts before it. (Classic bsdiff's memcmp over the shorter
    // length calls it "not less", which on periodic data steers the search to
    // the shortest such suffix and made encoding quadratic.)
    if (Less(p, scan, l)) {
      b->lo = mid, b->llo = l;
    } else {
      b->hi = mid, b->lhi = l;
    }
  }
  if (b->lo < 0) {
    *b = Bracket{0, 1, b->lhi, MatchLen(sa_[1], scan, 0)};
  } else if (b->hi >= oldsize_) {
    *b = Bracket{oldsize_ - 2, oldsize_ - 1, MatchLen(sa_[oldsize_ - 2], scan, 0), b->llo};
  }
}

int64_t Differ::Search(int64_t scan, int64_t* pos) {
  *pos = 0;
  if (oldsize_ == 0) return 0;
  Bracket b;
  if (!FromLastMatch(scan, &b)) b = FromPrefixKey(scan);
  Narrow(scan, &b);
  // Ties go to hi, as in the original.
  *pos = b.llo > b.lhi ? sa_[b.lo] : sa_[b.hi];
  int64_t len = std::max(b.llo, b.lhi);
  last_ = {scan, *pos, len};
  return len;
}

// Advances st.scan to the next place where an exact match beats simply
// continuing the previous alignment (by more than 8 bytes), or where it is
// exactly that continuation. Returns how many bytes the old alignment matched.
int64_t Differ::FindMatch(ScanState& st) {
  int64_t oldscore = 0;
  int64_t scsc = st.scan += st.len;
  for (; st.scan < newsize_; ++st.scan) {
    if (work_ > budget_) {
      st.scan = newsize_;  // over budget: let Emit finish the target
      break;
    }
    if (!rescan_) {
      st.len = Search(st.scan, &st.pos);
      if (memo_) memo_->Record(st.scan, st.pos);
    } else {
      if (auto p = memo_ ? memo_->Replay(st.scan) : std::nullopt) {
        st.pos = *p;
        last_.scan = -1;  // no link to the next search
      } else {
        Search(st.scan, &st.pos);
      }
      st.len = ScoredLen(st.pos, st.scan);
    }
    work_ += std::max<int64_t>(0, st.scan + st.len - scsc);
    for (; scsc < st.scan + st.len; ++scsc) {
      if (OldMatches(scsc, st.lastoffset)) ++oldscore;
    }
    if ((st.len == oldscore && st.len != 0) || st.len > oldscore + 8) break;
    if (OldMatches(st.scan, st.lastoffset)) --oldscore;
  }
  return oldscore;
}

// How far the previous match extends forward while at least half its bytes agree.
int64_t Differ::ForwardLen(const ScanState& st) const {
  int64_t s = 0, best = 0, lenf = 0;
  for (int64_t i = 0; st.lastscan + i < st.scan && st.lastpos + i < oldsize_;) {
    if (scored_[st.lastpos + i] == new_[st.lastscan + i]) ++s;
    ++i;
    if (s * 2 - i > best * 2 - lenf) {
      best = s;
      lenf = i;
    }
  }
  work_ += std::max<int64_t>(0, st.scan - st.lastscan);
  return lenf;
}

// Same, backwards from the new match.
int64_t Differ::BackwardLen(const ScanState& st) const {
  if (st.scan >= newsize_) return 0;
  int64_t s = 0, best = 0, lenb = 0;
  for (int64_t i = 1; st.scan >= st.lastscan + i && st.pos >= i; ++i) {
    if (scored_[st.pos - i] == new_[st.scan - i]) ++s;
    if (s * 2 - i > best * 2 - lenb) {
      best = s;
      lenb = i;
    }
  }
  work_ += st.scan - st.lastscan;
  return lenb;
}

// If both extensions claim the same target bytes, split them where the
// forward alignment stops being the better one.
void Differ::ResolveOverlap(const ScanState& st, int64_t* lenf, int64_t* lenb) const {
  int64_t overlap = (st.lastscan + *lenf) - (st.scan - *lenb);
  if (overlap <= 0) return;
  int64_t s = 0, best = 0, lens = 0;
  for (int64_t i = 0; i < overlap; ++i) {
    if (new_[st.lastscan + *lenf - overlap + i] == scored_[st.lastpos + *lenf - overlap + i]) ++s;
    if (new_[st.scan - *lenb + i] == scored_[st.pos - *lenb + i]) --s;
    if (s > best) {
      best = s;
      lens = i + 1;
    }
  }
  work_ += overlap;
  *lenf += lens - overlap;
  *lenb -= lens;
}

void Differ::Emit(ScanState& st, BsdiffStreams* out) const {
  int64_t lenf = ForwardLen(st);
  int64_t lenb = BackwardLen(st);
  ResolveOverlap(st, &lenf, &lenb);
  if (!rescan_) {  // a rescan's caller diffs against the base it stores
    for (int64_t i = 0; i < lenf; ++i) {
      out->diff.push_back(static_cast<char>(new_[st.lastscan + i] - old_[st.lastpos + i]));
    }
  }
  int64_t extra_len = (st.scan - lenb) - (st.lastscan + lenf);
  out->extra.append(reinterpret_cast<const char*>(new_ + st.lastscan + lenf), extra_len);
  out->ctrl.push_back({static_cast<uint64_t>(lenf), static_cast<uint64_t>(extra_len),
                       (st.pos - lenb) - (st.lastpos + lenf)});
  st.lastscan = st.scan - lenb;
  st.lastpos = st.pos - lenb;
  st.lastoffset = st.pos - st.scan;
}

int64_t Differ::Run(BsdiffStreams* out) {
  if (!rescan_) out->diff.reserve(newsize_);
  ScanState st;
  while (st.scan < newsize_) {
    int64_t oldscore = FindMatch(st);
    if (st.len != oldscore || st.scan == newsize_) Emit(st, out);
  }
  return st.lastpos;
}

// Each segment is scanned as if the decoder started it at old position 0:
// the last triple before it seeks back there from where it ended (`end`).
void SeekBackToStart(std::vector<BsdiffTriple>* ctrl, int64_t end) { ctrl->back().seek -= end; }

}  // namespace

absl::StatusOr<BsdiffStreams> BsdiffCompute(std::string_view base, std::string_view target, Helpers& helpers,
                                            SearchStart start) {
  return std::move(BsdiffComputeMany({{base, target, nullptr, nullptr}}, helpers, start)[0]);
}

// The target's segments and their scans, for one input.
struct BsdiffBatch::Part {
  struct Segment {
    BsdiffStreams streams;
    int64_t end = 0;
    bool failed = false;
  };
  std::vector<Segment> segments;
};

struct BsdiffBatch::State {
  std::vector<BsdiffInput> inputs;
  SearchStart start;
  std::vector<absl::StatusOr<BsdiffStreams>> out;
  std::vector<std::unique_ptr<SuffixIndex>> index;
  std::vector<Part> parts;
  std::vector<const uint8_t*> scored;  // per input: the bytes its next scan scores on (null: its base)
  std::vector<std::vector<SearchMemo>> memo;  // per input, per segment: its first scan's, for a Rescan
};

namespace {

absl::Status OutOfMemory() { return absl::ResourceExhaustedError("bsdiff: out of memory"); }

}  // namespace

BsdiffBatch::BsdiffBatch(std::vector<BsdiffInput> inputs, SearchStart start) : s_(std::make_unique<State>()) {
  s_->inputs = std::move(inputs);
  s_->start = start;
  const size_t n = s_->inputs.size();
  s_->out.assign(n, BsdiffStreams());
  s_->index.resize(n);
  s_->parts.resize(n);
  s_->scored.assign(n, nullptr);
  s_->memo.resize(n);
}

BsdiffBatch::~BsdiffBatch() = default;

void BsdiffBatch::Build(Helpers& helpers) {
  constexpr uint64_t kMax = std::numeric_limits<saidx_t>::max();
  State& st = *s_;
  const size_t n = st.inputs.size();
  for (size_t j = 0; j < n; ++j) {
    if (st.inputs[j].base.size() > kMax || st.inputs[j].target.size() > kMax) {
      st.out[j] = absl::InvalidArgumentError("bsdiff: inputs of 2 GiB or more are not supported");
    }
  }
  // Everything is allocated here on the caller, where bad_alloc is caught.
  for (size_t j = 0; j < n; ++j) {
    if (!st.out[j].ok()) continue;
    try {
      st.index[j] = std::make_unique<SuffixIndex>(st.inputs[j].base, st.start);
      st.index[j]->Allocate();
    } catch (const std::bad_alloc&) {
      st.index[j].reset();
      st.out[j] = OutOfMemory();
    }
  }
  // The sorts side by side (first, the longest tasks); beside them the
  // targets to prepare and the prefix keys of bases that are ready, after
  // them the other bases' keys.
  std::vector<std::function<void()>> tasks, beside_sort, after_sort;
  for (size_t j = 0; j < n; ++j) {
    if (!st.index[j]) continue;
    SuffixIndex* x = st.index[j].get();
    const std::function<void()>* prepare = st.inputs[j].prepare_base ? &st.inputs[j].prepare_base : nullptr;
    tasks.push_back([x, prepare] {
      if (prepare) (*prepare)();
      x->Sort();
    });
    (prepare ? after_sort : beside_sort).push_back([x] { x->CountPrefixes(); });
    if (st.inputs[j].prepare_target) beside_sort.push_back(st.inputs[j].prepare_target);
  }
  for (auto& t : beside_sort) tasks.push_back(std::move(t));
  helpers.Run(tasks);
  tasks = std::move(after_sort);
  for (size_t j = 0; j < n; ++j) {
    if (!st.index[j]) continue;
    if (!st.index[j]->sorted) {
      st.out[j] = absl::InternalError("bsdiff: divsufsort failed");
      st.index[j].reset();
      continue;
    }
    st.index[j]->RankTasks(&tasks);
  }
  helpers.Run(tasks);
}

void BsdiffBatch::ScanTasks(size_t j, std::vector<std::function<void()>>* tasks) {
  State& st = *s_;
  if (!st.index[j]) return;
  std::string_view target = st.inputs[j].target;
  size_t count = (target.size() + kBsdiffSegment - 1) / kBsdiffSegment;
  try {
    st.parts[j].segments.clear();  // a scan before may have left its (moved) streams
    st.parts[j].segments.resize(count);
  } catch (const std::bad_alloc&) {
    st.out[j] = OutOfMemory();
    st.index[j].reset();
    return;
  }
  for (size_t k = 0; k < count; ++k) {
    Part::Segment* seg = &st.parts[j].segments[k];
    const SuffixIndex* x = st.index[j].get();
    uint64_t base_size = st.inputs[j].base.size();
    const uint8_t* scored = st.scored[j];
    SearchMemo* memo = k < st.memo[j].size() ? &st.memo[j][k] : nullptr;
    tasks->push_back([seg, x, target, k, base_size, scored, memo] {
      std::string_view piece = target.substr(k * kBsdiffSegment, kBsdiffSegment);
      // The work budget is shared out by segment length.
      uint64_t budget =
          (kWorkBase * piece.size() + kWorkPerByte * (base_size + target.size()) * piece.size()) / target.size();
      try {
        seg->end = Differ(*x, piece, budget, scored, memo).Run(&seg->streams);
      } catch (const std::bad_alloc&) {
        seg->failed = true;
      }
    });
  }
}

absl::StatusOr<BsdiffStreams> BsdiffBatch::Join(size_t j, bool keep_index) {
  State& st = *s_;
  if (!st.index[j]) return std::move(st.out[j]);
  if (!keep_index) st.index[j].reset();  // the index is no longer needed: free it before joining
  std::vector<Part::Segment>& segs = st.parts[j].segments;
  if (std::any_of(segs.begin(), segs.end(), [](const Part::Segment& s) { return s.failed; })) return OutOfMemory();
  if (segs.size() <= 1) return segs.empty() ? BsdiffStreams() : std::move(segs[0].streams);
  try {
    BsdiffStreams joined;
    joined.diff.reserve(st.inputs[j].target.size());
    for (size_t k = 0; k < segs.size(); ++k) {
      if (k > 0) SeekBackToStart(&joined.ctrl, segs[k - 1].end);  // every segment has a triple
      joined.ctrl.insert(joined.ctrl.end(), segs[k].streams.ctrl.begin(), segs[k].streams.ctrl.end());
      joined.diff += segs[k].streams.diff;
      joined.extra += segs[k].streams.extra;
      segs[k].streams = BsdiffStreams();
    }
    segs.clear();
    return joined;
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

absl::StatusOr<BsdiffStreams> BsdiffBatch::Rescan(size_t j, std::string_view scored, Helpers& helpers) {
  State& st = *s_;
  if (!st.index[j]) return absl::FailedPreconditionError("bsdiff: rescan without the base's index");
  if (scored.size() != st.inputs[j].base.size())
    return absl::InvalidArgumentError("bsdiff: rescan against bytes of another size than the base");
  st.scored[j] = reinterpret_cast<const uint8_t*>(scored.data());
  // Most searches are replayed; the rest start from their prefix keys.
  st.index[j]->rank.reset();
  auto r = Scan(j, helpers);
  st.memo[j].clear();
  st.scored[j] = nullptr;  // `scored` need not outlive the call
  return r;
}

absl::StatusOr<BsdiffStreams> BsdiffBatch::Scan(size_t j, Helpers& helpers,
                                                std::vector<std::function<void()>> beside, bool keep_index) {
  try {
    if (keep_index && s_->index[j] && !s_->scored[j])  // a fresh record, even if scanned before
      s_->memo[j].assign((s_->inputs[j].target.size() + kBsdiffSegment - 1) / kBsdiffSegment, SearchMemo());
    std::vector<std::function<void()>> tasks = std::move(beside);
    ScanTasks(j, &tasks);
    helpers.Run(tasks);
    return Join(j, keep_index);
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

std::vector<absl::StatusOr<BsdiffStreams>> BsdiffComputeMany(const std::vector<BsdiffInput>& inputs,
                                                             Helpers& helpers, SearchStart start) {
  try {
    BsdiffBatch batch(inputs, start);
    batch.Build(helpers);
    // Every input's segments, as one set of tasks.
    std::vector<std::function<void()>> tasks;
    for (size_t j = 0; j < inputs.size(); ++j) batch.ScanTasks(j, &tasks);
    helpers.Run(tasks);
    std::vector<absl::StatusOr<BsdiffStreams>> out;
    for (size_t j = 0; j < inputs.size(); ++j) out.push_back(batch.Join(j));
    return out;
  } catch (const std::bad_alloc&) {
    return std::vector<absl::StatusOr<BsdiffStreams>>(inputs.size(), OutOfMemory());
  }
}

std::string BsdiffDiffStream(const std::vector<BsdiffTriple>& ctrl, std::string_view base, std::string_view target) {
  std::string d;
  uint64_t oldpos = 0, newpos = 0;
  for (const BsdiffTriple& t : ctrl) {
    for (uint64_t k = 0; k < t.add; ++k) d.push_back(static_cast<char>(target[newpos + k] - base[oldpos + k]));
    oldpos += t.add;
    newpos += t.add + t.copy;
    oldpos = static_cast<uint64_t>(static_cast<int64_t>(oldpos) + t.seek);
  }
  return d;
}

}  // namespace d4c::codec_internal
