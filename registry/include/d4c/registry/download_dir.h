// The download directory of a pull: `<blob digest hex>.cdimg.partial` files
// being downloaded (resumed by the next pull) and `<hex>.cdimg` files
// complete but not yet handed over. What a pull leaves there is bounded in
// age and bytes: PruneDownloadDir runs before each pull's downloads.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace d4c::registry {

struct DownloadDirLimits {
  uint64_t max_bytes = 4ull << 30;                          // all files together
  std::chrono::seconds max_age = std::chrono::hours(24 * 7);  // since last written
};

// Deletes the download files in `dir` (names as above; nothing else is
// touched) older than limits.max_age, then the least recently written ones
// until the rest fit in limits.max_bytes. Files named in `keep` (those the
// pull about to run resumes) are never deleted. Returns the names deleted.
std::vector<std::string> PruneDownloadDir(const std::string& dir, const DownloadDirLimits& limits,
                                          const std::set<std::string>& keep);

}  // namespace d4c::registry
