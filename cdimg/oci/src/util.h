// Private helpers shared by the OCI readers and the layer squasher.
#pragma once

#include <locale.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/base/limits.h"
#include "d4c/entry.h"
#include "nlohmann/json.hpp"

namespace d4c::oci_internal {

// `"text"` with non-printable bytes escaped, for error messages: layer paths
// are arbitrary bytes and must not garble a terminal.
std::string Quote(std::string_view s);

// Switches the calling thread to the "C" locale for its lifetime. libarchive
// converts names between the archive charset and the current locale's
// codeset; in "C" it keeps the raw bytes (with a warning) whereas e.g. a
// Latin-1 locale set by a host program would rewrite them.
class ScopedCLocale {
 public:
  ScopedCLocale();
  ~ScopedCLocale();
  ScopedCLocale(const ScopedCLocale&) = delete;
  ScopedCLocale& operator=(const ScopedCLocale&) = delete;

 private:
  locale_t c_locale_ = nullptr;
  locale_t previous_ = nullptr;
};

// Non-throwing JSON parse; `what` names the document in the error.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what);

// Typed field access that never throws (missing or wrong type: nullopt / null).
const nlohmann::json* JsonField(const nlohmann::json& obj, const char* key);
std::optional<std::string> JsonString(const nlohmann::json& obj, const char* key);
std::optional<uint64_t> JsonUint(const nlohmann::json& obj, const char* key);

// Media types of layer blobs (tar, optionally compressed) that we can squash.
bool IsLayerMediaType(std::string_view media_type);
// Media types of image configs we accept.
bool IsConfigMediaType(std::string_view media_type);
bool IsManifestMediaType(std::string_view media_type);
bool IsIndexMediaType(std::string_view media_type);

}  // namespace d4c::oci_internal
