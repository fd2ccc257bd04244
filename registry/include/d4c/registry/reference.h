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

// "HOST[:PORT]/NAME:TAG" -> {"HOST[:PORT]", "NAME:TAG"}; a reference without
// a registry part -> {"", ref}. The first component names a registry when
// it has a '.' or ':', is "localhost" or has an upper-case letter (the rule of
// containerd's reference parser, as ParseImageReference below).
struct HostAndRest {
  std::string host;
  std::string rest;
};
HostAndRest SplitRegistryHost(const std::string& ref);
bool IsValidTag(const std::string& tag);

}  // namespace d4c::registry

namespace d4c::registry {

// An image reference as containerd and docker spell it
// ([DOMAIN/]PATH[:TAG][@DIGEST], the grammar of distribution/reference),
// normalized as `ctr` does (containerd's ParseDockerRef): no domain means
// docker.io, a one-component path on docker.io gets library/, no tag and no
// digest means :latest, a tag next to a digest is dropped.
struct ImageReference {
  std::string domain;  // "docker.io", "localhost:5000", "reg.example"
  std::string path;    // "library/app", "team/app"
  std::string tag;     // empty when there is a digest
  std::string digest;  // "sha256:<64 hex>" or empty

  std::string Name() const { return domain + "/" + path; }
  // The normalized reference: DOMAIN/PATH:TAG or DOMAIN/PATH@DIGEST.
  std::string String() const { return Name() + (digest.empty() ? ":" + tag : "@" + digest); }
};

// InvalidArgument saying what is wrong with `ref` (which character, which part).
absl::StatusOr<ImageReference> ParseImageReference(const std::string& ref);
// ParseImageReference(ref)->String(): "app:1" -> "docker.io/library/app:1".
absl::StatusOr<std::string> NormalizeImageName(const std::string& ref);

}  // namespace d4c::registry
