#include "d4c/registry/reference.h"

#include <regex>

#include "d4c/base/strcat.h"

namespace d4c::registry {

bool IsValidRepository(const std::string& name) {
  static const std::regex re("[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*");
  return name.size() <= 255 && std::regex_match(name, re);
}

bool IsValidTag(const std::string& tag) {
  static const std::regex re("[A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
  return std::regex_match(tag, re);
}

absl::StatusOr<NameTag> ParseNameTag(const std::string& ref, const std::string& default_tag) {
  NameTag nt;
  size_t colon = ref.rfind(':');
  size_t slash = ref.rfind('/');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    nt.name = ref.substr(0, colon);
    nt.tag = ref.substr(colon + 1);
  } else {
    nt.name = ref;
    nt.tag = default_tag;
  }
  if (nt.tag.empty()) return absl::InvalidArgumentError(StrCat("'", ref, "' needs a tag: NAME:TAG"));
  if (!IsValidRepository(nt.name))
    return absl::InvalidArgumentError(StrCat("'", nt.name, "' is not a repository name (lower-case letters, digits, . _ - and /)"));
  if (!IsValidTag(nt.tag)) return absl::InvalidArgumentError(StrCat("'", nt.tag, "' is not a valid tag"));
  return nt;
}

}  // namespace d4c::registry
