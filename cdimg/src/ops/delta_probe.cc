// A cheap look at how much of a file its delta base lacks (MeasureNovelty).
#include <algorithm>
#include <array>
#include <vector>

#include "ops/delta_internal.h"

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

template <typename F>
void ForEachAnchor(std::string_view s, F&& f) {
  uint64_t h = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    h = (h << 1) + kGear[static_cast<uint8_t>(s[i])];
    if (i + 1 >= kWindow && (h & kAnchorMask) == 0) f(h);
  }
}

}  // namespace

Novelty MeasureNovelty(std::string_view base, std::string_view target) {
  std::vector<uint64_t> known;
  known.reserve(base.size() >> (kAnchorBits - 1));
  ForEachAnchor(base, [&](uint64_t h) { known.push_back(h); });
  std::sort(known.begin(), known.end());
  Novelty n;
  ForEachAnchor(target, [&](uint64_t h) {
    ++n.anchors;
    n.missing += !std::binary_search(known.begin(), known.end(), h);
  });
  return n;
}

}  // namespace d4c::delta_internal
