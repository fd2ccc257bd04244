// NAME:TAG references as the OCI distribution spec spells them.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace d4c::registry {

struct NameTag {
  std::string name;  // repository, e.g. "team/app"
  std::string tag;
};

// "NAME:TAG" (TAG required unless `default_tag` is given). Checks the
// repository-name and tag grammar of the distribution spec.
absl::StatusOr<NameTag> ParseNameTag(const std::string& ref, const std::string& default_tag = "");
bool IsValidRepository(const std::string& name);
bool IsValidTag(const std::string& tag);

}  // namespace d4c::registry
