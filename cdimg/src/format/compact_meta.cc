#include "format/compact_meta.h"

#include <cstring>

#include "d4c/cdimg.h"

namespace d4c::internal {

namespace {

constexpr char kEscape = 0x01;
constexpr char kEscapedByte = 0x00;
constexpr char kDigest = 0x01;
constexpr std::string_view kPrefix = "sha256:";
constexpr size_t kHexLen = 64;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool IsDigestAt(std::string_view s, size_t i) {
  if (s.compare(i, kPrefix.size(), kPrefix) != 0 || s.size() - i < kPrefix.size() + kHexLen) return false;
  for (size_t k = 0; k < kHexLen; ++k)
    if (HexValue(s[i + kPrefix.size() + k]) < 0) return false;
  return true;
}

}  // namespace

std::string PackConfigDigests(std::string_view config) {
  std::string out;
  out.reserve(config.size());
  for (size_t i = 0; i < config.size();) {
    if (IsDigestAt(config, i)) {
      out.push_back(kEscape);
      out.push_back(kDigest);
      const char* hex = config.data() + i + kPrefix.size();
      for (size_t k = 0; k < kHexLen; k += 2)
        out.push_back(static_cast<char>(HexValue(hex[k]) << 4 | HexValue(hex[k + 1])));
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
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < packed.size();) {
    if (packed[i] != kEscape) {
      out.push_back(packed[i++]);
    } else if (i + 1 < packed.size() && packed[i + 1] == kEscapedByte) {
      out.push_back(kEscape);
      i += 2;
    } else if (i + 1 < packed.size() && packed[i + 1] == kDigest && packed.size() - i - 2 >= 32) {
      out += kPrefix;
      for (size_t k = 0; k < 32; ++k) {
        uint8_t b = static_cast<uint8_t>(packed[i + 2 + k]);
        out.push_back(kHex[b >> 4]);
        out.push_back(kHex[b & 15]);
      }
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
