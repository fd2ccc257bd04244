// A cheap look at how much of a file its delta base lacks (MeasureNovelty),
// how well a base serves it (FastPatchSize), and the sparse anchors the
// search for similar files compares (SampleAnchors).
#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "d4c/base/zstd.h"
#include "delta_internal.h"

namespace d4c::delta_internal {

namespace {

// Gear rolling hash (as in FastCDC): every byte shifts the hash one bit left,
// so a byte has left it 64 bytes later and the hash describes a 64-byte
// window. Anchors are the windows whose hash has its top kAnchorBits bits
// clear: chosen by content, so the same bytes anchor alike in base and
// target wherever they sit.
constexpr int kWindow = 64;
constexpr int kAnchorBits = 5;  // an anchor every ~32 bytes
constexpr uint64_t kAnchorMask = ((uint64_t{1} << kAnchorBits) - 1) << (64 - kAnchorBits);
// SampleAnchors keeps the anchors with two more top bits clear: ~1 per 128 bytes.
constexpr uint64_t kSampleMask = ((uint64_t{1} << (kAnchorBits + 2)) - 1) << (64 - kAnchorBits - 2);

constexpr std::array<uint64_t, 256> MakeGear() {
  std::array<uint64_t, 256> g{};
  uint64_t x = 0x9E3779B97F4A7C15ull;  // xorshift64*: fixed, so results never change
  for (uint64_t& v : g) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    v = x * 0x2545F4914F6CDD1Dull;
  }
  return g;
}
constexpr std::array<uint64_t, 256> kGear = MakeGear();

// Calls f(hash) for every anchor of s[begin, end); hashing starts a window
// earlier so that the first anchors are those of a pass over all of s.
template <typename F>
void AnchorsIn(std::string_view s, size_t begin, size_t end, F&& f) {
  uint64_t h = 0;
  for (size_t i = begin >= kWindow ? begin - kWindow : 0; i < end; ++i) {
    h = (h << 1) + kGear[static_cast<uint8_t>(s[i])];
    if (i >= begin && i + 1 >= kWindow && (h & kAnchorMask) == 0) f(h);
  }
}

// Every anchor of s, in some order. The hash is one long chain of dependent
// additions, so four quarters are hashed in one loop, side by side (~4x the
// speed of one pass, same anchors).
template <typename F>
void ForEachAnchor(std::string_view s, F&& f) {
  constexpr size_t kLanes = 4;
  size_t q = s.size() / kLanes;
  if (q < 4 * kWindow) return AnchorsIn(s, 0, s.size(), f);
  uint64_t h[kLanes] = {};
  size_t start[kLanes];
  for (size_t k = 0; k < kLanes; ++k) {
    start[k] = k * q;
    for (size_t i = start[k] >= kWindow ? start[k] - kWindow : 0; i < start[k]; ++i)
      h[k] = (h[k] << 1) + kGear[static_cast<uint8_t>(s[i])];
  }
  for (size_t t = 0; t < q; ++t) {
    for (size_t k = 0; k < kLanes; ++k) {
      size_t i = start[k] + t;
      h[k] = (h[k] << 1) + kGear[static_cast<uint8_t>(s[i])];
      if (i + 1 >= kWindow && (h[k] & kAnchorMask) == 0) f(h[k]);
    }
  }
  AnchorsIn(s, kLanes * q, s.size(), f);  // the remainder
}

}  // namespace

// The base's anchors go into a bitmap of ~64 bits per anchor (a one-hash
// Bloom filter: ~1.5% of new windows pass for known, which only lowers the
// estimate a little) rather than a sorted list: no sort, and lookups stay in
// a few MB. typescript's 9 MB bundles, which are near-identical and go to
// xdelta3 anyway, pay ~1 ns per byte of base and target for the look.
Novelty MeasureNovelty(std::string_view base, std::string_view target) {
  int bits_log = 16;
  while (bits_log < 36 && (uint64_t{1} << bits_log) < 2 * base.size()) ++bits_log;
  std::vector<uint64_t> known((uint64_t{1} << bits_log) / 64);
  auto slot = [&](uint64_t h) { return (h * 0x9E3779B97F4A7C15ull) >> (64 - bits_log); };
  ForEachAnchor(base, [&](uint64_t h) {
    uint64_t i = slot(h);
    known[i / 64] |= uint64_t{1} << (i % 64);
  });
  Novelty n;
  ForEachAnchor(target, [&](uint64_t h) {
    uint64_t i = slot(h);
    ++n.anchors;
    n.missing += !(known[i / 64] >> (i % 64) & 1);
  });
  return n;
}

std::vector<uint64_t> SampleAnchors(std::string_view s) {
  std::vector<uint64_t> out;
  ForEachAnchor(s, [&](uint64_t h) {
    if ((h & kSampleMask) == 0) out.push_back(h);
  });
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

uint64_t FastPatchSize(std::string_view base, std::string_view target) {
  constexpr uint64_t kFailed = std::numeric_limits<uint64_t>::max();
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx || !ZstdSet(cctx.get(), ZSTD_c_compressionLevel, 3).ok() ||
      !ZstdSet(cctx.get(), ZSTD_c_windowLog, WindowLogFor(base.size() + target.size())).ok() ||
      ZSTD_isError(ZSTD_CCtx_refPrefix(cctx.get(), base.data(), base.size())))
    return kFailed;
  auto patch = ZstdCompressWith(cctx.get(), target);
  return patch.ok() ? patch->size() : kFailed;
}

}  // namespace d4c::delta_internal
