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

#include "absl/status/status.h"
#include "d4c/base/strcat.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace {

// A decimal number of digits only (no sign, no space), as systemd writes it.
std::optional<long> StrictNumber(const char* s) {
  if (s == nullptr || *s == '\0') return std::nullopt;
  std::string_view v(s);
  long n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || v[0] == '-' || v[0] == '+') return std::nullopt;
  return n;
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::StatusOr<std::optional<int>> ParseListenFds(const char* listen_pid, const char* listen_fds, pid_t self) {
  if (listen_fds == nullptr) return std::optional<int>();
  const char* kFix = "; start the snapshotter from di3fs-snapshotter.socket's service or with --supervise, "
                     "or unset LISTEN_FDS to let it bind --address itself";
  if (listen_pid == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("LISTEN_FDS=", listen_fds, " is set but LISTEN_PID is not: cannot tell whether the socket is meant for "
               "this process", kFix));
  }
  auto pid = StrictNumber(listen_pid);
  if (!pid || *pid <= 0) {
    return absl::InvalidArgumentError(StrCat("LISTEN_PID='", listen_pid, "' is not a process id", kFix));
  }
  if (*pid != self) {
    return absl::InvalidArgumentError(
        StrCat("LISTEN_PID=", *pid, " is not this process (pid ", self,
               "): the socket was passed to another process (a wrapper script that runs the snapshotter without "
               "exec?); start the snapshotter directly from the unit (ExecStart=) or exec it"));
  }
  auto n = StrictNumber(listen_fds);
  if (!n) return absl::InvalidArgumentError(StrCat("LISTEN_FDS='", listen_fds, "' is not a number of sockets", kFix));
  if (*n == 0) {
    return absl::InvalidArgumentError(
        StrCat("LISTEN_FDS=0: no socket was passed; give di3fs-snapshotter.socket one ListenStream= line "
               "(the --address path)"));
  }
  if (*n != 1) {
    return absl::InvalidArgumentError(
        StrCat("LISTEN_FDS=", *n, ": the snapshotter serves one socket, ", *n,
               " were passed; give di3fs-snapshotter.socket exactly one ListenStream= line (the --address path)"));
  }
  return std::optional<int>(kListenFdsStart);
}

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
}

void FdAcceptor::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) spdlog::warn("acceptor wake-up: {}", Errno());
  thread_.join();
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
    grpc::AddInsecureChannelFromFd(server_, c);  // the server owns c from here
  }
}

namespace {

pid_t StartChild(int listen_fd, const std::vector<std::string>& argv, const sigset_t& orig_mask) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;  // parent (or -1)
  // Child: single-threaded parent, so setenv between fork and exec is safe.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(0);  // the supervisor already died
  if (listen_fd == kListenFdsStart) {
    fcntl(listen_fd, F_SETFD, 0);
  } else if (dup2(listen_fd, kListenFdsStart) < 0) {
    _exit(127);
  }
  setenv("LISTEN_FDS", "1", 1);
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  unsetenv("LISTEN_FDNAMES");
  sigprocmask(SIG_SETMASK, &orig_mask, nullptr);
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
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

int Supervise(const std::string& address, const std::vector<std::string>& child_argv) {
  sigset_t set, orig;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, &orig);
  auto fd = ListenUnix(address);
  if (!fd.ok()) {
    spdlog::critical("--supervise: {}", std::string(fd.status().message()));
    return 1;
  }
  spdlog::info("supervisor pid {} listening on unix:{}; runs {}", getpid(), address, child_argv[0]);
  using Clock = std::chrono::steady_clock;
  auto delay = std::chrono::milliseconds(0);
  bool stopping = false;
  int rc = 0;
  pid_t child = -1;
  Clock::time_point started;
  for (;;) {
    if (child < 0 && !stopping) {
      if (delay.count() > 0) {
        // Wait out the back-off, still answering signals.
        timespec ts{static_cast<time_t>(delay.count() / 1000), static_cast<long>(delay.count() % 1000) * 1000000};
        siginfo_t si;
        int s = sigtimedwait(&set, &si, &ts);
        if (s == SIGTERM || s == SIGINT) {
          stopping = true;
          continue;
        }
      }
      child = StartChild(*fd, child_argv, orig);
      if (child < 0) {
        spdlog::error("--supervise: fork: {}", Errno());
        delay = std::chrono::milliseconds(1000);
        continue;
      }
      started = Clock::now();
      spdlog::info("supervisor: started snapshotter pid {}", child);
    }
    if (child < 0 && stopping) break;
    siginfo_t si;
    int s = sigwaitinfo(&set, &si);
    if (s < 0) continue;
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
      pid_t p;
      while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
        if (p != child) continue;
        child = -1;
        bool quick = Clock::now() - started < std::chrono::seconds(1);
        if (stopping) {
          rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
          spdlog::info("supervisor: snapshotter pid {} {}", p, DescribeExit(status));
        } else {
          delay = quick ? std::min(std::max(delay * 2, std::chrono::milliseconds(100)), std::chrono::milliseconds(5000))
                        : std::chrono::milliseconds(0);
          spdlog::warn("supervisor: snapshotter pid {} {}; starting it again in {} ms (connections wait in the socket)",
                       p, DescribeExit(status), delay.count());
        }
      }
    }
  }
  close(*fd);
  unlink(address.c_str());
  spdlog::info("supervisor: stopped");
  return rc;
}

}  // namespace d4c::snap
