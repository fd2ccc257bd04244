// Image mounts: one read-only mount per image, shared by every snapshot on top
// of that image. The snapshotter uses them through ImageMounter; production is
// Di3fsMounter (a di3fs FUSE daemon per image), tests use fakes.
//
// Di3fsMounter mounts at ROOT/mnt/<image-id-hex> (layout.h). di3fs runs
// detached (own session, stdout/stderr to ROOT/log/di3fs-<id>.log, pid in
// ROOT/run/<id>.pid) so that it outlives the snapshotter: overlay mounts of
// running containers keep their lower dir across a snapshotter restart or
// crash. A restarted snapshotter adopts live mounts and replaces dead ones
// (ENOTCONN). Its system calls go through MountSystem (tests: a fake).
//
// Takeover: for each live mount the mounter holds a copy of the daemon's
// /dev/fuse descriptor (pidfd_getfd), so a killed daemon does not end the
// FUSE connection; Reap (every 500 ms) and Ensure start a replacement
// (`di3fs --takeover-fd 3`, the copy inherited as fd 3) that serves the same
// connection, and the kernel replays the requests the dead one had read
// (FUSE_NOTIFY_RESEND, Linux 6.9). On a kernel without it nothing is held and
// a dead mount is detached and mounted again, as before.
//
// Descriptor store (fdstore.h): each held copy is also sent to the service
// manager or the --supervise parent (FDSTORE=1, FDNAME=fuse-<id>; removed
// when the mount goes away), and given back to the next snapshotter
// (Options::passed). Recover then holds the passed copy: kept as is when the
// daemon lives, or handed to a replacement (command line from
// ROOT/run/<id>.argv) when it died together with the snapshotter.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/snap/fdstore.h"

namespace d4c::snap {

struct MountState {
  bool mounted = false;  // a mount exists at the mountpoint
  bool alive = false;    // and answers (not ENOTCONN)
  std::string fstype;
};

// Mount table of this process (/proc/self/mountinfo): mountpoint -> fstype.
std::map<std::string, std::string> ReadMountTable();
MountState ProbeMount(const std::string& mountpoint);

// What the snapshotter needs of image mounts. Thread-safe: any method may be
// called from several gRPC threads at once.
class ImageMounter {
 public:
  virtual ~ImageMounter() = default;
  // Where image `id_hex` is (or will be) mounted.
  virtual std::string MountPoint(const std::string& id_hex) const = 0;
  // Mounts `chain` (store paths, top first) at the image's mountpoint unless a
  // live mount is already there; a dead one is detached first.
  virtual absl::Status Ensure(const std::string& id_hex, const std::vector<std::string>& chain) = 0;
  // Unmounts image `id_hex` and removes its mountpoint.
  virtual absl::Status Unmount(const std::string& id_hex) = 0;
  // At startup: detaches dead mounts of images in `keep` (mounted again on
  // demand), adopts their live ones, unmounts images not in `keep`.
  virtual void Recover(const std::vector<std::string>& keep) = 0;
  // Unmounts and deletes every trace (mount, pid file, cache) of the images
  // not in `keep`. The first failure is returned, the rest still tried.
  virtual absl::Status Prune(const std::vector<std::string>& keep) = 0;
  // Reaps exited mount daemons (called periodically).
  virtual void Reap() {}
};

// The system calls Di3fsMounter makes.
class MountSystem {
 public:
  virtual ~MountSystem() = default;
  virtual MountState Probe(const std::string& mountpoint) = 0;
  // A mount exists at `mountpoint` (the mount table only: never asks the
  // daemon, so it does not block on a held connection without one).
  virtual bool Mounted(const std::string& mountpoint) { return Probe(mountpoint).mounted; }
  // umount2(MNT_DETACH).
  virtual absl::Status Detach(const std::string& mountpoint) = 0;
  // Starts argv in its own session, stdin /dev/null, stdout+stderr appended
  // to `log`. Returns the pid.
  // `pass_fd` >= 0: inherited by the child as its descriptor 3.
  virtual absl::StatusOr<int> Spawn(const std::vector<std::string>& argv, const std::string& log,
                                    int pass_fd = -1) = 0;
  // waitpid(WNOHANG) on a child: true (and its status) once it exited.
  virtual bool Exited(int pid, int* status) = 0;
  // Blocking waitpid on a child that was killed.
  virtual void Wait(int pid) = 0;
  virtual void Kill(int pid, int sig) = 0;
  // `pid` is a live (not zombie) di3fs whose command line names `mountpoint`.
  virtual bool IsDi3fs(int pid, const std::string& mountpoint) = 0;
  virtual void SleepMs(int ms) = 0;
  // A copy of the /dev/fuse descriptor of di3fs `pid` (pidfd_getfd), checked
  // to accept FUSE_NOTIFY_RESEND; an error when that cannot be had (old
  // kernel, the daemon gone, a daemon reading through several descriptors).
  virtual absl::StatusOr<int> HoldFuseFd(int pid) = 0;
  virtual void Close(int fd) = 0;
  // The command line of `pid` (empty if gone).
  virtual std::vector<std::string> CmdLine(int pid) = 0;
};
std::unique_ptr<MountSystem> RealMountSystem();

class Di3fsMounter final : public ImageMounter {
 public:
  struct Options {
    std::string root;          // ROOT
    std::string di3fs = "di3fs";
    uint64_t cache_size = 2ull << 30;
    int mount_timeout_sec = 60;
    // Where held copies are stored (nullptr or disabled: nowhere).
    std::shared_ptr<const Notifier> fdstore = nullptr;
    // Copies given back by the store (image id hex -> descriptor); owned by
    // the mounter from construction (Recover holds or closes them).
    std::map<std::string, int> passed = {};
  };
  // `sys`: nullptr = RealMountSystem().
  explicit Di3fsMounter(Options o, std::unique_ptr<MountSystem> sys = nullptr);
  // Closes the held descriptors; the daemons keep serving (their own copy).
  ~Di3fsMounter() override;

  std::string MountPoint(const std::string& id_hex) const override;
  absl::Status Ensure(const std::string& id_hex, const std::vector<std::string>& chain) override;
  // Stops di3fs (SIGTERM, then detach + SIGKILL) and removes the mountpoint.
  absl::Status Unmount(const std::string& id_hex) override;
  void Recover(const std::vector<std::string>& keep) override;
  absl::Status Prune(const std::vector<std::string>& keep) override;
  // Reaps exited daemons and replaces the dead ones whose connection is held.
  void Reap() override;
  // Image ids that have a mountpoint directory or a pid file.
  std::vector<std::string> Known() const;
  // The mounts whose /dev/fuse descriptor is held (tests).
  size_t HeldCount();

 private:
  // A held connection: the descriptor copy, the daemon serving it, and its
  // command line (a replacement runs it with --takeover-fd 3).
  struct Held {
    int fd = -1;
    int pid = 0;
    std::vector<std::string> argv;
    int failures = 0;  // replacements in a row that exited at once
  };
  std::mutex& LockFor(const std::string& id_hex);
  int ReadPid(const std::string& id_hex) const;
  void WritePid(const std::string& id_hex, int pid);
  void ReapChildren();
  // Starts holding the connection of daemon `pid` at image `id_hex`'s mount.
  // Caller holds LockFor(id_hex).
  void Hold(const std::string& id_hex, int pid, std::vector<std::string> argv);
  // If the image's connection is held and its daemon is dead: starts a
  // replacement (false: none could be started; the connection was let go).
  // Caller holds LockFor(id_hex).
  bool ReplaceIfDead(const std::string& id_hex);
  // Stops holding (closes the copy, removes it from the store). Caller holds
  // LockFor(id_hex).
  void Release(const std::string& id_hex);
  // Recover's first step: holds the passed copies of mounted images (and
  // replaces their daemons if dead), closes the others.
  void AdoptPassed();
  // Store calls; failures are logged (once per kind), never fatal.
  void Store(const std::string& id_hex, int fd);
  void Unstore(const std::string& id_hex);
  Options o_;
  std::unique_ptr<MountSystem> sys_;
  // Lock order: a per-image lock (LockFor) before mu_; mu_ is never held
  // while waiting for a mount.
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> locks_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::string> children_ ABSL_GUARDED_BY(mu_);  // pid -> image id (our own children)
  std::map<std::string, Held> held_ ABSL_GUARDED_BY(mu_);     // image id -> held connection
  bool warned_no_hold_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> warned_store_{false};
};

}  // namespace d4c::snap
