// The chained patch (codec 6): parse, build, decode. See chain_codec.h.
#include "chain_codec.h"

#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "d4c/base/varint.h"

namespace d4c {

namespace {

constexpr uint8_t kFormStandalone = 1, kFormPack = 2;
constexpr uint8_t kLocated = 0x80;  // step form bit: the bytes lie in a pack of the image
constexpr uint8_t kStoredCodec = 0;  // first step only: the step's bytes are its output
constexpr uint64_t kMaxStepOutput = 1ull << 30;

absl::Status Bad(std::string_view why) { return absl::DataLossError(StrCat("chained patch: ", why)); }

}  // namespace

absl::StatusOr<std::vector<ChainStep>> ParseChainPatch(std::string_view patch, bool packed) {
  using codec_internal::GetVarint;
  if (patch.empty()) return Bad("empty");
  uint8_t form = static_cast<uint8_t>(patch[0]);
  if (form != kFormStandalone && form != kFormPack) return Bad(StrCat("unknown form byte ", int(form)));
  if ((form == kFormPack) != packed)
    return Bad(packed ? "a standalone patch stored as a pack member" : "a pack patch stored standalone");
  size_t pos = 1;
  uint64_t n;
  if (!GetVarint(patch, &pos, &n)) return Bad("truncated step count");
  if (n < 2 || n > kMaxChainSteps) return Bad(StrCat("step count ", n, " outside 2..", kMaxChainSteps));
  std::vector<ChainStep> steps(n);
  uint64_t total = 0;
  for (size_t k = 0; k < steps.size(); ++k) {
    ChainStep& s = steps[k];
    if (patch.size() - pos < 2) return Bad("truncated step table");
    uint8_t codec = static_cast<uint8_t>(patch[pos++]);
    uint8_t sform = static_cast<uint8_t>(patch[pos++]);
    s.stored = codec == kStoredCodec;
    if (s.stored && k > 0) return Bad(StrCat("step ", k + 1, " is stored; only the first step may be"));
    if (!s.stored && (codec < 1 || codec > 7 || codec == static_cast<uint8_t>(CodecId::kChain)))
      return Bad(StrCat("step codec id ", int(codec), " not in 0..5 or 7"));
    s.located = sform & kLocated;
    uint8_t form = sform & ~kLocated;
    if ((form != kFormStandalone && form != kFormPack) || (s.stored && form != kFormStandalone))
      return Bad(StrCat("step form byte ", int(sform)));
    uint64_t len;
    if (!GetVarint(patch, &pos, &s.out_size) || !GetVarint(patch, &pos, &len)) return Bad("truncated step table");
    if (s.out_size > kMaxStepOutput) return Bad(StrCat("step output of ", s.out_size, " bytes exceeds 1 GiB"));
    if (s.stored && len != s.out_size) return Bad(StrCat("stored step of ", len, " bytes makes ", s.out_size));
    if (s.located) {
      uint64_t pack;
      if (!GetVarint(patch, &pos, &pack) || !GetVarint(patch, &pos, &s.offset)) return Bad("truncated step table");
      if (pack > UINT32_MAX || len > kMaxStepOutput || s.offset > kMaxStepOutput)
        return Bad("step location out of range");
      s.pack = static_cast<uint32_t>(pack);
    } else {
      if (len > patch.size()) return Bad("step patch longer than the patch");
      total += len;
    }
    s.codec = s.stored ? CodecId::kZstd : static_cast<CodecId>(codec);
    s.packed = form == kFormPack;
    s.patch_length = len;
  }
  if (total != patch.size() - pos) return Bad("step patch lengths do not add up to the patch");
  for (ChainStep& s : steps) {
    if (s.located) continue;
    s.patch = patch.substr(pos, s.patch_length);
    pos += s.patch_length;
  }
  return steps;
}

std::string MakeChainPatch(const std::vector<ChainStep>& steps, bool packed) {
  using codec_internal::PutVarint;
  std::string out(1, static_cast<char>(packed ? kFormPack : kFormStandalone));
  PutVarint(&out, steps.size());
  for (const ChainStep& s : steps) {
    out.push_back(static_cast<char>(s.stored ? kStoredCodec : static_cast<uint8_t>(s.codec)));
    out.push_back(static_cast<char>((s.packed ? kFormPack : kFormStandalone) | (s.located ? kLocated : 0)));
    PutVarint(&out, s.out_size);
    PutVarint(&out, s.located ? s.patch_length : s.patch.size());
    if (!s.located) continue;
    PutVarint(&out, s.pack);
    PutVarint(&out, s.offset);
  }
  for (const ChainStep& s : steps)
    if (!s.located) out += s.patch;
  return out;
}

namespace codec_internal {

absl::StatusOr<std::string> ChainCodec::Encode(std::string_view, std::string_view) const {
  return absl::FailedPreconditionError(
      "the chained patch is made by merge from two deltas' patches, not encoded from a base and a target");
}

absl::StatusOr<std::string> ChainCodec::DecodeChain(std::string_view base, std::string_view patch,
                                                    uint64_t target_size, bool pack) const {
  auto steps = ParseChainPatch(patch, pack);
  if (!steps.ok()) return steps.status();
  if (steps->back().out_size != target_size)
    return Bad(StrCat("last step makes ", steps->back().out_size, " bytes, the file has ", target_size));
  for (size_t k = 0; k < steps->size(); ++k)
    if ((*steps)[k].located)
      return Bad(StrCat("step ", k + 1, " lies in a pack of its image; only the image reader resolves it"));
  std::string cur;
  for (size_t k = 0; k < steps->size(); ++k) {
    const ChainStep& s = (*steps)[k];
    if (s.stored) {
      cur = std::string(s.patch);
      continue;
    }
    auto next = GetCodec(s.codec).DecodeForm(k == 0 ? base : std::string_view(cur), s.patch, s.out_size, s.packed);
    if (!next.ok()) return Annotate(next.status(), StrCat("chained patch step ", k + 1, " (", CodecName(s.codec), ")"));
    if (next->size() != s.out_size) return Bad(StrCat("step ", k + 1, " made the wrong size"));
    cur = std::move(*next);
  }
  return cur;
}

}  // namespace codec_internal
}  // namespace d4c
