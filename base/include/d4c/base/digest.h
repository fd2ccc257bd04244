// The one content address of d4c: a sha256, as 32 raw bytes.
//
// Every image id, parent id, file content digest and blob digest is a
// `Digest` inside the code and at library boundaries. Text forms exist only
// at the edges (JSON, labels, file names, messages):
//   DigestString: "sha256:<64 lowercase hex>"  (OCI descriptors, labels, ids)
//   DigestHex:    "<64 lowercase hex>"         (file names in stores/caches)
// Comparison is std::array's; DigestHash makes it a key of unordered maps.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c {

using Digest = std::array<uint8_t, 32>;

// For unordered containers keyed by digest: a sha256 is already uniform.
struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t h;
    std::memcpy(&h, d.data(), sizeof h);
    return h;
  }
};

// "<64 lowercase hex>"
std::string DigestHex(const Digest& d);
// "sha256:<64 lowercase hex>"
std::string DigestString(const Digest& d);

// Parses 64 lowercase hex digits, with or without a "sha256:" prefix, into
// *out. False (and *out unspecified) for anything else.
bool ParseDigestHex(std::string_view hex, Digest* out);

// Parses exactly "sha256:<64 lowercase hex>". Other algorithms, uppercase and
// any extra byte are refused, because digests become file names. The error
// is InvalidArgument and names `what` (e.g. "index.json: manifest digest").
absl::StatusOr<Digest> ParseDigest(std::string_view text, std::string_view what);

// True iff ParseDigest would accept `text`.
bool IsDigestString(std::string_view text);

}  // namespace d4c
