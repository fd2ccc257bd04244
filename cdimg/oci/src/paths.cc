#include "paths.h"

#include "d4c/entry.h"

namespace d4c::oci_internal {

PathProblem NormalizeLayerPath(std::string_view raw, std::string* out) {
  out->clear();
  if (!raw.empty() && raw[0] == '/') return PathProblem::kAbsolute;
  if (raw.size() > kMaxPathBytes) return PathProblem::kTooLong;
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string_view::npos) slash = raw.size();
    std::string_view comp = raw.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return PathProblem::kDotDot;
    if (comp.size() > 255) return PathProblem::kLongComponent;
    if (!out->empty()) out->push_back('/');
    out->append(comp);
  }
  return PathProblem::kNone;
}

const char* PathProblemText(PathProblem p) {
  switch (p) {
    case PathProblem::kNone:
      return "is fine";
    case PathProblem::kAbsolute:
    case PathProblem::kDotDot:
      return "escapes the image root";
    case PathProblem::kTooLong:
      return "is longer than 4096 bytes";
    case PathProblem::kLongComponent:
      return "has a name component longer than 255 bytes";
  }
  return "is invalid";
}

}  // namespace d4c::oci_internal
