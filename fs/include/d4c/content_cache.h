// ContentCache: a bounded on-disk cache of rebuilt file contents, keyed by
// content digest (sha256). One file per content, named by its hex digest,
// written under a temporary name and renamed into place, so the directory can
// be shared by several mounts (and processes) and survives restarts.
//
// Concurrent requests for one digest run the producer once; the others wait
// for it. Above `max_bytes` the least recently used files are deleted (files
// still open keep working: their bytes stay reachable through the open fd).
// A file found on disk that this process did not write (an earlier run, a
// concurrent mount) is checked against its digest before its first use, since
// cache files are not fsynced.
//
// Thread-safety: internally synchronized; every method may be called from any
// thread (di3fs's FUSE threads). One lock guards the index; it is released
// while files are opened, hashed or produced, and held while on_evict runs,
// so the lock order is: the cache's lock, then any lock on_evict takes (in
// di3fs, its descriptor table's).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "d4c/entry.h"

namespace d4c {

class ContentCache {
 public:
  struct Options {
    std::string dir;           // created if missing
    uint64_t max_bytes = 2ull << 30;
    // Called (with the cache's lock held: it must not call back into the
    // cache) whenever a content leaves the index: evicted, found damaged or
    // replaced. Lets users drop descriptors they keep, so that deleted files
    // do not stay allocated on disk.
    std::function<void(const Digest&)> on_evict;
  };
  struct Stats {
    uint64_t hits = 0;       // served from a file already in the cache
    uint64_t builds = 0;     // producer runs that succeeded
    uint64_t failures = 0;   // producer runs that failed
    uint64_t evictions = 0;  // files deleted to stay under max_bytes
    uint64_t rejected = 0;   // files on disk with the wrong size or digest
    uint64_t bytes = 0;      // bytes of files currently indexed
    uint64_t files = 0;
  };
  // Produces the content of a digest (verified by the caller's means).
  using Producer = std::function<absl::StatusOr<std::string>()>;

  // Scans `dir`: existing content files are indexed (oldest first in LRU
  // order), stale temporary files of dead processes are deleted, and the
  // index is trimmed to max_bytes.
  static absl::StatusOr<std::unique_ptr<ContentCache>> Open(Options options);
  ~ContentCache();

  // A read-only file descriptor positioned anywhere (use pread) holding the
  // `size` bytes of content `digest`; the caller closes it. Runs `produce` if
  // the content is not cached (at most once at a time per digest); a producer
  // error is returned to every waiter. The produced bytes must have `size`
  // bytes; the cache does not hash them again.
  absl::StatusOr<int> OpenContent(const Digest& digest, uint64_t size, const Producer& produce);

  // Whether a content file is currently indexed.
  bool Contains(const Digest& digest) const;
  Stats stats() const;
  const std::string& dir() const;
  uint64_t max_bytes() const;

 private:
  ContentCache();
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace d4c
