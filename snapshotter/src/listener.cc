// Socket hand-over: systemd's LISTEN_FDS protocol, the connection acceptor
// feeding the gRPC server, and the --supervise parent. See listener.h.
#include "d4c/snap/listener.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/status/status.h"
#include "d4c/base/strcat.h"
#include "d4c/snap/fdstore.h"
#include "h2_relay.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace {

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::Status CheckListeningSocket(int fd, const std::string& address) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return absl::FailedPreconditionError(StrCat("passed descriptor ", fd, " is not open: ", Errno()));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(StrCat("passed descriptor ", fd, " is not a socket"));
  }
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) != 0 || v != AF_UNIX) {
    return absl::FailedPreconditionError(StrCat("passed descriptor ", fd, " is not a unix socket (ListenStream= must be a path)"));
  }
  len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 || v != SOCK_STREAM) {
    return absl::FailedPreconditionError(StrCat("passed descriptor ", fd, " is not a stream socket (use ListenStream=)"));
  }
  len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v == 0) {
    return absl::FailedPreconditionError(StrCat("passed descriptor ", fd, " is not listening (Accept=no is needed)"));
  }
  sockaddr_un sa{};
  len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return absl::FailedPreconditionError(StrCat("getsockname of passed descriptor ", fd, ": ", Errno()));
  }
  size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
  std::string bound(sa.sun_path, strnlen(sa.sun_path, n));
  namespace fs = std::filesystem;
  if (fs::path(bound).lexically_normal() != fs::path(address).lexically_normal()) {
    return absl::FailedPreconditionError(
        StrCat("passed socket is bound to '", bound, "', not to --address ", address,
               " (the path containerd's [proxy_plugins.di3fs] uses): make ListenStream= and --address the same"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ListenUnix(const std::string& address) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (address.empty() || address.size() >= sizeof sa.sun_path) {
    return absl::InvalidArgumentError(
        StrCat("socket path '", address, "' must be 1 to ", sizeof sa.sun_path - 1, " bytes (unix socket limit)"));
  }
  std::memcpy(sa.sun_path, address.data(), address.size());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(address).parent_path(), ec);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(StrCat("socket: ", Errno()));
  struct stat st;
  if (lstat(address.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      close(fd);
      return absl::FailedPreconditionError(StrCat(address, " exists and is not a socket: remove it or choose another --address"));
    }
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      close(fd);
      return absl::FailedPreconditionError(
          StrCat(address, " is served by a running process (another snapshotter?): stop it first"));
    }
    close(fd);
    unlink(address.c_str());  // left by a dead process
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(StrCat("socket: ", Errno()));
  }
  mode_t old = umask(0177);  // created 0600
  int r = bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int bind_errno = errno;
  umask(old);
  if (r != 0) {
    close(fd);
    return absl::FailedPreconditionError(StrCat("bind ", address, ": ", std::strerror(bind_errno)));
  }
  chmod(address.c_str(), 0600);
  if (listen(fd, SOMAXCONN) != 0) {
    std::string e = Errno();
    close(fd);
    unlink(address.c_str());
    return absl::InternalError(StrCat("listen on ", address, ": ", e));
  }
  return fd;
}

FdAcceptor::FdAcceptor(int listen_fd, grpc::Server* server)
    : listen_fd_(listen_fd), server_(server), wake_fd_(eventfd(0, EFD_CLOEXEC)) {
  thread_ = std::thread([this] { Loop(); });
}

FdAcceptor::~FdAcceptor() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
  absl::MutexLock l(&mu_);
  relays_.clear();  // joins each relay; a connection not drained breaks
}

void FdAcceptor::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) spdlog::warn("acceptor wake-up: {}", Errno());
  thread_.join();
}

size_t FdAcceptor::Drain(absl::Duration timeout) {
  Stop();
  absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&mu_);
  for (auto& r : relays_) r->Drain();
  size_t open = 0;
  for (auto& r : relays_) {
    if (!r->WaitDone(deadline)) ++open;
  }
  return open;
}

void FdAcceptor::Loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int r = poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      spdlog::error("poll on the listening socket: {}", Errno());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (p[1].revents != 0) return;  // Stop(): queued connections stay for the next process
    if (p[0].revents == 0) continue;
    // The listening socket may be shared (systemd, the supervisor) and stays
    // blocking; a connection gone between poll and accept is not expected for
    // unix sockets, and a single acceptor runs at a time.
    int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      spdlog::error("accept on the listening socket: {} (retrying)", Errno());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // EMFILE and the like
      continue;
    }
    auto relay = H2Relay::Start(c, server_);  // owns c from here
    if (!relay.ok()) {
      spdlog::error("cannot serve a connection: {} (its client will retry)", std::string(relay.status().message()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    absl::MutexLock l(&mu_);
    std::erase_if(relays_, [](const std::unique_ptr<H2Relay>& x) { return x->done(); });  // closed connections
    relays_.push_back(*std::move(relay));
  }
}

namespace {

// The descriptors a child gets, in order: fd 3, 4, ... with these names.
using NamedFds = std::vector<std::pair<std::string, int>>;

pid_t StartChild(const NamedFds& fds, const std::string& notify, const std::vector<std::string>& argv,
                 const sigset_t& orig_mask) {
  std::string names;
  for (const auto& [name, fd] : fds) names += (names.empty() ? "" : ":") + name;
  std::string count = std::to_string(fds.size());
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;  // parent (or -1)
  // Child: single-threaded parent, so setenv between fork and exec is safe.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(0);  // the supervisor already died
  // First out of the way (above 3 + n), then down to 3, 4, ... in order;
  // dup2 clears close-on-exec on the copies.
  int n = static_cast<int>(fds.size());
  std::vector<int> tmp(fds.size());
  for (int i = 0; i < n; ++i) {
    tmp[i] = fcntl(fds[i].second, F_DUPFD_CLOEXEC, kListenFdsStart + n);
    if (tmp[i] < 0) _exit(127);
  }
  for (int i = 0; i < n; ++i) {
    if (dup2(tmp[i], kListenFdsStart + i) < 0) _exit(127);
    close(tmp[i]);
  }
  setenv("LISTEN_FDS", count.c_str(), 1);
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDNAMES", names.c_str(), 1);
  if (notify.empty()) {
    unsetenv("NOTIFY_SOCKET");
  } else {
    setenv("NOTIFY_SOCKET", notify.c_str(), 1);
  }
  sigprocmask(SIG_SETMASK, &orig_mask, nullptr);
  execv(a[0], a.data());
  dprintf(2, "snapshotter --supervise: exec %s: %s\n", a[0], std::strerror(errno));
  _exit(127);
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return StrCat("was killed by signal ", WTERMSIG(status));
  return StrCat("ended with status ", status);
}

}  // namespace

int Supervise(const std::string& address, const std::string& cri_address,
              const std::vector<std::string>& child_argv) {
  sigset_t set, orig;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, &orig);
  int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    spdlog::critical("--supervise: signalfd: {}", Errno());
    return 1;
  }
  auto fd = ListenUnix(address);
  if (!fd.ok()) {
    spdlog::critical("--supervise: {}", std::string(fd.status().message()));
    return 1;
  }
  NamedFds sockets = {{std::string(kApiSocketName), *fd}};
  if (!cri_address.empty()) {
    auto cri = ListenUnix(cri_address);
    if (!cri.ok()) {
      spdlog::critical("--supervise: --cri-image-proxy: {}", std::string(cri.status().message()));
      close(*fd);
      unlink(address.c_str());
      return 1;
    }
    sockets.emplace_back(std::string(kCriSocketName), *cri);
  }
  // The descriptor store (fdstore.h): room for one /dev/fuse copy per image.
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  FdStore store(kSuperviseFdStoreMax);
  std::string notify = StrCat("@d4c-snapshotter-fdstore/", getpid());
  int notify_fd = -1;
  if (auto n = BindNotifySocket(notify); n.ok()) {
    notify_fd = *n;
  } else {
    spdlog::error("--supervise: no descriptor store ({}): a kill -9 of the snapshotter and a di3fs daemon at once "
                  "ends that daemon's FUSE connection",
                  std::string(n.status().message()));
    notify.clear();
  }
  spdlog::info("supervisor pid {} listening on unix:{}{}; descriptor store {}; runs {}", getpid(), address,
               cri_address.empty() ? "" : StrCat(" and unix:", cri_address, " (CRI image proxy)"),
               notify.empty() ? "off" : notify, child_argv[0]);
  std::set<pid_t> started;  // our children: a store message from any other process is dropped
  auto drain = [&] {
    if (notify_fd < 0) return;
    for (;;) {
      auto r = ReceiveNotify(notify_fd);
      if (!r.ok()) {
        if (r.status().code() != absl::StatusCode::kNotFound)
          spdlog::warn("supervisor: descriptor store: {}", std::string(r.status().message()));
        return;
      }
      if (started.count(r->pid) == 0) {
        spdlog::warn("supervisor: descriptor store: message from pid {} (not a snapshotter it started) dropped",
                     r->pid);
        for (int f : r->fds) close(f);
        continue;
      }
      auto m = ParseNotifyMessage(r->text);
      if (!m.ok()) {
        spdlog::warn("supervisor: descriptor store: from pid {}: {}", r->pid, std::string(m.status().message()));
        for (int f : r->fds) close(f);
        continue;
      }
      if (!m->store && !m->remove) {
        for (int f : r->fds) close(f);
        continue;  // READY=1, STATUS=... : nothing for us
      }
      if (auto s = store.Apply(*m, std::move(r->fds)); !s.ok()) {
        spdlog::warn("supervisor: descriptor store: from pid {}: {}", r->pid, std::string(s.message()));
      } else {
        spdlog::debug("supervisor: descriptor store: {} {} ({} kept)", m->store ? "stored" : "removed", m->name,
                      store.entries().size());
      }
    }
  };
  using Clock = std::chrono::steady_clock;
  auto delay = std::chrono::milliseconds(0);
  Clock::time_point restart_at = Clock::now();
  bool stopping = false;
  int rc = 0;
  pid_t child = -1;
  Clock::time_point started_at;
  for (;;) {
    if (child < 0 && !stopping && Clock::now() >= restart_at) {
      drain();  // the dead child's last messages first
      NamedFds pass = sockets;
      for (const auto& [name, f] : store.entries()) pass.emplace_back(name, f);
      child = StartChild(pass, notify, child_argv, orig);
      if (child < 0) {
        spdlog::error("--supervise: fork: {}", Errno());
        restart_at = Clock::now() + std::chrono::milliseconds(1000);
      } else {
        started.insert(child);
        started_at = Clock::now();
        spdlog::info("supervisor: started snapshotter pid {}{}", child,
                     store.entries().empty() ? "" : StrCat(" with ", store.entries().size(), " stored descriptors"));
      }
    }
    if (child < 0 && stopping) break;
    int timeout = -1;
    if (child < 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(restart_at - Clock::now()).count();
      timeout = static_cast<int>(std::max<long long>(0, left));
    }
    pollfd p[2] = {{sigfd, POLLIN, 0}, {notify_fd, POLLIN, 0}};
    int r = poll(p, notify_fd >= 0 ? 2 : 1, timeout);
    if (r < 0 && errno != EINTR) {
      spdlog::error("supervisor: poll: {}", Errno());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (r <= 0) continue;
    if (notify_fd >= 0 && p[1].revents != 0) drain();
    if (p[0].revents == 0) continue;
    signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      int s = static_cast<int>(si.ssi_signo);
      if (s == SIGTERM || s == SIGINT) {
        spdlog::info("supervisor: signal {}: stopping snapshotter pid {}", s, child);
        stopping = true;
        if (child > 0) kill(child, SIGTERM);
      } else if (s == SIGHUP) {
        spdlog::info("supervisor: SIGHUP: restarting snapshotter pid {}", child);
        if (child > 0) kill(child, SIGTERM);
        delay = std::chrono::milliseconds(0);
      } else if (s == SIGCHLD) {
        int status = 0;
        pid_t dead;
        while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
          if (dead != child) continue;
          child = -1;
          // Backoff only for a crash loop: a child that failed on its own
          // within a second of its start. A clean exit (a graceful restart)
          // or a kill from outside (kill -9, the OOM killer) restarts at
          // once: each of those counted before, and a few of them in a row
          // held containerd off for seconds (its handshake times out).
          bool crashed = WIFSIGNALED(status) ? WTERMSIG(status) != SIGKILL && WTERMSIG(status) != SIGTERM
                                             : WEXITSTATUS(status) != 0;
          bool quick = crashed && Clock::now() - started_at < std::chrono::seconds(1);
          if (stopping) {
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
            spdlog::info("supervisor: snapshotter pid {} {}", dead, DescribeExit(status));
          } else {
            delay = quick ? std::min(std::max(delay * 2, std::chrono::milliseconds(100)),
                                     std::chrono::milliseconds(5000))
                          : std::chrono::milliseconds(0);
            restart_at = Clock::now() + delay;
            spdlog::warn("supervisor: snapshotter pid {} {}; starting it again in {} ms (connections wait in the "
                         "socket{})",
                         dead, DescribeExit(status), delay.count(),
                         store.entries().empty()
                             ? ""
                             : StrCat(", ", store.entries().size(), " stored descriptors keep their connections"));
          }
        }
      }
    }
  }
  store.Clear();
  if (notify_fd >= 0) close(notify_fd);
  close(sigfd);
  for (const auto& [name, f] : sockets) close(f);
  unlink(address.c_str());
  if (!cri_address.empty()) unlink(cri_address.c_str());
  spdlog::info("supervisor: stopped");
  return rc;
}

}  // namespace d4c::snap
