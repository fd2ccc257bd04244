#include "d4c/snap/mounter.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "d4c/base/strcat.h"
#include "d4c/cache_budget.h"
#include "d4c/di3fs_args.h"
#include "d4c/snap/layout.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace fs = std::filesystem;
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') { ok = false; break; }
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Real system calls.
class RealSystem final : public MountSystem {
 public:
  MountState Probe(const std::string& mountpoint) override { return ProbeMount(mountpoint); }
  bool Mounted(const std::string& mountpoint) override { return ReadMountTable().count(mountpoint) > 0; }
  absl::Status Detach(const std::string& mountpoint) override {
    if (umount2(mountpoint.c_str(), MNT_DETACH) != 0)
      return absl::InternalError(StrCat("detach mount ", mountpoint, ": ", std::strerror(errno)));
    return absl::OkStatus();
  }
  absl::StatusOr<int> Spawn(const std::vector<std::string>& args, const std::string& log, int pass_fd) override {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) return absl::InternalError(StrCat("fork ", args[0], ": ", std::strerror(errno)));
    if (pid == 0) {
      // Child: own session (no signals from the snapshotter's terminal or
      // process group), stdio to the log; never returns.
      setsid();
      int nul = open("/dev/null", O_RDONLY);
      int lf = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (nul >= 0) dup2(nul, 0);
      if (lf >= 0) {
        dup2(lf, 1);
        dup2(lf, 2);
      }
      if (pass_fd >= 0) {
        if (pass_fd == 3) {
          fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
        } else if (dup2(pass_fd, 3) != 3) {
          dprintf(2, "spawn %s: dup2 of the held /dev/fuse descriptor: %s\n", argv[0], std::strerror(errno));
          _exit(127);
        }
      }
      for (int fd = pass_fd >= 0 ? 4 : 3; fd < 1024; ++fd) close(fd);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execvp(argv[0], argv.data());
      dprintf(2, "exec %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    return pid;
  }
  bool Exited(int pid, int* status) override { return waitpid(pid, status, WNOHANG) == pid; }
  void Wait(int pid) override {
    int st = 0;
    waitpid(pid, &st, 0);
  }
  void Kill(int pid, int sig) override { kill(pid, sig); }
  // True if `pid` is a live (not zombie) di3fs serving `mountpoint`.
  bool IsDi3fs(int pid, const std::string& mountpoint) override {
    if (pid <= 0) return false;
    std::ifstream st(StrCat("/proc/", pid, "/stat"));
    std::string line;
    if (!std::getline(st, line)) return false;
    size_t rp = line.rfind(')');
    if (rp == std::string::npos || rp + 2 >= line.size() || line[rp + 2] == 'Z') return false;
    std::ifstream cl(StrCat("/proc/", pid, "/cmdline"));
    std::string cmd((std::istreambuf_iterator<char>(cl)), std::istreambuf_iterator<char>());
    return cmd.find("di3fs") != std::string::npos && cmd.find(mountpoint) != std::string::npos;
  }
  void SleepMs(int ms) override { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  absl::StatusOr<int> HoldFuseFd(int pid) override {
    // The daemon's descriptors on /dev/fuse: di3fs reads through one.
    std::vector<int> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(StrCat("/proc/", pid, "/fd"), ec)) {
      std::error_code ec2;
      if (fs::read_symlink(e.path(), ec2) == "/dev/fuse") found.push_back(std::atoi(e.path().filename().c_str()));
    }
    if (ec) return absl::NotFoundError(StrCat("di3fs pid ", pid, ": ", ec.message()));
    if (found.size() != 1)
      return absl::FailedPreconditionError(
          StrCat("di3fs pid ", pid, " has ", found.size(),
                 " /dev/fuse descriptors, not one (a di3fs older than takeover support?)"));
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return absl::InternalError(StrCat("pidfd_open of di3fs pid ", pid, ": ", std::strerror(errno)));
    int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, found[0], 0));
    int err = errno;
    close(pidfd);
    if (fd < 0)
      return absl::InternalError(StrCat("pidfd_getfd of di3fs pid ", pid, ": ", std::strerror(err),
                                        " (needs Linux 5.6 and ptrace rights over the daemon)"));
    // FUSE_NOTIFY_RESEND (7; Linux 6.9) is what lets a replacement answer
    // the requests a killed daemon had read. Harmless now: requests being
    // answered are queued again and answered twice (the first reply is
    // dropped by the kernel). Older kernels refuse it (EINVAL).
    fuse_out_header h;
    std::memset(&h, 0, sizeof h);
    h.len = sizeof h;
    h.error = 7;
    if (write(fd, &h, sizeof h) != static_cast<ssize_t>(sizeof h)) {
      err = errno;
      close(fd);
      return absl::UnimplementedError(StrCat("the kernel refused FUSE_NOTIFY_RESEND (", std::strerror(err),
                                             "; it needs Linux 6.9)"));
    }
    return fd;
  }
  void Close(int fd) override { close(fd); }
  std::vector<std::string> CmdLine(int pid) override {
    std::ifstream cl(StrCat("/proc/", pid, "/cmdline"));
    std::string all((std::istreambuf_iterator<char>(cl)), std::istreambuf_iterator<char>());
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i] != '\0') continue;
      out.push_back(all.substr(start, i - start));
      start = i + 1;
    }
    return out;
  }
};

void WriteArgv(const std::string& path, const std::vector<std::string>& argv) {
  std::error_code ec;
  {
    std::ofstream f(path + ".tmp", std::ios::binary | std::ios::trunc);
    for (const auto& a : argv) f << a << '\0';
  }
  fs::rename(path + ".tmp", path, ec);
}

std::vector<std::string> ReadArgv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<std::string> out;
  std::string a;
  while (std::getline(f, a, '\0')) out.push_back(a);
  return out;
}

// argv of a replacement daemon: the dead one's, with --takeover-fd 3.
std::vector<std::string> TakeoverArgv(std::vector<std::string> argv) {
  for (size_t i = 0; i + 1 < argv.size();) {
    if (argv[i] == di3fs_flags::kTakeoverFd) {
      argv.erase(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.begin() + static_cast<std::ptrdiff_t>(i) + 2);
    } else {
      ++i;
    }
  }
  if (argv.empty()) return argv;
  argv.insert(argv.end() - 1, {di3fs_flags::kTakeoverFd, "3"});
  return argv;
}

}  // namespace

std::map<std::string, std::string> ReadMountTable() {
  std::map<std::string, std::string> out;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    // id parent maj:min root mountpoint options [optional...] - fstype source superopts
    std::istringstream is(line);
    std::string id, parent, dev, root, mp;
    is >> id >> parent >> dev >> root >> mp;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype;
    rest >> fstype;
    out[Unescape(mp)] = fstype;  // the last (topmost) mount wins
  }
  return out;
}

MountState ProbeMount(const std::string& mountpoint) {
  MountState s;
  auto table = ReadMountTable();
  auto it = table.find(mountpoint);
  if (it == table.end()) return s;
  s.mounted = true;
  s.fstype = it->second;
  // statfs always reaches the FUSE daemon (stat may be answered from the
  // attribute cache): ENOTCONN once it died.
  struct statfs sf;
  s.alive = statfs(mountpoint.c_str(), &sf) == 0;
  return s;
}


std::unique_ptr<MountSystem> RealMountSystem() { return std::make_unique<RealSystem>(); }

Di3fsMounter::Di3fsMounter(Options o, std::unique_ptr<MountSystem> sys)
    : o_(std::move(o)), sys_(sys ? std::move(sys) : RealMountSystem()) {
  std::error_code ec;
  for (const auto& d : {layout::MountDir(o_.root), layout::RunDir(o_.root), layout::LogDir(o_.root),
                        layout::CacheDir(o_.root)})
    fs::create_directories(d, ec);
  // --cache-size is the budget of all image caches together (one LRU across
  // images, enforced by the daemons). Written here, not only by each new
  // daemon, so that the daemons adopted after a restart apply it within a
  // second (docs/operations.md, "Content cache").
  if (auto s = WriteCacheBudget(layout::CacheDir(o_.root), o_.cache_size); !s.ok())
    spdlog::warn("content cache budget: {}", Msg(s.message()));
}

std::string Di3fsMounter::MountPoint(const std::string& id_hex) const { return layout::MountPoint(o_.root, id_hex); }

int Di3fsMounter::ReadPid(const std::string& id_hex) const {
  std::ifstream f(layout::PidFile(o_.root, id_hex));
  int pid = 0;
  if (f >> pid) return pid;
  return 0;
}

void Di3fsMounter::WritePid(const std::string& id_hex, int pid) {
  std::string pidfile = layout::PidFile(o_.root, id_hex);
  std::error_code ec;
  {
    std::ofstream pf(pidfile + ".tmp");
    pf << pid << "\n";
  }
  fs::rename(pidfile + ".tmp", pidfile, ec);
}

Di3fsMounter::~Di3fsMounter() {
  // The stored copies stay in the store for the next snapshotter.
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, h] : held_) sys_->Close(h.fd);
  held_.clear();
  for (auto& [id, fd] : o_.passed) sys_->Close(fd);
  o_.passed.clear();
}

void Di3fsMounter::Store(const std::string& id_hex, int fd) {
  if (!o_.fdstore || !o_.fdstore->enabled()) return;
  // A name is stored once: systemd would keep a second copy under it (a
  // mount made again is a new connection), --supervise replaces it.
  std::string name = FuseFdName(id_hex);
  absl::Status s = o_.fdstore->RemoveFd(name);
  if (s.ok()) s = o_.fdstore->StoreFd(name, fd);
  if (!s.ok() && !warned_store_.exchange(true))
    spdlog::warn("descriptor store: the /dev/fuse copy of image sha256:{} is not stored, so a kill -9 of the "
                 "snapshotter and its di3fs together ends that connection: {}",
                 id_hex, Msg(s.message()));
}

void Di3fsMounter::Unstore(const std::string& id_hex) {
  if (!o_.fdstore || !o_.fdstore->enabled()) return;
  if (auto s = o_.fdstore->RemoveFd(FuseFdName(id_hex)); !s.ok() && !warned_store_.exchange(true))
    spdlog::warn("descriptor store: removing the /dev/fuse copy of image sha256:{}: {}", id_hex, Msg(s.message()));
}

size_t Di3fsMounter::HeldCount() {
  std::lock_guard<std::mutex> g(mu_);
  return held_.size();
}

void Di3fsMounter::Hold(const std::string& id_hex, int pid, std::vector<std::string> argv) {
  auto fd = sys_->HoldFuseFd(pid);
  std::unique_lock<std::mutex> g(mu_);
  if (!fd.ok()) {
    // Once per run: the reason is the same for every mount (mostly the kernel).
    if (!warned_no_hold_)
      spdlog::warn("di3fs pid {}: its /dev/fuse connection is not held, so a killed di3fs is not replaced in "
                   "place (its containers get ENOTCONN; the mount is made again for new ones): {}",
                   pid, Msg(fd.status().message()));
    warned_no_hold_ = true;
    return;
  }
  if (auto it = held_.find(id_hex); it != held_.end()) sys_->Close(it->second.fd);
  WriteArgv(layout::ArgvFile(o_.root, id_hex), argv);
  held_[id_hex] = Held{*fd, pid, std::move(argv), 0};
  g.unlock();  // a send may wait for the store; the caller's LockFor keeps *fd held
  Store(id_hex, *fd);
}

void Di3fsMounter::Release(const std::string& id_hex) {
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = held_.find(id_hex);
    if (it == held_.end()) return;
    sys_->Close(it->second.fd);
    held_.erase(it);
  }
  Unstore(id_hex);
}

bool Di3fsMounter::ReplaceIfDead(const std::string& id_hex) {
  std::string mp = MountPoint(id_hex);
  Held h;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = held_.find(id_hex);
    if (it == held_.end()) return true;
    h = it->second;
  }
  if (sys_->IsDi3fs(h.pid, mp)) return true;
  // Replacements that die at once (a store file gone, a broken binary) would
  // be restarted forever: after 3, let the connection go (the old way).
  if (h.failures >= 3) {
    spdlog::error("di3fs for image sha256:{} died {} times right after taking over {}; letting the connection go "
                  "(its containers get ENOTCONN; the mount is made again for new ones). See {}",
                  id_hex, h.failures, mp, layout::LogFile(o_.root, id_hex));
    Release(id_hex);
    return false;
  }
  std::vector<std::string> argv = TakeoverArgv(h.argv);
  auto spawned = sys_->Spawn(argv, layout::LogFile(o_.root, id_hex), h.fd);
  if (!spawned.ok()) {
    spdlog::error("replacing dead di3fs of image sha256:{}: {}", id_hex, Msg(spawned.status().message()));
    Release(id_hex);
    return false;
  }
  int pid = *spawned;
  WritePid(id_hex, pid);
  // It has taken over once it runs; one that exits within a second counts
  // as a failure (it never served).
  bool quick_exit = false;
  for (int i = 0; i < 20; ++i) {
    int wst = 0;
    if (sys_->Exited(pid, &wst)) {
      quick_exit = true;
      spdlog::warn("di3fs replacement pid {} for image sha256:{} exited (status {})", pid, id_hex, wst);
      break;
    }
    if (sys_->IsDi3fs(pid, mp) && i >= 1) break;
    sys_->SleepMs(50);
  }
  std::lock_guard<std::mutex> g(mu_);
  auto it = held_.find(id_hex);
  if (it == held_.end()) return false;
  it->second.pid = pid;
  it->second.argv = std::move(argv);
  it->second.failures = quick_exit ? it->second.failures + 1 : 0;
  if (quick_exit) return false;
  children_[pid] = id_hex;
  spdlog::warn("di3fs of image sha256:{} (pid {}) died; pid {} took over its connection at {}", id_hex, h.pid,
               pid, mp);
  return true;
}

std::mutex& Di3fsMounter::LockFor(const std::string& id_hex) {
  std::lock_guard<std::mutex> g(mu_);
  auto& m = locks_[id_hex];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

absl::Status Di3fsMounter::Ensure(const std::string& id_hex, const std::vector<std::string>& chain) {
  if (chain.empty()) return absl::InvalidArgumentError("empty image chain");
  std::lock_guard<std::mutex> g(LockFor(id_hex));
  std::string mp = MountPoint(id_hex);
  // A held connection: never probed with statfs (with its daemon dead it
  // would wait for the replacement); its daemon is replaced if it died.
  bool held;
  {
    std::lock_guard<std::mutex> g2(mu_);
    held = held_.count(id_hex) > 0;
  }
  if (held) {
    if (ReplaceIfDead(id_hex)) return absl::OkStatus();
    std::lock_guard<std::mutex> g2(mu_);
    if (held_.count(id_hex))
      return absl::UnavailableError(StrCat("the di3fs that was to take over ", mp, " for image sha256:", id_hex,
                                           " exited at once; see ", layout::LogFile(o_.root, id_hex)));
  }
  MountState st = sys_->Probe(mp);
  if (st.mounted && st.alive) return absl::OkStatus();
  if (st.mounted) {
    spdlog::warn("di3fs mount {} is dead (daemon gone); detaching it before remounting", mp);
    if (auto s = sys_->Detach(mp); !s.ok())
      return absl::InternalError(StrCat("dead di3fs mount of image sha256:", id_hex, ": ", Msg(s.message())));
  }
  std::error_code ec;
  fs::create_directories(mp, ec);
  Di3fsArgs args;
  args.fs.cdimg = chain[0];
  args.fs.bases.assign(chain.begin() + 1, chain.end());
  args.fs.cache_dir = layout::CacheDirFor(o_.root, id_hex);
  fs::create_directories(args.fs.cache_dir, ec);
  args.fs.cache_root = layout::CacheDir(o_.root);  // one budget for all images
  args.fs.cache_size = o_.cache_size;
  // allow_other: containers' overlays (mounted by containerd) read it.
  // nosuid,nodev: on the host the mount gives no setuid or device rights;
  // containers still get both, because the overlay mount over it is what
  // their exec and open go through (docs/operations.md, "Mount options").
  args.fs.mount_options = {"allow_other", "nosuid", "nodev"};
  args.mountpoint = mp;
  std::string log = layout::LogFile(o_.root, id_hex);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> argv = ToArgv(o_.di3fs, args);
  auto spawned = sys_->Spawn(argv, log);
  if (!spawned.ok()) return spawned.status();
  int pid = *spawned;
  WritePid(id_hex, pid);
  while (true) {
    int wst = 0;
    if (sys_->Exited(pid, &wst)) {
      std::ifstream lf(log);
      std::string all((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
      if (all.size() > 2000) all = all.substr(all.size() - 2000);
      return absl::InternalError(StrCat("di3fs for image sha256:", id_hex, " exited (status ", wst,
                                        ") before mounting ", mp, "; log tail: ", all));
    }
    MountState now = sys_->Probe(mp);
    if (now.mounted && now.alive) break;
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(o_.mount_timeout_sec)) {
      sys_->Kill(pid, SIGKILL);
      sys_->Wait(pid);
      return absl::DeadlineExceededError(
          StrCat("di3fs for image sha256:", id_hex, " did not mount ", mp, " within ", o_.mount_timeout_sec, " s"));
    }
    sys_->SleepMs(5);
  }
  {
    std::lock_guard<std::mutex> g2(mu_);
    children_[pid] = id_hex;
  }
  Hold(id_hex, pid, std::move(argv));
  spdlog::info("di3fs mounted image=sha256:{} at {} pid={} chain={} took_ms={}", id_hex, mp, pid, chain.size(),
               std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  return absl::OkStatus();
}

absl::Status Di3fsMounter::Unmount(const std::string& id_hex) {
  std::lock_guard<std::mutex> g(LockFor(id_hex));
  std::string mp = MountPoint(id_hex);
  std::string pidfile = layout::PidFile(o_.root, id_hex);
  // Let the connection go first: with its daemon dead it then ends
  // (ENOTCONN) instead of waiting for a replacement.
  Release(id_hex);
  int pid = ReadPid(id_hex);
  bool ours = sys_->IsDi3fs(pid, mp);
  if (ours) sys_->Kill(pid, SIGTERM);
  auto t0 = std::chrono::steady_clock::now();
  while (sys_->Probe(mp).mounted && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    ReapChildren();
    sys_->SleepMs(10);
  }
  absl::Status status;
  if (sys_->Probe(mp).mounted) {
    spdlog::warn("di3fs mount {} still present after SIGTERM; detaching", mp);
    if (auto s = sys_->Detach(mp); !s.ok()) status = absl::InternalError(StrCat("unmount: ", Msg(s.message())));
  }
  if (ours && sys_->IsDi3fs(pid, mp)) {
    sys_->SleepMs(100);
    if (sys_->IsDi3fs(pid, mp)) sys_->Kill(pid, SIGKILL);
  }
  ReapChildren();
  if (status.ok()) {
    std::error_code ec;
    fs::remove(mp, ec);
    fs::remove(pidfile, ec);
    fs::remove(layout::ArgvFile(o_.root, id_hex), ec);
    spdlog::info("di3fs unmounted image=sha256:{} from {}", id_hex, mp);
  }
  return status;
}

std::vector<std::string> Di3fsMounter::Known() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(layout::MountDir(o_.root), ec)) out.push_back(e.path().filename());
  for (const auto& e : fs::directory_iterator(layout::RunDir(o_.root), ec)) {
    if (e.path().extension() == ".pid") out.push_back(e.path().stem());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Di3fsMounter::AdoptPassed() {
  std::map<std::string, int> passed;
  {
    std::lock_guard<std::mutex> g(mu_);
    passed.swap(o_.passed);
  }
  for (const auto& [id, fd] : passed) {
    std::string mp = MountPoint(id);
    std::lock_guard<std::mutex> g(LockFor(id));
    // Not statfs: with its daemon dead the connection (held by the store)
    // would wait for a daemon.
    if (!sys_->Mounted(mp)) {
      spdlog::info("recover: stored /dev/fuse copy of image sha256:{} has no mount at {}; dropped", id, mp);
      sys_->Close(fd);
      Unstore(id);
      continue;
    }
    int pid = ReadPid(id);
    bool alive = sys_->IsDi3fs(pid, mp);
    std::vector<std::string> argv = alive ? sys_->CmdLine(pid) : ReadArgv(layout::ArgvFile(o_.root, id));
    if (argv.empty()) {
      spdlog::warn("recover: di3fs of image sha256:{} (pid {}) is gone and {} is missing: cannot start a "
                   "replacement on its stored connection; letting it go (the mount is made again)",
                   id, pid, layout::ArgvFile(o_.root, id));
      sys_->Close(fd);
      Unstore(id);
      continue;
    }
    {
      std::lock_guard<std::mutex> g2(mu_);
      if (auto it = held_.find(id); it != held_.end()) sys_->Close(it->second.fd);
      held_[id] = Held{fd, pid, argv, 0};
    }
    if (alive) {
      WriteArgv(layout::ArgvFile(o_.root, id), argv);
      spdlog::info("recover: adopted live di3fs mount {} (pid {}) with its stored connection", mp, pid);
    } else {
      spdlog::warn("recover: di3fs of image sha256:{} (pid {}) died while no snapshotter ran; its connection was "
                   "kept in the descriptor store",
                   id, pid);
      ReplaceIfDead(id);
    }
  }
}

void Di3fsMounter::Recover(const std::vector<std::string>& keep) {
  AdoptPassed();
  for (const auto& id : Known()) {
    std::string mp = MountPoint(id);
    bool wanted = std::find(keep.begin(), keep.end(), id) != keep.end();
    if (!wanted) {
      if (auto s = Unmount(id); !s.ok()) spdlog::warn("recover: {}", Msg(s.message()));
      continue;
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (held_.count(id) > 0) continue;  // a stored connection, adopted above
    }
    MountState st = sys_->Probe(mp);
    if (st.mounted && !st.alive) {
      spdlog::warn("recover: di3fs mount {} is dead; detaching (it is mounted again on demand)", mp);
      if (auto s = sys_->Detach(mp); !s.ok()) spdlog::warn("recover: {}", Msg(s.message()));
    } else if (st.mounted) {
      int pid = ReadPid(id);
      spdlog::info("recover: adopted live di3fs mount {} (pid {})", mp, pid);
      // Hold its connection too, so that it can be replaced if it dies.
      std::lock_guard<std::mutex> g(LockFor(id));
      if (sys_->IsDi3fs(pid, mp)) Hold(id, pid, sys_->CmdLine(pid));
    }
  }
}

absl::Status Di3fsMounter::Prune(const std::vector<std::string>& keep) {
  auto kept = [&](const std::string& id) { return std::find(keep.begin(), keep.end(), id) != keep.end(); };
  std::vector<std::string> unused;
  for (const auto& id : Known())
    if (!kept(id)) unused.push_back(id);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(layout::CacheDir(o_.root), ec)) {
    std::string n = e.path().filename();
    if (n.empty() || n[0] == '.') continue;  // the cache root's .budget, .ledger, .lock
    if (!kept(n) && std::find(unused.begin(), unused.end(), n) == unused.end()) unused.push_back(n);
  }
  absl::Status status;
  for (const auto& id : unused) {
    bool held;
    {
      std::lock_guard<std::mutex> g(mu_);
      held = held_.count(id) > 0;
    }
    if (held || sys_->Probe(MountPoint(id)).mounted) {
      if (auto s = Unmount(id); !s.ok()) {
        if (status.ok()) status = s;
        continue;
      }
    } else {
      std::error_code ec2;
      fs::remove(MountPoint(id), ec2);
      fs::remove(layout::PidFile(o_.root, id), ec2);
      fs::remove(layout::ArgvFile(o_.root, id), ec2);
    }
    std::error_code ec3;
    fs::remove_all(layout::CacheDirFor(o_.root, id), ec3);
  }
  return status;
}

void Di3fsMounter::Reap() {
  ReapChildren();
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& [id, h] : held_) ids.push_back(id);
  }
  for (const auto& id : ids) {
    // An image busy in Ensure or Unmount is left to them.
    std::unique_lock<std::mutex> lk(LockFor(id), std::try_to_lock);
    if (lk.owns_lock()) ReplaceIfDead(id);
  }
}

void Di3fsMounter::ReapChildren() {
  std::lock_guard<std::mutex> g(mu_);
  for (auto it = children_.begin(); it != children_.end();) {
    int wst = 0;
    if (sys_->Exited(it->first, &wst)) {
      spdlog::info("di3fs pid {} (image sha256:{}) exited, status {}", it->first, it->second, wst);
      it = children_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace d4c::snap
