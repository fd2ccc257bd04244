// ContentCache: a bounded on-disk cache of rebuilt file contents, keyed by
// content digest (sha256). One file per content, named by its hex digest,
// written under a temporary name and renamed into place; it survives restarts.
//
// One budget for many caches (node-wide). Caches may share a ROOT directory:
// each cache writes into its own `dir` (ROOT itself or a subdirectory of it,
// e.g. one per image), and all of them together stay within the budget in
// ROOT/.budget (d4c/cache_budget.h), evicting the least recently used files
// of any cache under ROOT. The caches may live in different processes (one
// di3fs daemon per image); they coordinate through files in ROOT:
//   .lock    flock()ed (exclusive) by whoever admits or evicts a file;
//   .ledger  bytes of every content file and reserved temporary file under
//            ROOT, as decimal text; exact after every scan, otherwise an
//            over-estimate (a crash can only leave it too high);
//   .budget  the budget, re-read at each admission and every second.
// Last use is the file's mtime: set when written, and bumped (futimens) on a
// hit and by Touch() while it is read, so LRU order is shared by everyone.
// A cache hit takes no global lock: it opens the file and sets its mtime.
//
// The bound. Bytes are reserved in the ledger, under the lock, before a
// temporary file is written, and a reservation that does not fit makes the
// least recently used files go first. So, at every moment,
//   (content files + temporary files under ROOT) <= budget
// except (1) for at most ~1 s after the budget is lowered (the next sweep
// evicts down to it) and (2) files deleted or added under ROOT by someone
// else. The bytes being rebuilt are in memory (the producer's result), not
// on disk. Disk blocks of an evicted file that a reader still holds open
// stay allocated until it closes it: readers keep correct bytes (the
// unlinked file), and di3fs closes such descriptors within ~1 s (Touch) or
// after `idle` seconds without reads.
//
// No rebuild storm. Concurrent requests for one digest in one process run
// the producer once (single flight). A file used (written, hit or Touched)
// in the last `pin_seconds` is not evicted to make room for another one;
// when the budget is full of such files, or a content is larger than the
// whole budget, the content is served uncached: from an anonymous memory
// file (memfd) that lives as long as its descriptors (stats().uncached).
// Lowering the budget evicts pinned files too.
//
// A file found on disk that this process did not write (an earlier run,
// another daemon) is checked against its digest before its first use, since
// cache files are not fsynced.
//
// Thread-safety: internally synchronized; every method may be called from any
// thread (di3fs's FUSE threads). Locks: the cache's own mutex guards its
// in-process maps and is never held across file I/O or a producer run; the
// flock of ROOT/.lock is taken with no mutex held and held across scans,
// unlinks and the on_evict callback. Lock order: ROOT/.lock -> any lock
// on_evict takes (di3fs's descriptor table); the cache's mutex is a leaf.
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
    std::string dir;   // this cache's files; created if missing
    std::string root;  // shared budget root: dir or an ancestor of it; empty = dir
    // Written to ROOT/.budget at Open (the newest opener sets the node's
    // budget); 0 keeps the budget file as it is (2 GiB if there is none).
    uint64_t max_bytes = 2ull << 30;
    // Files used this recently are not evicted to admit another file.
    double pin_seconds = 10;
    // Re-read the budget (and call on_tick) every this many seconds from a
    // background thread; 0: no thread (tests call Sweep()).
    double sweep_seconds = 1;
    // Called with ROOT/.lock held (it must not call back into the cache)
    // whenever a file of this cache's `dir` is deleted: evicted or found
    // damaged. Lets users drop descriptors they keep, so that deleted
    // files do not stay allocated on disk.
    std::function<void(const Digest&)> on_evict;
    // Called by the sweep thread after each sweep, with no lock held.
    std::function<void()> on_tick;
  };
  struct Stats {
    uint64_t hits = 0;       // served from a file already in the cache
    uint64_t builds = 0;     // producer runs that succeeded
    uint64_t failures = 0;   // producer runs that failed
    uint64_t uncached = 0;   // built contents served from memory (no room, or bigger than the budget)
    uint64_t evictions = 0;  // files this process deleted to stay within the budget
    uint64_t rejected = 0;   // files on disk with the wrong size or digest
    uint64_t scans = 0;      // scans of ROOT (when a reservation did not fit)
    uint64_t bytes = 0;      // bytes of content and temporary files under ROOT (scanned)
    uint64_t files = 0;      // content files in this cache's dir (scanned)
    uint64_t budget = 0;     // the budget in force
  };
  // Produces the content of a digest (verified by the caller's means).
  using Producer = std::function<absl::StatusOr<std::string>()>;

  // Creates dir and ROOT, deletes stale temporary files of dead processes,
  // writes the budget (max_bytes) and trims everything under ROOT to it.
  static absl::StatusOr<std::unique_ptr<ContentCache>> Open(Options options);
  ~ContentCache();

  // A read-only file descriptor (use pread) holding the `size` bytes of
  // content `digest`; the caller closes it. Runs `produce` if the content is
  // not cached (at most once at a time per digest in this process); a
  // producer error is returned to every waiter. The produced bytes must have
  // `size` bytes; the cache does not hash them again.
  absl::StatusOr<int> OpenContent(const Digest& digest, uint64_t size, const Producer& produce);

  // Marks the file behind `fd` (from OpenContent) used now, and says whether it
  // is worth keeping: false once it was evicted (nlink 0: holding it keeps
  // disk blocks outside the budget). An uncached (memory) content stays
  // true. Cheap: futimens + fstat, no lock.
  static bool Touch(int fd);

  // Re-reads the budget; if it changed or the bytes are above it, evicts
  // down to it (pinned files included). Runs every sweep_seconds.
  void Sweep();

  // Whether a content file of this cache's dir exists.
  bool Contains(const Digest& digest) const;
  Stats stats() const;  // scans ROOT: not for hot paths
  const std::string& dir() const;
  const std::string& root() const;
  uint64_t max_bytes() const;  // the budget in force

 private:
  ContentCache();
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace d4c
