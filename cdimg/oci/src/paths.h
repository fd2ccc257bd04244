// Layer entry names -> canonical image paths.
#pragma once

#include <string>
#include <string_view>

namespace d4c::oci_internal {

enum class PathProblem {
  kNone,
  kAbsolute,       // starts with '/'
  kDotDot,         // has a ".." component
  kTooLong,        // longer than kMaxPathBytes
  kLongComponent,  // a component longer than NAME_MAX (255)
};

// Normalizes a tar member name: "./a//b/" -> "a/b", "." or "./" -> "" (the
// root). Absolute names and ".." components are refused, never rewritten:
// a layer that contains them is either broken or hostile.
PathProblem NormalizeLayerPath(std::string_view raw, std::string* out);

// Human text for a problem, e.g. "escapes the image root".
const char* PathProblemText(PathProblem p);

}  // namespace d4c::oci_internal
