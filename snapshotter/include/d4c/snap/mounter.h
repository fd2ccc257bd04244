// Di3fsMounter: one di3fs FUSE mount per image, at ROOT/mnt/<image-id-hex>,
// shared by every snapshot on top of that image. di3fs runs detached (own
// session, stdout/stderr to ROOT/log/di3fs-<id>.log, pid in ROOT/run/<id>.pid)
// so that it outlives the snapshotter: overlay mounts of running containers
// keep their lower dir across a snapshotter restart or crash. A restarted
// snapshotter adopts live mounts and replaces dead ones (ENOTCONN).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c::snap {

struct MountState {
  bool mounted = false;  // a mount exists at the mountpoint
  bool alive = false;    // and answers (not ENOTCONN)
  std::string fstype;
};

// Mount table of this process (/proc/self/mountinfo): mountpoint -> fstype.
std::map<std::string, std::string> ReadMountTable();
MountState ProbeMount(const std::string& mountpoint);

class Di3fsMounter {
 public:
  struct Options {
    std::string root;          // ROOT
    std::string di3fs = "di3fs";
    uint64_t cache_size = 2ull << 30;
    int mount_timeout_sec = 60;
  };
  explicit Di3fsMounter(Options o);

  std::string MountPoint(const std::string& id_hex) const;
  // Mounts `chain` (top first) at the image's mountpoint unless a live mount
  // is already there; a dead one is detached first.
  absl::Status Ensure(const std::string& id_hex, const std::vector<std::string>& chain);
  // Stops di3fs (SIGTERM, then detach + SIGKILL) and removes the mountpoint.
  absl::Status Unmount(const std::string& id_hex);
  // Image ids that have a mountpoint directory or a pid file.
  std::vector<std::string> Known() const;
  // Detaches dead mounts, and unmounts mounts of images not in `keep`.
  void Recover(const std::vector<std::string>& keep);
  // Reaps exited di3fs children (call periodically).
  void Reap();

 private:
  std::mutex& LockFor(const std::string& id_hex);
  Options o_;
  std::mutex mu_;  // guards locks_ and children_
  std::map<std::string, std::unique_ptr<std::mutex>> locks_;
  std::map<int, std::string> children_;  // pid -> image id (our own children)
};

}  // namespace d4c::snap
