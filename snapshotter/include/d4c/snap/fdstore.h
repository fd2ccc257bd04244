// Descriptor store outside the snapshotter process, with systemd's own
// protocol (sd_notify(3) FDSTORE=1 / FDSTOREREMOVE=1, sd_listen_fds(3)
// LISTEN_FDNAMES), written here without libsystemd, so that the same code
// works under systemd (FileDescriptorStoreMax=) and under `snapshotter
// --supervise` (whose parent implements the receiving side, FdStore below).
//
// What is stored: the snapshotter's copy of each di3fs daemon's /dev/fuse
// descriptor, named "fuse-<image id hex>". With a copy outside the process, a
// kill -9 of the snapshotter and of a daemon at the same moment does not end
// the FUSE connection: the next snapshotter gets the copy back (LISTEN_FDS)
// and starts a replacement daemon on it (mounter.h, "Takeover").
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c::snap {

// LISTEN_FDNAMES of the sockets: the Snapshots API socket (--address) and the
// CRI image proxy's (--cri-image-proxy). The units set them with
// FileDescriptorName=; a passed descriptor of any other name that is not a
// stored one ("fuse-...") is taken for the API socket (systemd's default name
// is the socket unit's, "unknown" without LISTEN_FDNAMES).
inline constexpr std::string_view kApiSocketName = "snapshotter";
inline constexpr std::string_view kCriSocketName = "cri-image-proxy";
inline constexpr std::string_view kFuseFdPrefix = "fuse-";

// systemd's rule for FDNAME= and FileDescriptorName=: 1 to 255 printable
// ASCII characters, no ':' (the separator of LISTEN_FDNAMES).
absl::Status CheckFdName(std::string_view name);
// "fuse-<id_hex>".
std::string FuseFdName(const std::string& id_hex);

// What a process was passed with the LISTEN_FDS protocol, sorted by name.
struct PassedFds {
  std::optional<int> api;           // the Snapshots API socket
  std::optional<int> cri;           // the CRI image proxy socket
  std::map<std::string, int> fuse;  // image id hex -> stored /dev/fuse copy
  // Descriptors nobody uses (a second copy under one stored name): the caller
  // closes them.
  std::vector<std::pair<std::string, int>> unused;
};

// Reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (nullptr: unset).
// std::nullopt when LISTEN_FDS is unset (nothing passed: bind --address as
// usual). InvalidArgument naming the variable, its value and the fix when
// LISTEN_PID is missing, malformed or another process's, LISTEN_FDS is
// malformed or 0, LISTEN_FDNAMES does not have one valid name per
// descriptor, or not exactly one descriptor is the API socket.
absl::StatusOr<std::optional<PassedFds>> ParseListenFds(const char* listen_pid, const char* listen_fds,
                                                        const char* listen_fdnames, pid_t self);

// The sending side (sd_notify): datagrams to $NOTIFY_SOCKET (a path, or
// "@name" for the abstract namespace). Without a socket every call is a no-op
// that succeeds. Thread-safe (no state after construction).
class Notifier {
 public:
  // `notify_socket`: the value of NOTIFY_SOCKET (nullptr or "": disabled).
  explicit Notifier(const char* notify_socket);
  bool enabled() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  // One datagram; `fds` passed along (SCM_RIGHTS).
  absl::Status Send(std::string_view message, const std::vector<int>& fds = {}) const;
  // FDSTORE=1 / FDNAME=name with a copy of fd.
  absl::Status StoreFd(const std::string& name, int fd) const;
  // FDSTOREREMOVE=1 / FDNAME=name: the store closes its copies of that name.
  absl::Status RemoveFd(const std::string& name) const;

 private:
  std::string address_;
};

// One notification message: "KEY=VALUE" lines (systemd ignores keys it does
// not know; so do we).
struct NotifyMessage {
  bool store = false;   // FDSTORE=1
  bool remove = false;  // FDSTOREREMOVE=1
  std::string name;     // FDNAME= ("stored" when missing, as systemd)
};
// InvalidArgument for an invalid FDNAME or FDSTORE and FDSTOREREMOVE both.
absl::StatusOr<NotifyMessage> ParseNotifyMessage(std::string_view text);

// The receiving side, held by the `--supervise` parent: descriptors by name,
// at most `max` (like FileDescriptorStoreMax=). Single-threaded.
class FdStore {
 public:
  explicit FdStore(size_t max) : max_(max) {}
  ~FdStore();
  FdStore(const FdStore&) = delete;
  FdStore& operator=(const FdStore&) = delete;
  // Applies one message and takes ownership of `fds` (closed when not kept).
  // FDSTORE with one descriptor replaces the one stored under that name (a
  // mount made again gets a new connection under the old name); several
  // descriptors in one message are refused. FDSTOREREMOVE closes the name's
  // descriptor. Errors (returned, the store unchanged): descriptors without
  // FDSTORE=1, FDSTORE=1 without exactly one descriptor, the store full.
  absl::Status Apply(const NotifyMessage& m, std::vector<int> fds);
  // The stored descriptors, sorted by name.
  const std::map<std::string, int>& entries() const { return fds_; }
  void Clear();

 private:
  size_t max_;
  std::map<std::string, int> fds_;
};

// Receives one datagram from `sock` (a SOCK_DGRAM with SO_PASSCRED):
// its text, descriptors (close-on-exec) and the sender's pid (0 if unknown).
// NotFound when nothing is queued (non-blocking socket).
struct Received {
  std::string text;
  std::vector<int> fds;
  pid_t pid = 0;
};
absl::StatusOr<Received> ReceiveNotify(int sock);

// Binds a SOCK_DGRAM notification socket at `address` ("@name": abstract;
// else a path) with SO_PASSCRED, non-blocking and close-on-exec.
absl::StatusOr<int> BindNotifySocket(const std::string& address);

}  // namespace d4c::snap
