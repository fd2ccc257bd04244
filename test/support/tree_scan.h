// Test support: read a directory on disk into the image model (the same
// canonical form SquashLayers produces) and compare two trees entry by entry.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/entry.h"

namespace d4c::testing {

// lstat/readlink/llistxattr/sha256 walk of `root`; hardlink groups (same
// inode, nlink > 1) become one primary (smallest path) plus kHardlink entries.
absl::StatusOr<std::vector<Entry>> ScanTree(const std::string& root);

// Human-readable differences, one line each ("path: field a=... b=..."),
// at most `limit` lines. Empty when the trees are identical.
std::vector<std::string> DiffTrees(const std::vector<Entry>& a, const std::vector<Entry>& b,
                                   size_t limit = 50);

}  // namespace d4c::testing
