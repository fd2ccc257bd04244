// StrCat for std::string_view. Debian's abseil is built with its own
// absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so absl::StrCat does
// not take std::string_view; this small helper is used for messages instead.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace d4c {
namespace strcat_internal {

inline void Append(std::string* out, std::string_view s) { out->append(s); }
inline void Append(std::string* out, const char* s) { out->append(s ? s : "(null)"); }
inline void Append(std::string* out, const std::string& s) { out->append(s); }
inline void Append(std::string* out, absl::string_view s) { out->append(s.data(), s.size()); }
inline void Append(std::string* out, char c) { out->push_back(c); }
template <std::integral T>
  requires(!std::same_as<T, char> && !std::same_as<T, bool>)
void Append(std::string* out, T v) {
  out->append(std::to_string(v));
}
inline void Append(std::string* out, double v) { out->append(std::to_string(v)); }

}  // namespace strcat_internal

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::string out;
  (strcat_internal::Append(&out, args), ...);
  return out;
}

// absl::Status messages are absl::string_view; this turns them into std::string.
inline std::string Msg(absl::string_view s) { return std::string(s.data(), s.size()); }

}  // namespace d4c
