// The relay thread of one connection (h2_relay.h).
#include "h2_relay.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "d4c/base/strcat.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace {

constexpr size_t kMaxPending = 1 << 20;  // stop reading a side while this much waits for the other

// What waits to be written to one side.
struct Pending {
  std::string bytes;
  size_t off = 0;
  size_t size() const { return bytes.size() - off; }
  // Writes what it can; false on an error of the socket (the peer is gone).
  bool Flush(int fd) {
    while (size() > 0) {
      ssize_t n = send(fd, bytes.data() + off, size(), MSG_NOSIGNAL);
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      off += static_cast<size_t>(n);
    }
    bytes.clear();
    off = 0;
    return true;
  }
};

// The client has the GOAWAY and every answer. Closing at once could fail its
// write of a stream it opened before it read the GOAWAY (a broken pipe, which
// it would not retry), so: end our side, and read and drop what it still sends
// until it closes (grpc closes a connection that got a GOAWAY once its last
// call ended), 2 s at most.
void Linger(int client) {
  shutdown(client, SHUT_WR);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    pollfd p = {client, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    ssize_t n = recv(client, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<H2Relay>> H2Relay::Start(int client_fd, grpc::Server* server) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
    int e = errno;
    close(client_fd);
    return absl::ResourceExhaustedError(StrCat("socketpair for a relayed connection: ", std::strerror(e)));
  }
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    int e = errno;
    close(client_fd);
    close(sp[0]);
    close(sp[1]);
    return absl::ResourceExhaustedError(StrCat("eventfd for a relayed connection: ", std::strerror(e)));
  }
  int flags = fcntl(client_fd, F_GETFL);
  if (flags >= 0) fcntl(client_fd, F_SETFL, flags | O_NONBLOCK);
  std::unique_ptr<H2Relay> r(new H2Relay(client_fd, sp[0], wake));
  grpc::AddInsecureChannelFromFd(server, sp[1]);  // the server owns sp[1] from here
  return r;
}

H2Relay::H2Relay(int client, int server, int wake) : client_(client), server_(server), wake_(wake) {
  thread_ = std::thread([this] { Loop(); });
}

H2Relay::~H2Relay() {
  stop_ = true;
  Wake();
  if (thread_.joinable()) thread_.join();
  close(wake_);
}

void H2Relay::Wake() {
  uint64_t one = 1;
  if (write(wake_, &one, sizeof one) < 0 && errno != EAGAIN) spdlog::warn("relay wake-up: {}", std::strerror(errno));
}

void H2Relay::Drain() {
  drain_ = true;
  Wake();
}

void H2Relay::Loop() {
  H2Tracker t;
  Pending to_server, to_client;
  bool client_eof = false, server_eof = false, draining = false;
  std::string buf(64 << 10, '\0');
  for (;;) {
    if (stop_) break;
    if (drain_ && !draining) {
      draining = true;
      t.Drain(&to_client.bytes);
    }
    if (draining && t.Drained() && to_client.size() == 0) {
      Linger(client_);
      break;
    }
    if (client_eof && to_server.size() == 0) break;  // its last bytes reached the server
    if (server_eof && to_client.size() == 0) break;
    pollfd p[3] = {{client_eof ? -1 : client_, 0, 0}, {server_eof ? -1 : server_, 0, 0}, {wake_, POLLIN, 0}};
    if (to_server.size() < kMaxPending) p[0].events |= POLLIN;
    if (to_client.size() > 0) p[0].events |= POLLOUT;
    if (to_client.size() < kMaxPending) p[1].events |= POLLIN;
    if (to_server.size() > 0) p[1].events |= POLLOUT;
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("relay poll: {}", std::strerror(errno));
      break;
    }
    if (p[2].revents != 0) {
      uint64_t v;
      while (read(wake_, &v, sizeof v) > 0) {
      }
    }
    bool broken = false;
    // Client to server.
    if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = recv(client_, buf.data(), buf.size(), 0);
      if (n > 0) {
        if (auto st = t.FromClient(std::string_view(buf.data(), static_cast<size_t>(n)), &to_server.bytes); !st.ok()) {
          spdlog::warn("closing a connection: {}", std::string(st.message()));
          break;
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        client_eof = true;
        to_client = {};
      }
    }
    // Server to client.
    if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = recv(server_, buf.data(), buf.size(), 0);
      if (n > 0) {
        t.FromServer(std::string_view(buf.data(), static_cast<size_t>(n)), &to_client.bytes);
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        server_eof = true;
        to_server = {};
      }
    }
    if (!server_eof && !to_server.Flush(server_)) broken = true;
    if (!client_eof && !to_client.Flush(client_)) broken = true;
    if (broken) break;
  }
  close(client_);
  close(server_);
  done_.Notify();
}

}  // namespace d4c::snap
