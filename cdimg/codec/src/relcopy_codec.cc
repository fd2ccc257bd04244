#include "relcopy_codec.h"

#include <optional>

#include "hash64.h"
#include "relcopy_format.h"
#include "relcopy_match.h"
#include "d4c/base/varint.h"
#include "d4c/base/zstd.h"
#include "d4c/base/strcat.h"

namespace d4c::codec_internal {

namespace {

constexpr char kStandaloneForm = 0;
constexpr int kHashSize = 8;
// The encoder never writes a stream longer than the literal-only one
// (1 + varint + target bytes), so the decoder can bound the frame by this.
constexpr uint64_t kRawSlack = 16;

absl::Status Bad(std::string_view what) { return absl::DataLossError(StrCat("relcopy patch: ", what)); }

}  // namespace

absl::StatusOr<std::string> RelcopyCodec::EncodeForPack(std::string_view base, std::string_view target) const {
  return relcopy::Match(base, target);
}

absl::StatusOr<std::string> RelcopyCodec::Encode(std::string_view base, std::string_view target) const {
  auto raw = relcopy::Match(base, target);
  if (!raw.ok()) return raw.status();
  return StandaloneFromPack(target, *raw);
}

absl::StatusOr<std::string> RelcopyCodec::StandaloneFromPack(std::string_view target, std::string_view member) const {
  auto frame = ZstdCompressFrame(member, level_, 0);
  if (!frame.ok()) return frame.status();
  std::string out(1, kStandaloneForm);
  uint64_t h = Hash64(target);
  PutLE(&out, h, kHashSize);
  out += *frame;
  return out;
}

namespace {

// Runs the raw stream; `hash` (standalone form) is checked when given.
absl::StatusOr<std::string> Apply(std::string_view base, std::string_view raw, uint64_t target_size,
                                  std::optional<uint64_t> hash) {
  // A dry run first: a few copies of a big base could claim any size, and
  // nothing is allocated until the stream is known to make exactly target_size.
  if (auto s = relcopy::Apply(base, raw, target_size, nullptr); !s.ok()) return s;
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  if (auto s = relcopy::Apply(base, raw, target_size, out->data()); !s.ok()) return s;
  if (hash && Hash64(*out) != *hash) return Bad("checksum mismatch (wrong base or corrupt patch)");
  return out;
}

}  // namespace

absl::StatusOr<std::string> RelcopyCodec::Decode(std::string_view base, std::string_view patch,
                                                 uint64_t target_size) const {
  if (patch.empty() || patch[0] != kStandaloneForm) return Bad("not a standalone patch (form byte)");
  if (patch.size() < 1 + kHashSize) return Bad("truncated header");
  uint64_t hash = GetLE(patch.data() + 1, kHashSize);
  if (target_size > UINT64_MAX - kRawSlack) return Bad("target size out of range");
  auto raw = ZstdDecompressFrame(patch.substr(1 + kHashSize), target_size + kRawSlack);
  if (!raw.ok()) return Bad(Msg(raw.status().message()));
  return Apply(base, *raw, target_size, hash);
}

absl::StatusOr<std::string> RelcopyCodec::DecodeFromPack(std::string_view base, std::string_view patch,
                                                         uint64_t target_size) const {
  return Apply(base, patch, target_size, std::nullopt);
}

}  // namespace d4c::codec_internal
