// libFuzzer target for bsdiff's x86 code form (x86_code.h). Modes, by the
// first input byte % 3:
//   0 transform: [1 mode][2 start][2 size][bytes]  both transforms are each
//     other's inverse on any bytes and span
//   1 mutated:   [1 mode][2 pos][1 xor][2 base_len][base][target]  encode in
//     the x86 form on the whole of each side, flip one patch byte, decode:
//     the unflipped patch must give the target, a flipped one must fail or
//     give the target (the target hash is checked after the inverse)
//   2 raw:       [1 mode][3 target_size][2 base_len][base][patch]  decode
//     arbitrary bytes with the x86 flag set in the ctrl length word
//   3 adjusted mutated: as 1, base and target wrapped as minimal ELF files
//     (MinimalElf) and encoded in the adjusted x86 form (x86_adjust.h)
//   4 adjusted raw: as 2 against MinimalElf(base), with the form byte of
//     the adjusted x86 form, so the map is built from arbitrary ctrl triples
// Plain bsdiff patches are fuzzed by codec_bsdiff_fuzz.
#include <string>
#include <string_view>

#include "bsdiff_codec.h"
#include "codec_fuzz.h"
#include "x86_code.h"

namespace {

using d4c::fuzz::Check;
using d4c::fuzz::Le;

constexpr size_t kMaxEncode = 16 << 10;

void Transform(std::string_view bytes, uint32_t start, uint32_t size) {
  std::string x(bytes);
  start = std::min<uint32_t>(start, x.size());
  size = std::min<uint32_t>(size, x.size() - start);
  d4c::codec_internal::X86Span span{start, size};
  std::string t = x;
  d4c::codec_internal::X86ToAbsolute(t, span);
  d4c::codec_internal::X86ToRelative(t, span);
  Check(t == x);
  d4c::codec_internal::X86ToRelative(x, span);
  d4c::codec_internal::X86ToAbsolute(x, span);
  Check(x == bytes);
}

void Mutated(std::string_view base, std::string_view target, uint32_t pos, uint8_t x) {
  if (base.size() + target.size() > kMaxEncode) return;
  const d4c::codec_internal::BsdiffCodec codec;
  auto patch = codec.EncodeX86(base, target, {0, base.size()}, {0, target.size()}, d4c::NoHelpers(), UINT64_MAX);
  Check(patch.ok());
  if (x != 0) (*patch)[pos % patch->size()] ^= static_cast<char>(x);
  auto out = codec.Decode(base, *patch, target.size());
  if (x == 0) Check(out.ok() && *out == target);
  if (out.ok()) Check(*out == target);
}

void AdjustedMutated(std::string_view base_body, std::string_view target_body, uint32_t pos, uint8_t x) {
  if (base_body.size() + target_body.size() > kMaxEncode) return;
  std::string base = d4c::fuzz::MinimalElf(base_body), target = d4c::fuzz::MinimalElf(target_body);
  auto bs = d4c::codec_internal::X86_64CodeSpan(base), ts = d4c::codec_internal::X86_64CodeSpan(target);
  if (!bs || !ts) return;  // a body of 0 or 1 byte has no code
  const d4c::codec_internal::BsdiffCodec codec;
  auto patch = codec.EncodeAdjusted(base, target, *bs, *ts, d4c::NoHelpers(), UINT64_MAX);
  Check(patch.ok());
  if (x != 0) (*patch)[pos % patch->size()] ^= static_cast<char>(x);
  auto out = codec.Decode(base, *patch, target.size());
  if (x == 0) Check(out.ok() && *out == target);
  if (out.ok()) Check(*out == target);
}

void Raw(std::string_view base, std::string_view patch, uint64_t target_size, bool adjusted = false) {
  std::string p(patch);
  if (p.size() >= 4) p[3] = static_cast<char>(p[3] | 0x80);
  if (adjusted && p.size() > 20) p[20] = 2;
  auto out = d4c::GetCodec(d4c::CodecId::kBsdiff).Decode(base, p, target_size);
  if (out.ok()) Check(out->size() == target_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  std::string_view all(reinterpret_cast<const char*>(data), size);
  switch (data[0] % 5) {
    case 0:
      Transform(all.substr(5), Le(data + 1, 2), Le(data + 3, 2));
      break;
    case 1: {
      size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
      std::string_view rest = all.substr(6);
      Mutated(rest.substr(0, base_len), rest.substr(base_len), Le(data + 1, 2), data[3]);
      break;
    }
    case 2: {
      size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
      std::string_view rest = all.substr(6);
      Raw(rest.substr(0, base_len), rest.substr(base_len), Le(data + 1, 3) % (d4c::fuzz::kMaxTarget + 1));
      break;
    }
    case 3: {
      size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
      std::string_view rest = all.substr(6);
      AdjustedMutated(rest.substr(0, base_len), rest.substr(base_len), Le(data + 1, 2), data[3]);
      break;
    }
    default: {
      size_t base_len = std::min<size_t>(Le(data + 4, 2), size - 6);
      std::string_view rest = all.substr(6);
      Raw(d4c::fuzz::MinimalElf(rest.substr(0, base_len)), rest.substr(base_len),
          Le(data + 1, 3) % (d4c::fuzz::kMaxTarget + 1), /*adjusted=*/true);
      break;
    }
  }
  return 0;
}
