#include "d4c/base/digest.h"

#include "absl/strings/escaping.h"
#include "d4c/base/strcat.h"

namespace d4c {

namespace {

constexpr std::string_view kPrefix = "sha256:";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Exactly 64 lowercase hex digits.
bool ParseBareHex(std::string_view hex, Digest* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::string DigestHex(const Digest& d) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 15];
  }
  return out;
}

std::string DigestString(const Digest& d) { return StrCat(kPrefix, DigestHex(d)); }

bool ParseDigestHex(std::string_view hex, Digest* out) {
  if (hex.starts_with(kPrefix)) hex.remove_prefix(kPrefix.size());
  return ParseBareHex(hex, out);
}

absl::StatusOr<Digest> ParseDigest(std::string_view text, std::string_view what) {
  Digest d;
  if (text.starts_with(kPrefix) && ParseBareHex(text.substr(kPrefix.size()), &d)) return d;
  // The text may be anything a registry or archive sent: escape it.
  return absl::InvalidArgumentError(StrCat(what, ": unsupported or malformed digest \"",
                                           absl::CHexEscape(absl::string_view(text.data(), text.size())),
                                           "\" (want sha256:<64 lowercase hex>)"));
}

bool IsDigestString(std::string_view text) {
  Digest d;
  return text.starts_with(kPrefix) && ParseBareHex(text.substr(kPrefix.size()), &d);
}

}  // namespace d4c
