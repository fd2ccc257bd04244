// GNU gzip's deflate (gzip 1.x: deflate.c, trees.c, bits.c), rewritten so
// that its output equals `gzip -<level> -n` bit for bit (docs/deflate.md).
//
// Everything here that looks arbitrary is what gzip does, and changing it
// changes the bytes: the 64 KiB window that slides by 32 KiB once strstart
// reaches WSIZE+MAX_DIST (with the stale bytes it leaves behind, which
// longest_match may read past the end of the input), the 15-bit hash, the
// per-level configuration, the TOO_FAR rule, ct_tally's block-splitting
// guess every 0x1000 literals (levels > 2) and its buffer limits, and the
// Huffman tree construction with its depth tie-break and overflow fix-up.
// The input is taken as gzip reads a regular file: 64 KiB first, then as
// much as fits in the window each time.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "d4c/deflate.h"

namespace d4c::deflate {
namespace {

// deflate.c / gzip.h
constexpr unsigned kWSize = 0x8000;
constexpr unsigned kWMask = kWSize - 1;
constexpr unsigned kWindowSize = 2 * kWSize;
constexpr unsigned kHashBits = 15;
constexpr unsigned kHashSize = 1u << kHashBits;
constexpr unsigned kHashMask = kHashSize - 1;
constexpr unsigned kMinMatch = 3;
constexpr unsigned kMaxMatch = 258;
constexpr unsigned kHShift = (kHashBits + kMinMatch - 1) / kMinMatch;
constexpr unsigned kMinLookahead = kMaxMatch + kMinMatch + 1;
constexpr unsigned kMaxDist = kWSize - kMinLookahead;
constexpr unsigned kTooFar = 4096;
// Bytes past the window that the 8-byte match compare may read; gzip never
// looks at them and neither does the result (lengths are capped at 258).
constexpr unsigned kWindowSlack = 16;

// trees.c
constexpr unsigned kLitBufSize = 0x8000;
constexpr unsigned kDistBufSize = 0x8000;
constexpr int kMaxBits = 15;
constexpr int kMaxBlBits = 7;
constexpr int kLengthCodes = 29;
constexpr int kLiterals = 256;
constexpr int kEndBlock = 256;
constexpr int kLCodes = kLiterals + 1 + kLengthCodes;  // 286
constexpr int kDCodes = 30;
constexpr int kBlCodes = 19;
constexpr int kHeapSize = 2 * kLCodes + 1;
constexpr int kRep3To6 = 16;
constexpr int kRepZ3To10 = 17;
constexpr int kRepZ11To138 = 18;
constexpr int kStoredBlock = 0;
constexpr int kStaticTrees = 1;
constexpr int kDynTrees = 2;

constexpr std::array<int, kLengthCodes> kExtraLBits = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr std::array<int, kDCodes> kExtraDBits = {0, 0, 0, 0, 1, 1, 2,  2,  3,  3,  4,  4,  5,  5,  6,
                                                  6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
constexpr std::array<int, kBlCodes> kExtraBlBits = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7};
constexpr std::array<uint8_t, kBlCodes> kBlOrder = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

struct Config {
  unsigned good_length;  // reduce lazy search above this match length
  unsigned max_lazy;     // no lazy search above this (levels 1-3: no insertion above it)
  unsigned nice_length;  // quit search above this match length
  unsigned max_chain;
};
constexpr std::array<Config, 10> kConfig = {{
    {0, 0, 0, 0},  // 0: store only (gzip has no level 0)
    {4, 4, 8, 4},
    {4, 5, 16, 8},
    {4, 6, 32, 32},
    {4, 4, 16, 16},  // 4..9: lazy matching
    {8, 16, 32, 32},
    {8, 16, 128, 128},
    {8, 32, 128, 256},
    {32, 128, 258, 1024},
    {32, 258, 258, 4096},
}};

// A Huffman tree node, laid out as gzip's ct_data: the frequency is
// overwritten by the code, the father by the bit length.
struct Node {
  uint16_t fc = 0;  // freq, then code
  uint16_t dl = 0;  // dad, then len
};

constexpr unsigned BiReverse(unsigned code, int len) {
  unsigned res = 0;
  do {
    res |= code & 1;
    code >>= 1, res <<= 1;
  } while (--len > 0);
  return res >> 1;
}

// Codes for the bit lengths in tree[0..max_code].len, given their counts.
constexpr void GenCodes(Node* tree, int max_code, const uint16_t* bl_count) {
  uint16_t next_code[kMaxBits + 1] = {};
  uint16_t code = 0;
  for (int bits = 1; bits <= kMaxBits; bits++) {
    code = static_cast<uint16_t>((code + bl_count[bits - 1]) << 1);
    next_code[bits] = code;
  }
  for (int n = 0; n <= max_code; n++) {
    int len = tree[n].dl;
    if (len == 0) continue;
    tree[n].fc = static_cast<uint16_t>(BiReverse(next_code[len]++, len));
  }
}

// ct_init's constant tables.
struct Tables {
  std::array<uint8_t, kMaxMatch - kMinMatch + 1> length_code{};
  std::array<uint8_t, 512> dist_code{};
  std::array<int, kLengthCodes> base_length{};
  std::array<int, kDCodes> base_dist{};
  std::array<Node, kLCodes + 2> static_ltree{};
  std::array<Node, kDCodes> static_dtree{};
};

constexpr Tables BuildTables() {
  Tables t;
  int length = 0;
  int code = 0;
  for (code = 0; code < kLengthCodes - 1; code++) {
    t.base_length[code] = length;
    for (int n = 0; n < (1 << kExtraLBits[code]); n++) t.length_code[length++] = static_cast<uint8_t>(code);
  }
  // Length 258 (index 255) gets its own code 285, not 284's last slot.
  t.length_code[length - 1] = static_cast<uint8_t>(code);
  int dist = 0;
  for (code = 0; code < 16; code++) {
    t.base_dist[code] = dist;
    for (int n = 0; n < (1 << kExtraDBits[code]); n++) t.dist_code[dist++] = static_cast<uint8_t>(code);
  }
  dist >>= 7;
  for (; code < kDCodes; code++) {
    t.base_dist[code] = dist << 7;
    for (int n = 0; n < (1 << (kExtraDBits[code] - 7)); n++) t.dist_code[256 + dist++] = static_cast<uint8_t>(code);
  }
  uint16_t bl_count[kMaxBits + 1] = {};
  int n = 0;
  while (n <= 143) t.static_ltree[n++].dl = 8, bl_count[8]++;
  while (n <= 255) t.static_ltree[n++].dl = 9, bl_count[9]++;
  while (n <= 279) t.static_ltree[n++].dl = 7, bl_count[7]++;
  while (n <= 287) t.static_ltree[n++].dl = 8, bl_count[8]++;
  GenCodes(t.static_ltree.data(), kLCodes + 1, bl_count);
  for (n = 0; n < kDCodes; n++) {
    t.static_dtree[n].dl = 5;
    t.static_dtree[n].fc = static_cast<uint16_t>(BiReverse(n, 5));
  }
  return t;
}

constexpr Tables kTables = BuildTables();

struct TreeDesc {
  Node* dyn_tree;
  const Node* static_tree;
  const int* extra_bits;
  int extra_base;
  int elems;
  int max_length;
  int max_code;
};

// One compression: gzip's globals of deflate.c, trees.c and bits.c.
class GnuDeflater {
 public:
  GnuDeflater(std::string_view in, int level) : in_(in), level_(level) {
    const Config& c = kConfig[level];
    max_lazy_match_ = c.max_lazy;
    good_match_ = c.good_length;
    nice_match_ = c.nice_length;
    max_chain_length_ = c.max_chain;
    out_.reserve(in.size() / 3 + 64);
  }

  std::string Run() {
    InitBlock();
    LmInit();
    if (level_ <= 3) {
      DeflateFast();
    } else {
      DeflateLazy();
    }
    return std::move(out_);
  }

 private:
  // ---- input (gzip's read_buf on a regular file) ----
  unsigned ReadBuf(uint8_t* buf, unsigned size) {
    size_t n = std::min<size_t>(size, in_.size() - in_pos_);
    if (n != 0) std::memcpy(buf, in_.data() + in_pos_, n);
    in_pos_ += n;
    return static_cast<unsigned>(n);
  }

  void UpdateHash(unsigned c) { ins_h_ = ((ins_h_ << kHShift) ^ c) & kHashMask; }

  // INSERT_STRING: returns the previous head of the string's hash chain.
  unsigned InsertString(unsigned s) {
    UpdateHash(window_[s + kMinMatch - 1]);
    unsigned match_head = head_[ins_h_];
    prev_[s & kWMask] = static_cast<uint16_t>(match_head);
    head_[ins_h_] = static_cast<uint16_t>(s);
    return match_head;
  }

  void LmInit() {
    strstart_ = 0;
    block_start_ = 0;
    lookahead_ = ReadBuf(window_.get(), 2 * kWSize);
    if (lookahead_ == 0) {
      eofile_ = true;
      lookahead_ = 0;
      return;
    }
    eofile_ = false;
    while (lookahead_ < kMinLookahead && !eofile_) FillWindow();
    ins_h_ = 0;
    for (unsigned j = 0; j < kMinMatch - 1; j++) UpdateHash(window_[j]);
  }

  void FillWindow() {
    unsigned more = kWindowSize - lookahead_ - strstart_;
    if (strstart_ >= kWSize + kMaxDist) {
      uint8_t* w = window_.get();
      std::memcpy(w, w + kWSize, kWSize);
      match_start_ -= kWSize;
      strstart_ -= kWSize;
      block_start_ -= static_cast<long>(kWSize);
      for (unsigned n = 0; n < kHashSize; n++) {
        unsigned m = head_[n];
        head_[n] = static_cast<uint16_t>(m >= kWSize ? m - kWSize : 0);
      }
      for (unsigned n = 0; n < kWSize; n++) {
        unsigned m = prev_[n];
        prev_[n] = static_cast<uint16_t>(m >= kWSize ? m - kWSize : 0);
      }
      more += kWSize;
    }
    if (!eofile_) {
      unsigned n = ReadBuf(window_.get() + strstart_ + lookahead_, more);
      if (n == 0) {
        eofile_ = true;
        std::memset(window_.get() + strstart_ + lookahead_, 0, kMinMatch - 1);
      } else {
        lookahead_ += n;
      }
    }
  }

  // Length of the common prefix of a and b, from index 3 (gzip compares
  // bytes 0 and 1 first and never byte 2: equal hashes imply it is equal),
  // at most kMaxMatch.
  static unsigned MatchLength(const uint8_t* a, const uint8_t* b) {
    unsigned i = 3;
    while (i < kMaxMatch) {
      uint64_t x, y;
      std::memcpy(&x, a + i, 8);
      std::memcpy(&y, b + i, 8);
      uint64_t d = x ^ y;
      if (d != 0) {
        i += static_cast<unsigned>(__builtin_ctzll(d)) >> 3;  // little-endian load order
        return std::min(i, kMaxMatch);
      }
      i += 8;
    }
    return kMaxMatch;
  }

  unsigned LongestMatch(unsigned cur_match) {
    unsigned chain_length = max_chain_length_;
    const uint8_t* w = window_.get();
    const uint8_t* scan = w + strstart_;
    unsigned best_len = prev_length_;
    unsigned limit = strstart_ > kMaxDist ? strstart_ - kMaxDist : 0;
    uint8_t scan_end1 = scan[best_len - 1];
    uint8_t scan_end = scan[best_len];
    if (prev_length_ >= good_match_) chain_length >>= 2;
    do {
      const uint8_t* match = w + cur_match;
      if (match[best_len] != scan_end || match[best_len - 1] != scan_end1 || match[0] != scan[0] ||
          match[1] != scan[1]) {
        continue;
      }
      unsigned len = MatchLength(scan, match);
      if (len > best_len) {
        match_start_ = cur_match;
        best_len = len;
        if (len >= nice_match_) break;
        scan_end1 = scan[best_len - 1];
        scan_end = scan[best_len];
      }
    } while ((cur_match = prev_[cur_match & kWMask]) > limit && --chain_length != 0);
    return best_len;
  }

  void FlushBlockHere(bool eof) {
    const uint8_t* buf = block_start_ >= 0 ? window_.get() + block_start_ : nullptr;
    FlushBlock(buf, static_cast<unsigned long>(static_cast<long>(strstart_) - block_start_), eof);
  }

  // Levels 1-3: no lazy evaluation; max_lazy bounds the hash insertion.
  void DeflateFast() {
    bool flush = false;
    unsigned match_length = 0;
    prev_length_ = kMinMatch - 1;
    while (lookahead_ != 0) {
      unsigned hash_head = InsertString(strstart_);
      if (hash_head != 0 && strstart_ - hash_head <= kMaxDist && strstart_ <= kWindowSize - kMinLookahead) {
        match_length = LongestMatch(hash_head);
        if (match_length > lookahead_) match_length = lookahead_;
      }
      if (match_length >= kMinMatch) {
        flush = Tally(strstart_ - match_start_, match_length - kMinMatch);
        lookahead_ -= match_length;
        if (match_length <= max_lazy_match_) {
          match_length--;
          do {
            strstart_++;
            InsertString(strstart_);
          } while (--match_length != 0);
          strstart_++;
        } else {
          strstart_ += match_length;
          match_length = 0;
          ins_h_ = window_[strstart_];
          UpdateHash(window_[strstart_ + 1]);
        }
      } else {
        flush = Tally(0, window_[strstart_]);
        lookahead_--;
        strstart_++;
      }
      if (flush) {
        FlushBlockHere(false);
        block_start_ = strstart_;
      }
      while (lookahead_ < kMinLookahead && !eofile_) FillWindow();
    }
    FlushBlockHere(true);
  }

  // Levels 4-9: a match is emitted only if the next position has no longer one.
  void DeflateLazy() {
    bool flush = false;
    bool match_available = false;
    unsigned match_length = kMinMatch - 1;
    while (lookahead_ != 0) {
      unsigned hash_head = InsertString(strstart_);
      prev_length_ = match_length;
      unsigned prev_match = match_start_;
      match_length = kMinMatch - 1;
      if (hash_head != 0 && prev_length_ < max_lazy_match_ && strstart_ - hash_head <= kMaxDist &&
          strstart_ <= kWindowSize - kMinLookahead) {
        match_length = LongestMatch(hash_head);
        if (match_length > lookahead_) match_length = lookahead_;
        if (match_length == kMinMatch && strstart_ - match_start_ > kTooFar) match_length--;
      }
      if (prev_length_ >= kMinMatch && match_length <= prev_length_) {
        flush = Tally(strstart_ - 1 - prev_match, prev_length_ - kMinMatch);
        lookahead_ -= prev_length_ - 1;
        prev_length_ -= 2;
        do {
          strstart_++;
          InsertString(strstart_);
        } while (--prev_length_ != 0);
        match_available = false;
        match_length = kMinMatch - 1;
        strstart_++;
        if (flush) {
          FlushBlockHere(false);
          block_start_ = strstart_;
        }
      } else if (match_available) {
        flush = Tally(0, window_[strstart_ - 1]);
        if (flush) {
          FlushBlockHere(false);
          block_start_ = strstart_;
        }
        strstart_++;
        lookahead_--;
      } else {
        match_available = true;
        strstart_++;
        lookahead_--;
      }
      while (lookahead_ < kMinLookahead && !eofile_) FillWindow();
    }
    if (match_available) Tally(0, window_[strstart_ - 1]);
    FlushBlockHere(true);
  }

  // ---- trees.c ----
  void InitBlock() {
    for (int n = 0; n < kLCodes; n++) dyn_ltree_[n].fc = 0;
    for (int n = 0; n < kDCodes; n++) dyn_dtree_[n].fc = 0;
    for (int n = 0; n < kBlCodes; n++) bl_tree_[n].fc = 0;
    dyn_ltree_[kEndBlock].fc = 1;
    opt_len_ = static_len_ = 0;
    last_lit_ = last_dist_ = last_flags_ = 0;
    flags_ = 0;
    flag_bit_ = 1;
  }

  static unsigned DCode(unsigned dist) {
    return dist < 256 ? kTables.dist_code[dist] : kTables.dist_code[256 + (dist >> 7)];
  }

  // ct_tally: records a literal (dist 0) or a match; true when the block
  // should end here.
  bool Tally(unsigned dist, unsigned lc) {
    l_buf_[last_lit_++] = static_cast<uint8_t>(lc);
    if (dist == 0) {
      dyn_ltree_[lc].fc++;
    } else {
      dist--;
      dyn_ltree_[kTables.length_code[lc] + kLiterals + 1].fc++;
      dyn_dtree_[DCode(dist)].fc++;
      d_buf_[last_dist_++] = static_cast<uint16_t>(dist);
      flags_ |= flag_bit_;
    }
    flag_bit_ = static_cast<uint8_t>(flag_bit_ << 1);
    if ((last_lit_ & 7) == 0) {
      flag_buf_[last_flags_++] = flags_;
      flags_ = 0;
      flag_bit_ = 1;
    }
    // gzip's guess whether ending the block here pays off.
    if (level_ > 2 && (last_lit_ & 0xfff) == 0) {
      uint64_t out_length = static_cast<uint64_t>(last_lit_) * 8;
      uint64_t in_length = static_cast<uint64_t>(strstart_) - static_cast<uint64_t>(block_start_);
      for (int dcode = 0; dcode < kDCodes; dcode++) {
        out_length += static_cast<uint64_t>(dyn_dtree_[dcode].fc) * (5 + kExtraDBits[dcode]);
      }
      out_length >>= 3;
      if (last_dist_ < last_lit_ / 2 && out_length < in_length / 2) return true;
    }
    return last_lit_ == kLitBufSize - 1 || last_dist_ == kDistBufSize;
  }

  static bool Smaller(const Node* tree, int n, int m, const uint8_t* depth) {
    return tree[n].fc < tree[m].fc || (tree[n].fc == tree[m].fc && depth[n] <= depth[m]);
  }

  void PqDownHeap(const Node* tree, int k) {
    int v = heap_[k];
    int j = k << 1;
    while (j <= heap_len_) {
      if (j < heap_len_ && Smaller(tree, heap_[j + 1], heap_[j], depth_)) j++;
      if (Smaller(tree, v, heap_[j], depth_)) break;
      heap_[k] = heap_[j];
      k = j;
      j <<= 1;
    }
    heap_[k] = v;
  }

  void GenBitlen(TreeDesc* desc) {
    Node* tree = desc->dyn_tree;
    const int* extra = desc->extra_bits;
    int base = desc->extra_base;
    int max_code = desc->max_code;
    int max_length = desc->max_length;
    const Node* stree = desc->static_tree;
    int overflow = 0;
    for (int bits = 0; bits <= kMaxBits; bits++) bl_count_[bits] = 0;
    tree[heap_[heap_max_]].dl = 0;  // root
    int h;
    for (h = heap_max_ + 1; h < kHeapSize; h++) {
      int n = heap_[h];
      int bits = tree[tree[n].dl].dl + 1;
      if (bits > max_length) bits = max_length, overflow++;
      tree[n].dl = static_cast<uint16_t>(bits);
      if (n > max_code) continue;  // not a leaf
      bl_count_[bits]++;
      int xbits = 0;
      if (n >= base) xbits = extra[n - base];
      uint16_t f = tree[n].fc;
      opt_len_ += static_cast<uint64_t>(f) * static_cast<uint64_t>(bits + xbits);
      if (stree != nullptr) static_len_ += static_cast<uint64_t>(f) * static_cast<uint64_t>(stree[n].dl + xbits);
    }
    if (overflow == 0) return;
    do {
      int bits = max_length - 1;
      while (bl_count_[bits] == 0) bits--;
      bl_count_[bits]--;
      bl_count_[bits + 1] = static_cast<uint16_t>(bl_count_[bits + 1] + 2);
      bl_count_[max_length]--;
      overflow -= 2;
    } while (overflow > 0);
    for (int bits = max_length; bits != 0; bits--) {
      int n = bl_count_[bits];
      while (n != 0) {
        int m = heap_[--h];
        if (m > max_code) continue;
        if (tree[m].dl != static_cast<unsigned>(bits)) {
          int64_t delta = (static_cast<int64_t>(bits) - static_cast<int64_t>(tree[m].dl)) * static_cast<int64_t>(tree[m].fc);
          opt_len_ += static_cast<uint64_t>(delta);
          tree[m].dl = static_cast<uint16_t>(bits);
        }
        n--;
      }
    }
  }

  void BuildTree(TreeDesc* desc) {
    Node* tree = desc->dyn_tree;
    const Node* stree = desc->static_tree;
    int elems = desc->elems;
    int max_code = -1;
    int node = elems;
    heap_len_ = 0;
    heap_max_ = kHeapSize;
    for (int n = 0; n < elems; n++) {
      if (tree[n].fc != 0) {
        heap_[++heap_len_] = max_code = n;
        depth_[n] = 0;
      } else {
        tree[n].dl = 0;
      }
    }
    // At least two codes of non-zero frequency.
    while (heap_len_ < 2) {
      int added = heap_[++heap_len_] = (max_code < 2 ? ++max_code : 0);
      tree[added].fc = 1;
      depth_[added] = 0;
      opt_len_--;
      if (stree != nullptr) static_len_ -= stree[added].dl;
    }
    desc->max_code = max_code;
    for (int n = heap_len_ / 2; n >= 1; n--) PqDownHeap(tree, n);
    do {
      int n = heap_[1];
      heap_[1] = heap_[heap_len_--];
      PqDownHeap(tree, 1);
      int m = heap_[1];
      heap_[--heap_max_] = n;
      heap_[--heap_max_] = m;
      tree[node].fc = static_cast<uint16_t>(tree[n].fc + tree[m].fc);
      depth_[node] = static_cast<uint8_t>(std::max(depth_[n], depth_[m]) + 1);
      tree[n].dl = tree[m].dl = static_cast<uint16_t>(node);
      heap_[1] = node++;
      PqDownHeap(tree, 1);
    } while (heap_len_ >= 2);
    heap_[--heap_max_] = heap_[1];
    GenBitlen(desc);
    GenCodes(tree, max_code, bl_count_);
  }

  // Counts the run-length coded bit lengths of tree into bl_tree.
  void ScanTree(Node* tree, int max_code) {
    int prevlen = -1;
    int nextlen = tree[0].dl;
    int count = 0;
    int max_count = 7;
    int min_count = 4;
    if (nextlen == 0) max_count = 138, min_count = 3;
    tree[max_code + 1].dl = 0xffff;  // guard
    for (int n = 0; n <= max_code; n++) {
      int curlen = nextlen;
      nextlen = tree[n + 1].dl;
      if (++count < max_count && curlen == nextlen) {
        continue;
      } else if (count < min_count) {
        bl_tree_[curlen].fc = static_cast<uint16_t>(bl_tree_[curlen].fc + count);
      } else if (curlen != 0) {
        if (curlen != prevlen) bl_tree_[curlen].fc++;
        bl_tree_[kRep3To6].fc++;
      } else if (count <= 10) {
        bl_tree_[kRepZ3To10].fc++;
      } else {
        bl_tree_[kRepZ11To138].fc++;
      }
      count = 0;
      prevlen = curlen;
      if (nextlen == 0) {
        max_count = 138, min_count = 3;
      } else if (curlen == nextlen) {
        max_count = 6, min_count = 3;
      } else {
        max_count = 7, min_count = 4;
      }
    }
  }

  void SendTree(const Node* tree, int max_code) {
    int prevlen = -1;
    int nextlen = tree[0].dl;
    int count = 0;
    int max_count = 7;
    int min_count = 4;
    if (nextlen == 0) max_count = 138, min_count = 3;
    for (int n = 0; n <= max_code; n++) {
      int curlen = nextlen;
      nextlen = tree[n + 1].dl;
      if (++count < max_count && curlen == nextlen) {
        continue;
      } else if (count < min_count) {
        do {
          SendCode(curlen, bl_tree_.data());
        } while (--count != 0);
      } else if (curlen != 0) {
        if (curlen != prevlen) {
          SendCode(curlen, bl_tree_.data());
          count--;
        }
        SendCode(kRep3To6, bl_tree_.data());
        SendBits(count - 3, 2);
      } else if (count <= 10) {
        SendCode(kRepZ3To10, bl_tree_.data());
        SendBits(count - 3, 3);
      } else {
        SendCode(kRepZ11To138, bl_tree_.data());
        SendBits(count - 11, 7);
      }
      count = 0;
      prevlen = curlen;
      if (nextlen == 0) {
        max_count = 138, min_count = 3;
      } else if (curlen == nextlen) {
        max_count = 6, min_count = 3;
      } else {
        max_count = 7, min_count = 4;
      }
    }
  }

  int BuildBlTree() {
    ScanTree(dyn_ltree_.data(), l_desc_.max_code);
    ScanTree(dyn_dtree_.data(), d_desc_.max_code);
    BuildTree(&bl_desc_);
    int max_blindex;
    for (max_blindex = kBlCodes - 1; max_blindex >= 3; max_blindex--) {
      if (bl_tree_[kBlOrder[max_blindex]].dl != 0) break;
    }
    opt_len_ += 3 * (static_cast<uint64_t>(max_blindex) + 1) + 5 + 5 + 4;
    return max_blindex;
  }

  void SendAllTrees(int lcodes, int dcodes, int blcodes) {
    SendBits(lcodes - 257, 5);
    SendBits(dcodes - 1, 5);
    SendBits(blcodes - 4, 4);
    for (int rank = 0; rank < blcodes; rank++) SendBits(bl_tree_[kBlOrder[rank]].dl, 3);
    SendTree(dyn_ltree_.data(), lcodes - 1);
    SendTree(dyn_dtree_.data(), dcodes - 1);
  }

  void CompressBlock(const Node* ltree, const Node* dtree) {
    unsigned lx = 0, dx = 0, fx = 0;
    uint8_t flag = 0;
    if (last_lit_ != 0) {
      do {
        if ((lx & 7) == 0) flag = flag_buf_[fx++];
        int lc = l_buf_[lx++];
        if ((flag & 1) == 0) {
          SendCode(lc, ltree);
        } else {
          unsigned code = kTables.length_code[lc];
          SendCode(static_cast<int>(code) + kLiterals + 1, ltree);
          int extra = kExtraLBits[code];
          if (extra != 0) SendBits(lc - kTables.base_length[code], extra);
          unsigned dist = d_buf_[dx++];
          code = DCode(dist);
          SendCode(static_cast<int>(code), dtree);
          extra = kExtraDBits[code];
          if (extra != 0) SendBits(static_cast<int>(dist) - kTables.base_dist[code], extra);
        }
        flag >>= 1;
      } while (lx < last_lit_);
    }
    SendCode(kEndBlock, ltree);
  }

  // buf: the block's bytes in the window, or null when they slid out.
  void FlushBlock(const uint8_t* buf, unsigned long stored_len, bool eof) {
    flag_buf_[last_flags_] = flags_;
    BuildTree(&l_desc_);
    BuildTree(&d_desc_);
    int max_blindex = BuildBlTree();
    uint64_t opt_lenb = (opt_len_ + 3 + 7) >> 3;
    uint64_t static_lenb = (static_len_ + 3 + 7) >> 3;
    if (static_lenb <= opt_lenb) opt_lenb = static_lenb;
    // gzip's whole-file stored method needs seekable() output, which gzip
    // never has: not reproduced.
    if (stored_len + 4 <= opt_lenb && buf != nullptr) {
      SendBits((kStoredBlock << 1) + (eof ? 1 : 0), 3);
      CopyBlock(buf, static_cast<unsigned>(stored_len));
    } else if (static_lenb == opt_lenb) {
      SendBits((kStaticTrees << 1) + (eof ? 1 : 0), 3);
      CompressBlock(kTables.static_ltree.data(), kTables.static_dtree.data());
    } else {
      SendBits((kDynTrees << 1) + (eof ? 1 : 0), 3);
      SendAllTrees(l_desc_.max_code + 1, d_desc_.max_code + 1, max_blindex + 1);
      CompressBlock(dyn_ltree_.data(), dyn_dtree_.data());
    }
    InitBlock();
    if (eof) BiWindup();
  }

  // ---- bits.c ----
  void SendBits(int value, int length) {
    bi_buf_ |= static_cast<uint64_t>(static_cast<unsigned>(value) & ((1u << length) - 1)) << bi_valid_;
    bi_valid_ += length;
    if (bi_valid_ >= 32) {
      char b[4] = {static_cast<char>(bi_buf_), static_cast<char>(bi_buf_ >> 8), static_cast<char>(bi_buf_ >> 16),
                   static_cast<char>(bi_buf_ >> 24)};
      out_.append(b, 4);
      bi_buf_ >>= 32;
      bi_valid_ -= 32;
    }
  }

  void SendCode(int c, const Node* tree) { SendBits(tree[c].fc, tree[c].dl); }

  void BiWindup() {
    while (bi_valid_ > 0) {
      out_.push_back(static_cast<char>(bi_buf_));
      bi_buf_ >>= 8;
      bi_valid_ -= 8;
    }
    bi_buf_ = 0;
    bi_valid_ = 0;
  }

  void CopyBlock(const uint8_t* buf, unsigned len) {
    BiWindup();
    out_.push_back(static_cast<char>(len & 0xff));
    out_.push_back(static_cast<char>((len >> 8) & 0xff));
    out_.push_back(static_cast<char>(~len & 0xff));
    out_.push_back(static_cast<char>((~len >> 8) & 0xff));
    out_.append(reinterpret_cast<const char*>(buf), len);
  }

  std::string_view in_;
  size_t in_pos_ = 0;
  const int level_;

  // deflate.c
  std::unique_ptr<uint8_t[]> window_ = std::make_unique<uint8_t[]>(kWindowSize + kWindowSlack);  // zeroed
  std::unique_ptr<uint16_t[]> prev_ = std::make_unique<uint16_t[]>(kWSize);
  std::unique_ptr<uint16_t[]> head_ = std::make_unique<uint16_t[]>(kHashSize);
  unsigned ins_h_ = 0;
  unsigned prev_length_ = 0;
  unsigned strstart_ = 0;
  unsigned match_start_ = 0;
  unsigned lookahead_ = 0;
  bool eofile_ = false;
  long block_start_ = 0;
  unsigned max_chain_length_ = 0;
  unsigned max_lazy_match_ = 0;
  unsigned good_match_ = 0;
  unsigned nice_match_ = 0;

  // trees.c
  std::array<Node, kHeapSize> dyn_ltree_{};
  std::array<Node, 2 * kDCodes + 1> dyn_dtree_{};
  std::array<Node, 2 * kBlCodes + 1> bl_tree_{};
  TreeDesc l_desc_{dyn_ltree_.data(), kTables.static_ltree.data(), kExtraLBits.data(), kLiterals + 1, kLCodes,
                   kMaxBits, 0};
  TreeDesc d_desc_{dyn_dtree_.data(), kTables.static_dtree.data(), kExtraDBits.data(), 0, kDCodes, kMaxBits, 0};
  TreeDesc bl_desc_{bl_tree_.data(), nullptr, kExtraBlBits.data(), 0, kBlCodes, kMaxBlBits, 0};
  uint16_t bl_count_[kMaxBits + 1] = {};
  int heap_[2 * kLCodes + 1] = {};
  int heap_len_ = 0;
  int heap_max_ = 0;
  uint8_t depth_[2 * kLCodes + 1] = {};
  std::unique_ptr<uint8_t[]> l_buf_ = std::make_unique<uint8_t[]>(kLitBufSize);
  std::unique_ptr<uint16_t[]> d_buf_ = std::make_unique<uint16_t[]>(kDistBufSize);
  std::unique_ptr<uint8_t[]> flag_buf_ = std::make_unique<uint8_t[]>(kLitBufSize / 8 + 1);
  unsigned last_lit_ = 0;
  unsigned last_dist_ = 0;
  unsigned last_flags_ = 0;
  uint8_t flags_ = 0;
  uint8_t flag_bit_ = 1;
  uint64_t opt_len_ = 0;
  uint64_t static_len_ = 0;

  // bits.c
  std::string out_;
  uint64_t bi_buf_ = 0;
  int bi_valid_ = 0;
};

}  // namespace

absl::StatusOr<std::string> GnuGzip(std::string_view raw, int level) {
  if (level < 1 || level > 9) {
    return absl::InvalidArgumentError("GNU gzip deflate: compression level " + std::to_string(level) +
                                      " is outside 1..9 (gzip has no other levels); pass 1..9");
  }
  auto deflater = std::make_unique<GnuDeflater>(raw, level);
  return deflater->Run();
}

}  // namespace d4c::deflate
