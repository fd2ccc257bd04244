#include "compact_meta.h"

#include <cstring>

#include "d4c/base/digest.h"
#include "d4c/cdimg.h"

namespace d4c::internal {

namespace {

constexpr char kEscape = 0x01;
constexpr char kEscapedByte = 0x00;
constexpr char kDigest = 0x01;
constexpr std::string_view kPrefix = "sha256:";
constexpr size_t kHexLen = 64;

// True, with the digest in *d, if "sha256:<64 lowercase hex>" starts at s[i].
bool DigestAt(std::string_view s, size_t i, Digest* d) {
  std::string_view at = s.substr(i, kPrefix.size() + kHexLen);
  return at.starts_with(kPrefix) && ParseDigestHex(at, d);
}

}  // namespace

std::string PackConfigDigests(std::string_view config) {
  std::string out;
  out.reserve(config.size());
  for (size_t i = 0; i < config.size();) {
    Digest d;
    if (DigestAt(config, i, &d)) {
      out.push_back(kEscape);
      out.push_back(kDigest);
      out.append(reinterpret_cast<const char*>(d.data()), d.size());
      i += kPrefix.size() + kHexLen;
      continue;
    }
    out.push_back(config[i]);
    if (config[i] == kEscape) out.push_back(kEscapedByte);
    ++i;
  }
  return out;
}

absl::StatusOr<std::string> UnpackConfigDigests(std::string_view packed, uint64_t max_size) {
  std::string out;
  for (size_t i = 0; i < packed.size();) {
    if (packed[i] != kEscape) {
      out.push_back(packed[i++]);
    } else if (i + 1 < packed.size() && packed[i + 1] == kEscapedByte) {
      out.push_back(kEscape);
      i += 2;
    } else if (i + 1 < packed.size() && packed[i + 1] == kDigest && packed.size() - i - 2 >= 32) {
      Digest d;
      std::memcpy(d.data(), packed.data() + i + 2, d.size());
      out += DigestString(d);
      i += 34;
    } else {
      return absl::DataLossError("config: malformed digest escape");
    }
    if (out.size() > max_size) return absl::DataLossError("config too large");
  }
  return out;
}

std::string MetaPrefix(const CdimgImage& parent, bool compact) {
  if (!compact) return std::string(parent.config()) + std::string(parent.metadata());
  std::string out = PackConfigDigests(parent.config());
  out += parent.metadata();
  for (size_t i = 0; i < parent.size(); ++i) {
    Recipe::Kind k = Recipe::Kind::kNone;
    if (parent.TypeAt(i) == EntryType::kRegular) k = parent.SizeAt(i) ? Recipe::Kind::kBase : Recipe::Kind::kEmpty;
    out.push_back(static_cast<char>(k));
  }
  return out;
}

SamePathBase SamePathIn(const CdimgImage& parent) {
  return [&parent](std::string_view path) -> std::optional<Digest> {
    std::optional<size_t> j = parent.Find(path);
    if (!j || parent.TypeAt(*j) != EntryType::kRegular || parent.SizeAt(*j) == 0) return std::nullopt;
    return parent.DigestAt(*j);
  };
}

}  // namespace d4c::internal
