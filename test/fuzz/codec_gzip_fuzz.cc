// libFuzzer target for the gzip codec's decoder (codec id 5). Modes as in
// codec_fuzz.h, except that the mutated mode first wraps base and target in
// gzip files made by zlib (level from the flag byte), so that Encode finds
// its recipe and the flipped byte lands in a real gzip patch:
//   raw:     [1 flag][3 target_size][2 base_len][base][patch]
//   mutated: [1 flag][2 pos][1 xor][2 base_len][base][target]
// Flag bit 1 picks the pack form; bits 2-5 the zlib level (1..9); bit 6
// keeps the base as it is (not gzip); bit 7 makes zip archives instead of
// gzip files (base and target each split in two deflated members and a
// stored one, and when base_len is even a member both share: the zip
// forms, base kinds 1 and 2). A decode must fail or return exactly
// target_size bytes; an unmodified patch must reproduce the target.
#include <string>
#include <vector>

#include "codec_fuzz.h"
#include "d4c/deflate.h"
#include "zip_fixture.h"

namespace {

using d4c::fuzz::Check;
using d4c::fuzz::Le;

constexpr size_t kMaxEncode = 16 << 10;

std::string Gz(std::string_view raw, int level) {
  auto s = d4c::deflate::Zlib(raw, {level, 8}, UINT32_MAX);
  Check(s.ok());
  std::string g = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, static_cast<char>(level == 9 ? 2 : level == 1 ? 4 : 0), 3};
  g += *s;
  uint32_t crc = d4c::deflate::Crc32(raw), n = static_cast<uint32_t>(raw.size());
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(crc >> (8 * i)));
  for (int i = 0; i < 4; ++i) g.push_back(static_cast<char>(n >> (8 * i)));
  return g;
}

// A jar-like archive of `raw`: its halves deflated, a stored member between,
// and with `same` a member base and target share (base kind 2 takes its
// stream from the base).
std::string Zip(std::string_view raw, int level, bool same) {
  size_t half = raw.size() / 2;
  std::vector<d4c::testing::ZipEntry> entries = {{"a.class", std::string(raw.substr(0, half)), level},
                                                 {"stored", "kept as it is", 0},
                                                 {"b.class", std::string(raw.substr(half)), level}};
  if (same) entries.push_back({"same.class", "a member no update changes, a member no update changes", level});
  std::string z = d4c::testing::MakeZip(entries);
  Check(!z.empty());
  return z;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
  std::string_view rest(reinterpret_cast<const char*>(data) + 6, size - 6);
  std::string_view base = rest.substr(0, base_len), tail = rest.substr(base_len);
  bool pack = data[0] & 2;
  const d4c::DeltaCodec& codec = d4c::GetCodec(d4c::CodecId::kGzip);
  if (!(data[0] & 1)) {
    uint64_t target_size = Le(data + 1, 3) % (d4c::fuzz::kMaxTarget + 1);
    auto out = codec.DecodeForm(base, tail, target_size, pack);
    if (out.ok()) Check(out->size() == target_size);
    return 0;
  }
  if (base.size() + tail.size() > kMaxEncode) return 0;
  int level = 1 + (data[0] >> 2 & 15) % 9;
  bool zip = data[0] & 128;
  bool same = base.size() % 2 == 0;  // a shared member in half of the zip cases
  std::string b = data[0] & 64 ? std::string(base) : zip ? Zip(base, level, same) : Gz(base, level);
  std::string t = zip ? Zip(tail, level, same) : Gz(tail, level);
  auto patch = pack ? codec.EncodeForPack(b, t) : codec.Encode(b, t);
  Check(patch.ok());  // zlib made it: a recipe always exists
  uint8_t x = data[3];
  if (x != 0) (*patch)[Le(data + 1, 2) % patch->size()] ^= static_cast<char>(x);
  auto out = codec.DecodeForm(b, *patch, t.size(), pack);
  if (x == 0) Check(out.ok() && *out == t);
  if (out.ok()) Check(out->size() == t.size());
  return 0;
}
