// The node-wide budget file of a di3fs content cache root, shared by di3fs
// (which enforces it, content_cache.cc) and the snapshotter (which writes it
// at start so that daemons it adopted apply a new --cache-size). Header-only
// (target d4c_di3fs_args): the snapshotter does not link di3fs.
//
// ROOT/.budget holds the budget in bytes as decimal text and a newline. It is
// replaced atomically (temporary file + rename); every ContentCache under
// ROOT re-reads it within a second (docs/operations.md, "Content cache").
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "absl/status/status.h"

namespace d4c {

inline constexpr const char* kCacheBudgetFile = ".budget";

// Writes `bytes` as the budget of every cache under `root` (created if
// missing is the caller's job).
inline absl::Status WriteCacheBudget(const std::string& root, uint64_t bytes) {
  std::string path = root + "/" + kCacheBudgetFile;
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::string text = std::to_string(bytes) + "\n";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ok = close(fd) == 0 && ok;
  if (ok) ok = rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    unlink(tmp.c_str());
    return absl::InternalError("cannot write the cache budget " + path +
                               " (is the cache root writable by this user?)");
  }
  return absl::OkStatus();
}

// The budget under `root`, or `fallback` if the file is missing or unreadable.
inline uint64_t ReadCacheBudget(const std::string& root, uint64_t fallback) {
  std::string path = root + "/" + kCacheBudgetFile;
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return fallback;
  unsigned long long v = 0;
  bool ok = std::fscanf(f, "%llu", &v) == 1;
  std::fclose(f);
  return ok ? static_cast<uint64_t>(v) : fallback;
}

}  // namespace d4c
