// di3fs: a read-only FUSE filesystem serving the tree of a cdimg chain.
// Mounting reads only the indexes; a file's bytes are rebuilt (and verified
// against their sha256) the first time it is opened, kept in a ContentCache
// and read from there. A file that cannot be rebuilt gives an error for that
// file only: EIO, remembered for the life of the mount when the image's bytes
// are bad (DataLoss); for a transient failure (an I/O error: EIO; out of
// memory: ENOMEM) the next read tries again.
//
//   auto fs = Di3fs::Open(options);       // opens the chain and the cache
//   (*fs)->Mount("/mnt/x");               // the kernel mount
//   (*fs)->Serve();                       // multi-threaded loop, until unmounted or Stop()
//
// A daemon killed while another process holds a copy of its /dev/fuse
// descriptor leaves the connection alive: TakeOver starts serving it again.
//
// RunDi3fs does all three and turns SIGINT/SIGTERM/SIGHUP into a clean unmount.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c {

class ImageChain;
class ContentCache;
class FsTree;

struct Di3fsOptions {
  std::string cdimg;                // the top image
  std::vector<std::string> bases;   // its ancestors (any order; unused ones are ignored)
  // Content cache directory. Empty: a private directory under $TMPDIR (or
  // /var/tmp), deleted when the Di3fs object is destroyed.
  std::string cache_dir;
  // The budget root shared with other mounts (cache_dir or an ancestor of
  // it; empty: cache_dir): all caches under it stay within one budget, LRU
  // across them (d4c/content_cache.h).
  std::string cache_root;
  // The budget of everything under cache_root, written to its .budget file
  // at start (the newest daemon sets it; the snapshotter rewrites it when it
  // starts, for the daemons it adopts). 0: keep the file's.
  uint64_t cache_size = 2ull << 30;  // bytes
  // Extra mount options, as given to -o (e.g. "allow_other"). Always added:
  // ro, default_permissions, fsname=di3fs:<image id>, subtype=di3fs, and as
  // root suid,dev (libfuse defaults to nosuid,nodev); "nosuid", "nodev" here
  // win (the snapshotter passes them: docs/operations.md, "Mount options").
  std::vector<std::string> mount_options;
  double timeout_sec = 3600;  // kernel entry/attr cache lifetime (the image is immutable)
  unsigned max_idle_threads = 16;
  bool debug = false;  // libfuse's request trace on stderr
};

class Di3fs {
 public:
  static absl::StatusOr<std::unique_ptr<Di3fs>> Open(const Di3fsOptions& options);
  ~Di3fs();  // unmounts if still mounted

  absl::Status Mount(const std::string& mountpoint);
  // Instead of Mount: serves the connection of a daemon that died, on a copy
  // of its /dev/fuse descriptor (`fuse_fd`, now owned by this object; its
  // holder keeps another copy, which is what kept the connection alive). The
  // kernel initialised that connection with the first daemon, so libfuse is
  // given a replayed FUSE_INIT; then the kernel is asked to queue again the
  // requests the dead daemon had read but not answered (FUSE_NOTIFY_RESEND).
  // Inode numbers come from the index (FsTree::InodeOf) and files are opened
  // without file handles, so the kernel's inodes and open files stay valid.
  // Returns whether the kernel replayed (false: it is older than Linux 6.9,
  // and the requests the dead daemon held stay unanswered).
  absl::StatusOr<bool> TakeOver(const std::string& mountpoint, int fuse_fd);
  // Serves requests on several threads until the filesystem is unmounted
  // (umount, fusermount3 -u) or Stop() is called, then unmounts.
  absl::Status Serve();
  // Thread-safe; makes Serve() return: the mount is detached (lazily if busy).
  void Stop();

  // What is being served (statistics, tests).
  const ImageChain& chain() const;
  // For tests (ImageChain::SetReadFaultForTesting), before Mount only.
  ImageChain& mutable_chain();
  const FsTree& tree() const;
  const ContentCache& cache() const;
  // Time spent opening the chain and building the inode view.
  double open_ms() const;

  struct State;  // opaque; public only so that the FUSE handlers can name it

 private:
  friend absl::Status RunDi3fs(const Di3fsOptions& options, const std::string& mountpoint, int takeover_fd);
  Di3fs();
  std::unique_ptr<State> s_;
};

// Makes freed buffers go back to the kernel instead of staying resident in
// glibc's per-thread arenas (M_MMAP_THRESHOLD fixed at 128 KiB, M_ARENA_MAX
// 2), so that a daemon's memory after rebuilding files is what is live plus
// small leftovers, not the largest contents its FUSE workers ever held. Process-wide: RunDi3fs calls it
// before any worker starts; a process embedding Di3fs decides for itself.
// Does nothing (false) when GLIBC_TUNABLES names a glibc.malloc setting
// (the operator's choice wins) or the C library is not glibc.
bool BoundMallocRetention();

// Open + Mount (or TakeOver of `takeover_fd` when >= 0) + Serve with signal
// handling; logs one line when mounted.
absl::Status RunDi3fs(const Di3fsOptions& options, const std::string& mountpoint, int takeover_fd = -1);

}  // namespace d4c
