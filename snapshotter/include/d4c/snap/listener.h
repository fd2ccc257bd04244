// Socket hand-over for the snapshotter: the listening socket outlives one
// snapshotter process, so containerd never sees `connection refused` while it
// restarts. Two ways to get such a socket:
//  * systemd socket activation (di3fs-snapshotter.socket): systemd binds the
//    socket and passes it with the LISTEN_FDS/LISTEN_PID protocol
//    (sd_listen_fds(3)), parsed without libsystemd (ParseListenFds,
//    fdstore.h, which also names the CRI proxy's socket and the stored
//    /dev/fuse copies);
//  * `snapshotter --supervise` (nodes without systemd): a small parent binds
//    the socket once and runs the real snapshotter as its child with the same
//    protocol, starting it again whenever it exits or dies.
// gRPC C++ cannot adopt a listening socket, so FdAcceptor accepts the
// connections itself and hands each one to the server
// (grpc::AddInsecureChannelFromFd).
#pragma once

#include <sys/types.h>

#include <cstddef>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
}

namespace d4c::snap {

class H2Relay;  // private (src/h2_relay.h)

// The first descriptor passed by the protocol (SD_LISTEN_FDS_START).
inline constexpr int kListenFdsStart = 3;

// Checks that `fd` is a listening AF_UNIX stream socket bound to `address`
// (the --address containerd's config names); FailedPrecondition otherwise.
absl::Status CheckListeningSocket(int fd, const std::string& address);

// Binds a unix stream socket at `address` (mode 0600, parent directory
// created) and listens on it. A socket file left by a dead process is
// replaced; one that still accepts connections is an error (another
// snapshotter serves it).
absl::StatusOr<int> ListenUnix(const std::string& address);

// Accepts connections on a listening socket on its own thread and hands each
// one to `server` (built without listening ports) through a relay that can
// drain it (h2_relay.h: a gRPC C++ server cancels calls that arrive while it
// shuts down, so the connections must be emptied before).
// Stop() stops accepting and returns once the thread is gone; connections not
// yet accepted stay queued in the socket for the next process.
// Drain(timeout) = Stop(), then every accepted connection is drained: its
// client gets a GOAWAY naming the last call the server got, calls it opens
// later are left to the client to send on a new connection (which waits in
// the socket), and the connection closes once the server has answered the
// calls it got. Returns the connections still open at the timeout; call
// server->Shutdown() after it. The destructor stops accepting and closes what
// is still open.
// Thread-safety: Stop() and Drain() may be called from any one thread (main's
// signal thread), not at the same time as the destructor; the relays list is
// guarded by mu_.
class FdAcceptor {
 public:
  FdAcceptor(int listen_fd, grpc::Server* server);
  ~FdAcceptor();
  FdAcceptor(const FdAcceptor&) = delete;
  FdAcceptor& operator=(const FdAcceptor&) = delete;
  void Stop();
  size_t Drain(absl::Duration timeout);

 private:
  void Loop();
  int listen_fd_;
  grpc::Server* server_;
  int wake_fd_;  // eventfd: Stop() writes it
  absl::Mutex mu_;
  std::vector<std::unique_ptr<H2Relay>> relays_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The most descriptors `--supervise` stores (systemd: FileDescriptorStoreMax=).
inline constexpr size_t kSuperviseFdStoreMax = 4096;

// `snapshotter --supervise`: binds `address` (ListenUnix) and, when not
// empty, `cri_address` (the --cri-image-proxy socket), then runs
// `child_argv` (argv[0]: the binary, exec'd by path on every start, so a
// replaced binary is picked up) with the LISTEN_FDS protocol: descriptor 3 is
// the Snapshots socket ("snapshotter"), 4 the CRI one ("cri-image-proxy")
// when bound, then every stored descriptor, LISTEN_FDNAMES naming each.
// It is also the child's descriptor store (fdstore.h): NOTIFY_SOCKET is set
// to an abstract datagram socket on which it takes FDSTORE=1 and
// FDSTOREREMOVE=1 messages from the snapshotters it started (others are
// dropped), keeping up to kSuperviseFdStoreMax descriptors across the child's
// restarts; they are closed when the supervisor stops.
// It starts the child again whenever it exits or is killed: at once, or
// after 0.1 s doubling up to 5 s while it crashes (fails on its own, not by
// a clean exit or SIGKILL/SIGTERM, within a second of its start).
// SIGTERM/SIGINT: forwarded to the child; once it has exited the sockets are
// removed and Supervise returns 0. SIGHUP: SIGTERM to the child, which is
// then started again (graceful restart, e.g. after an upgrade). The child
// gets SIGTERM if the supervisor dies. Call it before any thread is started.
// Returns the exit code for main (1 when a socket cannot be bound).
int Supervise(const std::string& address, const std::string& cri_address,
              const std::vector<std::string>& child_argv);

}  // namespace d4c::snap
