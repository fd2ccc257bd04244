// Fakes for the snapshotter's seams: ImageMounter (the snapshotter's mounts),
// MountSystem (Di3fsMounter's system calls) and ContainerdApi (LoadImage's
// containerd, routed to a real Snapshotter as containerd's proxy would).
// No FUSE, no processes, no containerd.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <signal.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "d4c/base/sha256.h"
#include "d4c/cdimg.h"
#include "d4c/convert.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/mounter.h"
#include "d4c/snap/snapshotter.h"
#include "d4c/base/strcat.h"

namespace d4c::snap::testing {

// Image mounts as a set; every call is logged as "<op> <id>".
class FakeMounter final : public ImageMounter {
 public:
  explicit FakeMounter(std::string root) : root_(std::move(root)) {}
  std::string MountPoint(const std::string& id) const override { return layout::MountPoint(root_, id); }
  absl::Status Ensure(const std::string& id, const std::vector<std::string>& chain) override {
    std::lock_guard<std::mutex> g(mu_);
    calls.push_back("ensure " + id);
    if (!fail_ensure.empty()) return absl::InternalError(fail_ensure);
    if (!mounted.count(id)) chains[id] = chain;
    mounted.insert(id);
    return absl::OkStatus();
  }
  absl::Status Unmount(const std::string& id) override {
    std::lock_guard<std::mutex> g(mu_);
    calls.push_back("unmount " + id);
    mounted.erase(id);
    return absl::OkStatus();
  }
  void Recover(const std::vector<std::string>& keep) override {
    std::lock_guard<std::mutex> g(mu_);
    calls.push_back("recover " + std::to_string(keep.size()));
    recovered_keep = keep;
  }
  absl::Status Prune(const std::vector<std::string>& keep) override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = mounted.begin(); it != mounted.end();) {
      if (std::find(keep.begin(), keep.end(), *it) == keep.end()) {
        calls.push_back("prune " + *it);
        it = mounted.erase(it);
      } else {
        ++it;
      }
    }
    return absl::OkStatus();
  }

  std::string root_;
  std::mutex mu_;
  std::set<std::string> mounted;
  std::map<std::string, std::vector<std::string>> chains;
  std::vector<std::string> calls;
  std::vector<std::string> recovered_keep;
  std::string fail_ensure;
};

// Mount table and processes in memory. Spawn "starts" a di3fs that mounts at
// argv's last element (alive) unless spawn_mounts is false.
class FakeMountSystem final : public MountSystem {
 public:
  MountState Probe(const std::string& mp) override {
    auto it = mounts.find(mp);
    return it == mounts.end() ? MountState{} : it->second;
  }
  absl::Status Detach(const std::string& mp) override {
    log.push_back("detach " + mp);
    mounts.erase(mp);
    return absl::OkStatus();
  }
  absl::StatusOr<int> Spawn(const std::vector<std::string>& argv, const std::string& logfile,
                            int pass_fd) override {
    spawned.push_back(argv);
    passed_fds.push_back(pass_fd);
    log.push_back("spawn " + argv.back());
    int pid = next_pid++;
    (void)logfile;
    if (spawn_exits) {  // e.g. a bad cdimg: di3fs exits before mounting
      exited.insert(pid);
      return pid;
    }
    procs[pid] = argv.back();
    if (spawn_mounts) mounts[argv.back()] = MountState{true, true, "fuse.di3fs"};
    return pid;
  }
  bool Exited(int pid, int* status) override {
    if (procs.count(pid)) return false;
    *status = 0;
    return exited.erase(pid) > 0;
  }
  void Wait(int pid) override { procs.erase(pid); }
  void Kill(int pid, int sig) override {
    log.push_back(StrCat("kill ", pid, " ", sig));
    auto it = procs.find(pid);
    if (it == procs.end()) return;
    mounts.erase(it->second);  // di3fs unmounts on SIGTERM
    procs.erase(it);
    exited.insert(pid);
  }
  bool IsDi3fs(int pid, const std::string& mp) override {
    auto it = procs.find(pid);
    return it != procs.end() && it->second == mp;
  }
  void SleepMs(int) override {}
  // With hold_fds: descriptor 100 + pid for a live "di3fs"; else refused as
  // by a kernel without FUSE_NOTIFY_RESEND.
  absl::StatusOr<int> HoldFuseFd(int pid) override {
    if (!hold_fds) return absl::UnimplementedError("the kernel refused FUSE_NOTIFY_RESEND");
    if (!procs.count(pid)) return absl::NotFoundError("no such process");
    if (real_fds) {  // a real descriptor (a /dev/null copy): it can be sent to a descriptor store
      int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      open_fds.insert(fd);
      return fd;
    }
    open_fds.insert(100 + pid);
    return 100 + pid;
  }
  void Close(int fd) override {
    log.push_back(StrCat("close ", fd));
    if (real_fds) close(fd);
    open_fds.erase(fd);
  }
  bool Mounted(const std::string& mp) override { return mounts.count(mp) > 0; }
  std::vector<std::string> CmdLine(int pid) override {
    auto it = cmdlines.find(pid);
    return it == cmdlines.end() ? std::vector<std::string>{} : it->second;
  }
  // A kill -9: the process is gone; with its connection held the mount stays.
  void Crash(int pid) {
    procs.erase(pid);
    exited.insert(pid);
  }

  std::map<std::string, MountState> mounts;
  std::map<int, std::string> procs;  // live "di3fs" pid -> mountpoint
  std::set<int> exited;
  std::vector<std::vector<std::string>> spawned;
  std::vector<std::string> log;
  int next_pid = 1000;
  bool spawn_mounts = true;
  bool spawn_exits = false;
  bool hold_fds = false;
  bool real_fds = false;  // HoldFuseFd opens, Close closes real descriptors
  std::set<int> open_fds;                         // held descriptors not closed
  std::vector<int> passed_fds;                    // Spawn's pass_fd, per spawn
  std::map<int, std::vector<std::string>> cmdlines;  // pid -> argv (adopted daemons)
};

// containerd with one proxy snapshotter: snapshot calls go to `sn` (with
// containerd's label filtering); content and images are kept in maps.
class FakeContainerd final : public ContainerdApi {
 public:
  FakeContainerd(std::string snapshotter_name, Snapshotter* sn) : name_(std::move(snapshotter_name)), sn_(sn) {}
  const std::string& address() const override { return address_; }
  void set_lease(std::string id) override { lease = std::move(id); }
  absl::StatusOr<std::string> CreateLease(int, const std::map<std::string, std::string>& labels) override {
    std::string id = StrCat("lease-", ++lease_count);
    leases.insert(id);
    lease_labels[id] = labels;
    return id;
  }
  absl::Status DeleteLease(const std::string& id) override {
    leases.erase(id);
    lease_labels.erase(id);
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> LeasesWithLabel(
      const std::string& key) override {
    std::map<std::string, std::map<std::string, std::string>> out;
    for (const auto& [id, labels] : lease_labels)
      if (labels.count(key)) out[id] = labels;
    return out;
  }
  absl::Status WriteBlob(const std::string&, const std::string& data, const std::string& digest,
                         const std::map<std::string, std::string>&) override {
    if (!fail_write_blob.empty()) return absl::UnavailableError(fail_write_blob);
    blobs[digest] = data;
    return absl::OkStatus();
  }
  absl::Status PutImage(const ImageRecord& image) override {
    if (!fail_put_image.empty()) return absl::UnavailableError(fail_put_image);
    images[image.name] = image;
    return absl::OkStatus();
  }
  absl::StatusOr<bool> SnapshotExists(const std::string& snapshotter, const std::string& key) override {
    if (auto s = Plugin(snapshotter); !s.ok()) return s;
    auto st = sn_->Stat(key);
    if (st.ok()) return true;
    if (absl::IsNotFound(st.status())) return false;
    return st.status();
  }
  absl::Status PrepareSnapshot(const std::string& snapshotter, const std::string& key, const std::string& parent,
                               const std::map<std::string, std::string>& labels) override {
    if (auto s = Plugin(snapshotter); !s.ok()) return s;
    // containerd passes on only snapshot.ref and containerd.io/snapshot/* labels.
    Labels passed;
    for (const auto& [k, v] : labels)
      if (k == keys::kSnapshotRefLabel || k.starts_with(keys::kSnapshotLabelPrefix)) passed[k] = v;
    auto m = sn_->Prepare(key, parent, passed);
    if (m.ok()) return absl::OkStatus();
    // containerd's errdefs: same code, its class appended to the message.
    return absl::Status(m.status().code(), StrCat("prepare ", key, ": ", Msg(m.status().message()), ": failed"));
  }
  absl::Status RemoveSnapshot(const std::string& snapshotter, const std::string& key) override {
    if (auto s = Plugin(snapshotter); !s.ok()) return s;
    removed.push_back(key);
    return sn_->Remove(key);
  }

  std::string lease;
  std::set<std::string> leases;
  std::map<std::string, std::map<std::string, std::string>> lease_labels;
  int lease_count = 0;
  std::map<std::string, std::string> blobs;
  std::map<std::string, ImageRecord> images;
  std::vector<std::string> removed;
  std::string fail_write_blob, fail_put_image;

 private:
  absl::Status Plugin(const std::string& name) const {
    if (name != name_) return absl::NotFoundError(StrCat("snapshotter not loaded: ", name));
    return absl::OkStatus();
  }
  std::string address_ = "/fake/containerd.sock";
  std::string name_;
  Snapshotter* sn_;
};

// A tiny full cdimg at `path`: "/" + "/hello" with `content`; returns its image id hex.
inline std::string WriteImage(const std::string& path, const std::string& content) {
  Entry root;
  root.path = "";
  root.type = EntryType::kDirectory;
  root.mode = 0755;
  Entry f;
  f.path = "hello";
  f.type = EntryType::kRegular;
  f.mode = 0644;
  f.size = content.size();
  f.digest = Sha256(content);
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  auto blob = CompressFullBlob(content, 3);
  REQUIRE(blob.ok());
  auto ref = (*w)->AppendBlob(*blob);
  REQUIRE(ref.ok());
  Recipe none;
  Recipe full;
  full.kind = Recipe::Kind::kFull;
  full.blob = *ref;
  REQUIRE((*w)->Finish(R"({"architecture":"amd64","os":"linux","config":{}})", {root, f}, {none, full}).ok());
  auto h = CdimgImage::ReadHeader(path);
  REQUIRE(h.ok());
  return DigestHex(h->image_id);
}

}  // namespace d4c::snap::testing
