// Adding context to an absl::Status on its way up without losing its code.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace d4c {

// `status` with "<context>: " put before its message; code and payloads are
// kept, and an OK status stays OK. For
//   if (auto s = Load(path); !s.ok()) return Annotate(s, "loading the parent");
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace d4c
