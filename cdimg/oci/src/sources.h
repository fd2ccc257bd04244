// The concrete ImageSource readers behind OpenImageSource.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "d4c/oci.h"

namespace d4c::oci_internal {

// OCI image layout directory; `tag` selects by org.opencontainers.image.ref.name.
absl::StatusOr<std::unique_ptr<ImageSource>> OpenOciLayout(const std::string& ref, const std::string& dir,
                                                           const std::optional<std::string>& tag);

// docker save / skopeo archive; `image` is a RepoTags reference or "@N".
absl::StatusOr<std::unique_ptr<ImageSource>> OpenDockerArchive(const std::string& ref, const std::string& path,
                                                               const std::optional<std::string>& image);

}  // namespace d4c::oci_internal
