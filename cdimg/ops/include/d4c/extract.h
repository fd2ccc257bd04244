// extract: materialize the root filesystem of an image chain into a directory.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "d4c/chain.h"

namespace d4c {

struct ExtractOptions {
  int threads = 0;  // 0 = number of CPUs
};

struct ExtractStats {
  size_t entries = 0;
  uint64_t bytes = 0;
};

// `dir` must not exist or be an empty directory; anything else is refused
// (FailedPrecondition) and left untouched. Needs root (ownership, device
// nodes, security.* xattrs); fails up front with a clear message otherwise.
// A failed extraction leaves no partial tree: an absent `dir` is built as
// "<parent>/.<name>.extract-XXXXXX" and renamed to `dir` only when complete
// (the temporary directory is removed on failure); an empty `dir` is filled
// in place and, on failure, emptied again with its owner, mode and times put
// back. Error messages may name the temporary directory.
absl::StatusOr<ExtractStats> ExtractImage(const ImageChain& chain, const std::string& dir,
                                          const ExtractOptions& options);

}  // namespace d4c
