// OpenImageSource: parses an image reference and opens the matching reader.
#include <exception>

#include "d4c/oci.h"
#include "d4c/base/strcat.h"
#include "sources.h"
#include "util.h"

namespace d4c {
namespace {

// "PATH[:REST]" split at the first ':' as skopeo does (so PATH cannot
// contain ':'; REST may, e.g. "name:tag").
std::pair<std::string, std::optional<std::string>> SplitRef(std::string_view rest) {
  size_t colon = rest.find(':');
  if (colon == std::string_view::npos) return {std::string(rest), std::nullopt};
  return {std::string(rest.substr(0, colon)), std::string(rest.substr(colon + 1))};
}

absl::StatusOr<std::unique_ptr<ImageSource>> Open(std::string_view ref) {
  std::string r(ref);
  for (std::string_view scheme : {"oci:", "docker-archive:"}) {
    if (!ref.starts_with(scheme)) continue;
    auto [path, sel] = SplitRef(ref.substr(scheme.size()));
    if (path.empty() || (sel && sel->empty()))
      return absl::InvalidArgumentError(
          StrCat("image reference ", oci_internal::Quote(ref), ": empty path or tag"));
    if (scheme == "oci:") return oci_internal::OpenOciLayout(r, path, sel);
    return oci_internal::OpenDockerArchive(r, path, sel);
  }
  return absl::InvalidArgumentError(StrCat("unsupported image reference ", oci_internal::Quote(ref),
                                           " (want oci:DIR[:TAG] or docker-archive:TAR[:NAME:TAG])"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageSource>> OpenImageSource(std::string_view ref) {
  // JSON accessors are used in their non-throwing forms; this is the
  // backstop so no exception can ever escape the library.
  try {
    return Open(ref);
  } catch (const std::exception& e) {
    return absl::InternalError(StrCat(ref, ": unexpected error: ", e.what()));
  }
}

}  // namespace d4c
