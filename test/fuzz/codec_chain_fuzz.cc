// libFuzzer target for the chained patch's decoder (codec id 6, written by
// merge --compose). Modes, picked by the first input byte:
//   raw:     [1 flag][3 target_size][2 base_len][base][patch]  decode arbitrary bytes
//   mutated: [1 flag][2 pos][1 xor][2 base_len][base][target] the chain
//            base -> mid -> target of two real patches (mid: the target with
//            its first half replaced by the base's), one byte flipped.
// Flag bit 1 picks the pack form; bits 2-3 the first step's codec, bits 4-5
// the second's (zstd, xdelta3, bsdiff, relcopy; steps in the pack form when
// bit 1 is set); bit 6 makes the first step a stored one (mid itself); bit
// 7 leaves the second step in a pack of an image (located), which only an
// image reader resolves: the codec must refuse it. A decode must fail or
// return exactly target_size bytes; an unmodified patch must reproduce the
// target.
#include <string>
#include <vector>

#include "codec_fuzz.h"

namespace {

using d4c::fuzz::Check;
using d4c::fuzz::Le;

constexpr size_t kMaxEncode = 16 << 10;

d4c::CodecId Pick(int v) {
  static const d4c::CodecId ids[] = {d4c::CodecId::kZstd, d4c::CodecId::kXdelta3, d4c::CodecId::kBsdiff,
                                     d4c::CodecId::kRelcopy};
  return ids[v & 3];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
  std::string_view rest(reinterpret_cast<const char*>(data) + 6, size - 6);
  std::string_view base = rest.substr(0, base_len), tail = rest.substr(base_len);
  bool pack = data[0] & 2;
  const d4c::DeltaCodec& codec = d4c::GetCodec(d4c::CodecId::kChain);
  if (!(data[0] & 1)) {
    uint64_t target_size = Le(data + 1, 3) % (d4c::fuzz::kMaxTarget + 1);
    auto out = codec.DecodeForm(base, tail, target_size, pack);
    if (out.ok()) Check(out->size() == target_size);
    return 0;
  }
  if (2 * (base.size() + tail.size()) > kMaxEncode) return 0;
  std::string target(tail);
  std::string mid = std::string(base.substr(0, std::min(base.size(), target.size() / 2))) +
                    target.substr(target.size() / 2);
  d4c::CodecId c1 = Pick(data[0] >> 2), c2 = Pick(data[0] >> 4);
  auto encode = [&](d4c::CodecId c, std::string_view from, std::string_view to) {
    const d4c::DeltaCodec& k = d4c::GetCodec(c);
    return pack ? k.EncodeForPack(from, to) : k.Encode(from, to);
  };
  auto p1 = encode(c1, base, mid);
  auto p2 = encode(c2, mid, target);
  Check(p1.ok() && p2.ok());
  std::vector<d4c::ChainStep> steps{{c1, pack, mid.size(), *p1, p1->size()},
                                    {c2, pack, target.size(), *p2, p2->size()}};
  if (data[0] & 0x40) {
    steps[0] = {d4c::CodecId::kZstd, false, mid.size(), mid, mid.size()};
    steps[0].stored = true;
  }
  const bool located = data[0] & 0x80;
  if (located) {
    steps[1].located = true;
    steps[1].pack = data[3];
    steps[1].offset = data[2];
  }
  std::string patch = d4c::MakeChainPatch(steps, pack);
  uint8_t x = data[3];
  if (x != 0) patch[Le(data + 1, 2) % patch.size()] ^= static_cast<char>(x);
  auto out = codec.DecodeForm(base, patch, target.size(), pack);
  if (x == 0) Check(located ? !out.ok() : out.ok() && *out == target);
  if (out.ok()) Check(out->size() == target.size());
  return 0;
}
