// The descriptor store protocol (sd_notify FDSTORE, LISTEN_FDNAMES) without
// libsystemd. See fdstore.h.
#include "d4c/snap/fdstore.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>

#include "d4c/base/strcat.h"
#include "d4c/snap/listener.h"

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

// sockaddr of a notification address: "@name" abstract, else a path.
absl::StatusOr<std::pair<sockaddr_un, socklen_t>> NotifyAddress(const std::string& address) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (address.empty() || address.size() >= sizeof sa.sun_path)
    return absl::InvalidArgumentError(
        StrCat("NOTIFY_SOCKET='", address, "' must be 1 to ", sizeof sa.sun_path - 1, " bytes (unix socket limit)"));
  if (address[0] != '/' && address[0] != '@')
    return absl::InvalidArgumentError(
        StrCat("NOTIFY_SOCKET='", address, "' is neither a path (/...) nor an abstract socket (@...)"));
  std::memcpy(sa.sun_path, address.data(), address.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  if (address[0] == '@') {
    sa.sun_path[0] = '\0';
  } else {
    len += 1;  // the terminating NUL of a path
  }
  return std::make_pair(sa, len);
}

}  // namespace

absl::Status CheckFdName(std::string_view name) {
  if (name.empty() || name.size() > 255)
    return absl::InvalidArgumentError(StrCat("descriptor name '", name, "' must be 1 to 255 characters"));
  for (char c : name) {
    if (c == ':' || c < 0x20 || c > 0x7e)
      return absl::InvalidArgumentError(
          StrCat("descriptor name '", name, "' may hold printable ASCII characters only, no ':'"));
  }
  return absl::OkStatus();
}

std::string FuseFdName(const std::string& id_hex) { return StrCat(kFuseFdPrefix, id_hex); }

absl::StatusOr<std::optional<PassedFds>> ParseListenFds(const char* listen_pid, const char* listen_fds,
                                                        const char* listen_fdnames, pid_t self) {
  if (listen_fds == nullptr) return std::optional<PassedFds>();
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
  if (!n || *n > 65536)
    return absl::InvalidArgumentError(StrCat("LISTEN_FDS='", listen_fds, "' is not a number of sockets", kFix));
  if (*n == 0) {
    return absl::InvalidArgumentError(
        StrCat("LISTEN_FDS=0: no socket was passed; give di3fs-snapshotter.socket one ListenStream= line "
               "(the --address path)"));
  }
  std::vector<std::string> names;
  if (listen_fdnames == nullptr) {
    names.assign(static_cast<size_t>(*n), "unknown");  // systemd's name for an unnamed descriptor
  } else {
    std::string_view all(listen_fdnames);
    for (size_t start = 0;;) {
      size_t colon = all.find(':', start);
      names.emplace_back(all.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
      if (colon == std::string_view::npos) break;
      start = colon + 1;
    }
    if (names.size() != static_cast<size_t>(*n))
      return absl::InvalidArgumentError(
          StrCat("LISTEN_FDNAMES='", listen_fdnames, "' has ", names.size(), " names for LISTEN_FDS=", *n,
                 " descriptors: the variables were not set together (one name per descriptor, ':' between)"));
    for (const auto& name : names) {
      if (auto s = CheckFdName(name); !s.ok())
        return absl::InvalidArgumentError(StrCat("LISTEN_FDNAMES='", listen_fdnames, "': ", s.message()));
    }
  }
  PassedFds out;
  std::vector<std::string> api_names;
  for (size_t i = 0; i < names.size(); ++i) {
    int fd = kListenFdsStart + static_cast<int>(i);
    const std::string& name = names[i];
    if (name.starts_with(kFuseFdPrefix) && name.size() > kFuseFdPrefix.size()) {
      auto [it, fresh] = out.fuse.emplace(name.substr(kFuseFdPrefix.size()), fd);
      if (!fresh) {  // stored twice: the later one is the newer connection
        out.unused.emplace_back(name, it->second);
        it->second = fd;
      }
    } else if (name == kCriSocketName) {
      if (out.cri) {
        return absl::InvalidArgumentError(
            StrCat("LISTEN_FDNAMES='", listen_fdnames, "' names ", kCriSocketName,
                   " twice: give the CRI image proxy's socket unit one ListenStream= line"));
      }
      out.cri = fd;
    } else {
      api_names.push_back(name);
      out.api = fd;
    }
  }
  if (api_names.size() != 1) {
    std::string given = listen_fdnames ? StrCat(" (LISTEN_FDNAMES='", listen_fdnames, "')") : std::string();
    if (api_names.empty())
      return absl::InvalidArgumentError(
          StrCat("LISTEN_FDS=", *n, given, ": none of the passed descriptors is the Snapshots socket (--address); "
                 "give di3fs-snapshotter.socket one ListenStream= line with FileDescriptorName=", kApiSocketName));
    return absl::InvalidArgumentError(
        StrCat("LISTEN_FDS=", *n, given, ": the snapshotter serves one socket, ", api_names.size(),
               " were passed; give di3fs-snapshotter.socket exactly one ListenStream= line (the --address path), "
               "and the CRI image proxy's socket FileDescriptorName=", kCriSocketName));
  }
  return std::optional<PassedFds>(std::move(out));
}

Notifier::Notifier(const char* notify_socket) : address_(notify_socket ? notify_socket : "") {}

absl::Status Notifier::Send(std::string_view message, const std::vector<int>& fds) const {
  if (!enabled()) return absl::OkStatus();
  auto addr = NotifyAddress(address_);
  if (!addr.ok()) return addr.status();
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return absl::InternalError(StrCat("socket for NOTIFY_SOCKET: ", Errno()));
  iovec iov{const_cast<char*>(message.data()), message.size()};
  msghdr mh{};
  mh.msg_name = &addr->first;
  mh.msg_namelen = addr->second;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t r = sendmsg(s, &mh, MSG_NOSIGNAL);
  int err = errno;
  close(s);
  if (r < 0)
    return absl::UnavailableError(StrCat("send to NOTIFY_SOCKET ", address_, ": ", std::strerror(err),
                                         " (the service manager or --supervise parent is gone?)"));
  return absl::OkStatus();
}

absl::Status Notifier::StoreFd(const std::string& name, int fd) const {
  if (auto s = CheckFdName(name); !s.ok()) return s;
  return Send(StrCat("FDSTORE=1\nFDNAME=", name), {fd});
}

absl::Status Notifier::RemoveFd(const std::string& name) const {
  if (auto s = CheckFdName(name); !s.ok()) return s;
  return Send(StrCat("FDSTOREREMOVE=1\nFDNAME=", name));
}

absl::StatusOr<NotifyMessage> ParseNotifyMessage(std::string_view text) {
  NotifyMessage m;
  bool named = false;
  for (size_t start = 0; start < text.size();) {
    size_t nl = text.find('\n', start);
    std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    start = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line == "FDSTORE=1") {
      m.store = true;
    } else if (line == "FDSTOREREMOVE=1") {
      m.remove = true;
    } else if (line.starts_with("FDNAME=")) {
      m.name = std::string(line.substr(7));
      named = true;
    }
  }
  if (m.store && m.remove)
    return absl::InvalidArgumentError("notification has both FDSTORE=1 and FDSTOREREMOVE=1");
  if (!named) m.name = "stored";
  if (auto s = CheckFdName(m.name); !s.ok()) return absl::InvalidArgumentError(StrCat("FDNAME: ", s.message()));
  return m;
}

FdStore::~FdStore() { Clear(); }

void FdStore::Clear() {
  for (auto& [name, fd] : fds_) close(fd);
  fds_.clear();
}

absl::Status FdStore::Apply(const NotifyMessage& m, std::vector<int> fds) {
  auto close_all = [&] {
    for (int fd : fds) close(fd);
  };
  if (!m.store) {
    if (!fds.empty()) {
      close_all();
      return absl::InvalidArgumentError(
          StrCat(fds.size(), " descriptors sent without FDSTORE=1 (name '", m.name, "'): closed"));
    }
    if (m.remove) {
      auto it = fds_.find(m.name);
      if (it != fds_.end()) {
        close(it->second);
        fds_.erase(it);
      }
    }
    return absl::OkStatus();
  }
  if (fds.size() != 1) {
    close_all();
    return absl::InvalidArgumentError(
        StrCat("FDSTORE=1 for '", m.name, "' came with ", fds.size(), " descriptors; one per name is kept"));
  }
  auto it = fds_.find(m.name);
  if (it != fds_.end()) {
    close(it->second);
    it->second = fds[0];
    return absl::OkStatus();
  }
  if (fds_.size() >= max_) {
    close_all();
    return absl::ResourceExhaustedError(
        StrCat("descriptor store full (", max_, " descriptors): '", m.name, "' not kept"));
  }
  fds_[m.name] = fds[0];
  return absl::OkStatus();
}

absl::StatusOr<Received> ReceiveNotify(int sock) {
  Received out;
  std::string buf(4096, '\0');
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 253)];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  ssize_t r = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return absl::NotFoundError("nothing queued");
    return absl::InternalError(StrCat("recvmsg on the notification socket: ", Errno()));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        out.fds.push_back(fd);
      }
    } else if (c->cmsg_type == SCM_CREDENTIALS) {
      ucred cr;
      std::memcpy(&cr, CMSG_DATA(c), sizeof cr);
      out.pid = cr.pid;
    }
  }
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    for (int fd : out.fds) close(fd);
    return absl::InvalidArgumentError("notification truncated (over 4096 bytes or too many descriptors): dropped");
  }
  out.text.assign(buf.data(), static_cast<size_t>(r));
  return out;
}

absl::StatusOr<int> BindNotifySocket(const std::string& address) {
  auto addr = NotifyAddress(address);
  if (!addr.ok()) return addr.status();
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return absl::InternalError(StrCat("socket: ", Errno()));
  int one = 1;
  if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
    std::string e = Errno();
    close(s);
    return absl::InternalError(StrCat("SO_PASSCRED: ", e));
  }
  if (address[0] == '/') unlink(address.c_str());
  if (bind(s, reinterpret_cast<const sockaddr*>(&addr->first), addr->second) != 0) {
    std::string e = Errno();
    close(s);
    return absl::FailedPreconditionError(StrCat("bind notification socket ", address, ": ", e));
  }
  return s;
}

}  // namespace d4c::snap
