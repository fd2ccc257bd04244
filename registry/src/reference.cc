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

namespace d4c::registry {
namespace {

bool IsDomain(const std::string& d) {
  static const std::regex re(
      "((?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
      "|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?");
  return std::regex_match(d, re);
}

bool IsDigest(const std::string& d) {
  static const std::regex sha256("sha256:[a-f0-9]{64}");
  static const std::regex other("[a-zA-Z][a-zA-Z0-9]*(?:[-_+.][a-zA-Z][a-zA-Z0-9]*)*:[a-fA-F0-9]{32,}");
  if (d.starts_with("sha256:")) return std::regex_match(d, sha256);
  return std::regex_match(d, other);
}

absl::Status BadRef(const std::string& ref, const std::string& why) {
  return absl::InvalidArgumentError(StrCat("'", ref, "' is not a valid image name: ", why,
                                           " (expected [HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST], e.g. docker.io/library/app:1)"));
}

// Why `path` is not a repository path.
std::string PathProblem(const std::string& path) {
  bool upper = false;
  std::string bad;
  for (char c : path) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 'A' && u <= 'Z') upper = true;
    else if (!((u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || c == '.' || c == '_' || c == '-' || c == '/') && bad.empty())
      bad = u == ' ' ? "a space" : StrCat("'", std::string(1, c), "'");
  }
  std::string what = StrCat("the repository path '", path, "'");
  if (upper && !bad.empty()) return StrCat(what, " must be lower case and contains ", bad, " (allowed: a-z 0-9 . _ - /)");
  if (upper) return StrCat(what, " must be lower case");
  if (!bad.empty()) return StrCat(what, " contains ", bad, " (allowed: a-z 0-9 . _ - /)");
  if (path.empty()) return "the repository path is empty";
  return StrCat(what, " has an empty component, or a separator (. _ -) at the start or end of a component");
}

// The first component of a reference names a registry (containerd's rule).
bool NamesRegistry(const std::string& first) {
  bool lower = true;
  for (char c : first) lower = lower && !(c >= 'A' && c <= 'Z');
  return first.find_first_of(".:") != std::string::npos || first == "localhost" || !lower;
}

}  // namespace

absl::StatusOr<ImageReference> ParseImageReference(const std::string& ref) {
  if (ref.empty()) return BadRef(ref, "it is empty");
  ImageReference r;
  std::string rest = ref;
  if (auto at = rest.find('@'); at != std::string::npos) {
    r.digest = rest.substr(at + 1);
    rest.resize(at);
    if (!IsDigest(r.digest)) return BadRef(ref, StrCat("'", r.digest, "' is not a digest (sha256:<64 lower-case hex>)"));
  }
  if (auto colon = rest.rfind(':'); colon != std::string::npos && (rest.rfind('/') == std::string::npos || colon > rest.rfind('/'))) {
    r.tag = rest.substr(colon + 1);
    rest.resize(colon);
    if (!IsValidTag(r.tag))
      return BadRef(ref, StrCat("the tag '", r.tag, "' is not valid (letters, digits, _ . -, at most 128, not starting with . or -)"));
  }
  if (rest.empty()) return BadRef(ref, "no repository name");
  auto slash = rest.find('/');
  std::string first = rest.substr(0, slash);
  if (slash == std::string::npos || !NamesRegistry(first)) {
    r.domain = "docker.io";
    r.path = rest;
  } else {
    r.domain = first;
    r.path = rest.substr(slash + 1);
    if (!IsDomain(r.domain)) return BadRef(ref, StrCat("'", r.domain, "' is not a registry host (HOST[:PORT])"));
  }
  if (r.path.empty() || !IsValidRepository(r.path)) return BadRef(ref, PathProblem(r.path));
  if (r.domain == "index.docker.io") r.domain = "docker.io";
  if (r.domain == "docker.io" && r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  if (r.Name().size() > 255) return BadRef(ref, StrCat("the name is ", r.Name().size(), " characters; at most 255"));
  if (!r.digest.empty()) r.tag.clear();  // as ParseDockerRef: the digest names the image
  else if (r.tag.empty()) r.tag = "latest";
  return r;
}

HostAndRest SplitRegistryHost(const std::string& ref) {
  size_t slash = ref.find('/');
  if (slash == std::string::npos || !NamesRegistry(ref.substr(0, slash))) return {"", ref};
  return {ref.substr(0, slash), ref.substr(slash + 1)};
}

absl::StatusOr<std::string> NormalizeImageName(const std::string& ref) {
  auto r = ParseImageReference(ref);
  if (!r.ok()) return r.status();
  return r->String();
}

}  // namespace d4c::registry
