// One accepted gRPC connection relayed through a socketpair so that it can be
// drained before the server shuts down (why and how: h2_tracker.h).
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "h2_tracker.h"

namespace grpc {
class Server;
}

namespace d4c::snap {

// One accepted connection, relayed between the client and `server` (which
// gets one end of a socketpair) by its own thread, through an H2Tracker.
// Thread-safety: Drain(), WaitDone() and the destructor may be called from any
// thread (not at the same time as the destructor); the tracker, buffers and
// descriptors belong to the relay thread.
class H2Relay {
 public:
  // Takes `client_fd` (closed on error too).
  static absl::StatusOr<std::unique_ptr<H2Relay>> Start(int client_fd, grpc::Server* server);
  // Stops the thread if it still runs (a connection not drained just breaks)
  // and closes what is left open.
  ~H2Relay();
  H2Relay(const H2Relay&) = delete;
  H2Relay& operator=(const H2Relay&) = delete;

  // Asks the thread to drain (H2Tracker::Drain) and to close both sides once
  // the server has ended every stream it got and the client has the answers.
  void Drain();
  // True once the thread has closed the connection (drained, or a side
  // closed), by `deadline` at the latest.
  bool WaitDone(absl::Time deadline) { return done_.WaitForNotificationWithDeadline(deadline); }
  bool done() const { return done_.HasBeenNotified(); }

 private:
  H2Relay(int client, int server, int wake);
  void Loop();
  void Wake();

  const int client_, server_, wake_;  // owned; client_ and server_ closed by Loop() at its end
  std::atomic<bool> drain_{false};
  std::atomic<bool> stop_{false};
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace d4c::snap
