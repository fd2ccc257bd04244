// delay_relay LISTEN_PORT TARGET_IP TARGET_PORT ONE_WAY_MS
//
// A TCP relay that adds a fixed one-way delay to both directions: it listens
// on 127.0.0.1:LISTEN_PORT, connects each accepted connection to
// TARGET_IP:TARGET_PORT and forwards every byte ONE_WAY_MS milliseconds after
// it read it, in order (one FIFO of time-stamped chunks per direction; a
// half-close is forwarded with the same delay). The kernel this benchmark
// runs on has no netem qdisc, so test/bench/cri_edge_bench.sh gives its link
// the round-trip time with this relay and the rate with tbf on a veth pair.
//
// The client's connect() completes at once on loopback, where a real link
// costs one round trip: the relay holds the client's first bytes until
// 3 x ONE_WAY_MS after accept (the handshake, then the request's own
// one-way delay), so a request on a new connection is answered 4 x ONE_WAY_MS
// later, as on the real link, and one on a kept-alive connection 2 x ONE_WAY_MS
// later.
//
// Each direction buffers at most 8 MiB; beyond that it stops reading its
// source (TCP flow control then slows the sender). Single thread, epoll.
// Diagnostics go to stderr; it runs until killed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kMaxQueued = 8u << 20;
constexpr size_t kReadChunk = 64u << 10;

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

struct Chunk {
  int64_t due_ns;
  std::string data;  // empty: end of stream (forward a half-close)
};

struct Conn;

// One direction: bytes read from `src` wait in `q` until due, then go to `dst`.
struct Dir {
  int src = -1;
  int dst = -1;
  std::deque<Chunk> q;
  size_t off = 0;       // bytes of q.front() already written
  size_t queued = 0;    // bytes in q
  bool src_eof = false;
  bool done = false;    // half-close forwarded
  int64_t hold_until = 0;  // no byte leaves before this (handshake emulation)
};

struct Conn {
  int client = -1;
  int server = -1;
  bool connected = false;  // non-blocking connect to the server finished
  Dir up;    // client -> server
  Dir down;  // server -> client
};

int g_ep = -1;
int64_t g_delay_ns = 0;
std::unordered_map<int, std::shared_ptr<Conn>> g_by_fd;

void SetNonBlock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void CloseConn(const std::shared_ptr<Conn>& c) {
  for (int fd : {c->client, c->server}) {
    if (fd < 0) continue;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, fd, nullptr);
    g_by_fd.erase(fd);
    close(fd);
  }
  c->client = c->server = -1;
}

// Wanted epoll events of fd: IN while its outgoing direction may read, OUT
// while its incoming direction has a due chunk it could not write (or while
// connecting).
void UpdateEvents(const std::shared_ptr<Conn>& c, int fd, int64_t now) {
  if (fd < 0) return;
  uint32_t ev = 0;
  const Dir& out = fd == c->client ? c->up : c->down;   // fd is the source
  const Dir& in = fd == c->client ? c->down : c->up;    // fd is the destination
  bool can_read = !out.src_eof && out.queued < kMaxQueued && (fd == c->client || c->connected);
  if (can_read) ev |= EPOLLIN;
  if (fd == c->server && !c->connected) ev |= EPOLLOUT;
  if (!in.q.empty() && in.q.front().due_ns <= now && (fd == c->client || c->connected)) ev |= EPOLLOUT;
  epoll_event e{};
  e.events = ev;
  e.data.fd = fd;
  epoll_ctl(g_ep, EPOLL_CTL_MOD, fd, &e);
}

// Reads what src has into d.q. Returns false when the connection must close.
bool ReadSide(Dir& d, int64_t now) {
  while (!d.src_eof && d.queued < kMaxQueued) {
    std::string buf(kReadChunk, '\0');
    ssize_t n = read(d.src, buf.data(), buf.size());
    if (n > 0) {
      buf.resize(static_cast<size_t>(n));
      int64_t due = now + g_delay_ns;
      if (due < d.hold_until) due = d.hold_until;
      d.queued += buf.size();
      d.q.push_back(Chunk{due, std::move(buf)});
    } else if (n == 0) {
      d.src_eof = true;
      int64_t due = now + g_delay_ns;
      if (due < d.hold_until) due = d.hold_until;
      d.q.push_back(Chunk{due, std::string()});
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    } else {
      return false;
    }
  }
  return true;
}

// Writes the due chunks of d. Returns false when the connection must close.
bool WriteSide(Dir& d, int64_t now) {
  while (!d.q.empty() && d.q.front().due_ns <= now) {
    Chunk& ch = d.q.front();
    if (ch.data.empty()) {
      shutdown(d.dst, SHUT_WR);
      d.done = true;
      d.q.pop_front();
      continue;
    }
    ssize_t n = write(d.dst, ch.data.data() + d.off, ch.data.size() - d.off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return false;
    }
    d.off += static_cast<size_t>(n);
    if (d.off == ch.data.size()) {
      d.queued -= ch.data.size();
      d.off = 0;
      d.q.pop_front();
    }
  }
  return true;
}

void Pump(const std::shared_ptr<Conn>& c, int64_t now) {
  if (c->client < 0) return;
  bool ok = ReadSide(c->up, now);
  if (ok && c->connected) ok = ReadSide(c->down, now);
  if (ok && c->connected) ok = WriteSide(c->up, now);
  if (ok) ok = WriteSide(c->down, now);
  if (!ok || (c->up.done && c->down.done)) {
    CloseConn(c);
    return;
  }
  UpdateEvents(c, c->client, now);
  UpdateEvents(c, c->server, now);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: delay_relay LISTEN_PORT TARGET_IP TARGET_PORT ONE_WAY_MS\n");
    return 2;
  }
  int lport = std::atoi(argv[1]);
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[3])));
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
    std::fprintf(stderr, "delay_relay: %s is not an IPv4 address\n", argv[2]);
    return 2;
  }
  g_delay_ns = int64_t{std::atoi(argv[4])} * 1000000;
  signal(SIGPIPE, SIG_IGN);  // a peer that went away is an EPIPE from write()

  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in la{};
  la.sin_family = AF_INET;
  la.sin_port = htons(static_cast<uint16_t>(lport));
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, reinterpret_cast<sockaddr*>(&la), sizeof la) != 0 || listen(l, 128) != 0) {
    std::fprintf(stderr, "delay_relay: listen on 127.0.0.1:%d: %s (choose another port)\n", lport,
                 std::strerror(errno));
    return 1;
  }
  SetNonBlock(l);
  g_ep = epoll_create1(0);
  epoll_event le{};
  le.events = EPOLLIN;
  le.data.fd = l;
  epoll_ctl(g_ep, EPOLL_CTL_ADD, l, &le);
  std::fprintf(stderr, "delay_relay: 127.0.0.1:%d -> %s:%s, %s ms each way\n", lport, argv[2], argv[3], argv[4]);

  std::vector<epoll_event> evs(256);
  for (;;) {
    // sleep until the earliest queued chunk is due
    int64_t now = NowNs();
    int64_t next = -1;
    for (auto& [fd, c] : g_by_fd) {
      if (fd != c->client) continue;
      for (Dir* d : {&c->up, &c->down}) {
        if (!d->q.empty() && (next < 0 || d->q.front().due_ns < next)) next = d->q.front().due_ns;
      }
    }
    int timeout = -1;
    if (next >= 0) timeout = next <= now ? 0 : static_cast<int>((next - now + 999999) / 1000000);
    int n = epoll_wait(g_ep, evs.data(), static_cast<int>(evs.size()), timeout);
    if (n < 0 && errno != EINTR) {
      std::perror("delay_relay: epoll_wait");
      return 1;
    }
    now = NowNs();
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == l) {
        for (;;) {
          int cfd = accept4(l, nullptr, nullptr, SOCK_NONBLOCK);
          if (cfd < 0) break;
          int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          if (connect(sfd, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0 && errno != EINPROGRESS) {
            std::fprintf(stderr, "delay_relay: connect to %s:%s: %s\n", argv[2], argv[3], std::strerror(errno));
            close(sfd);
            close(cfd);
            continue;
          }
          auto c = std::make_shared<Conn>();
          c->client = cfd;
          c->server = sfd;
          c->up = Dir{cfd, sfd, {}, 0, 0, false, false, now + 3 * g_delay_ns};
          c->down = Dir{sfd, cfd, {}, 0, 0, false, false, 0};
          g_by_fd[cfd] = c;
          g_by_fd[sfd] = c;
          epoll_event e{};
          e.events = EPOLLIN;
          e.data.fd = cfd;
          epoll_ctl(g_ep, EPOLL_CTL_ADD, cfd, &e);
          e.events = EPOLLOUT;
          e.data.fd = sfd;
          epoll_ctl(g_ep, EPOLL_CTL_ADD, sfd, &e);
        }
        continue;
      }
      auto it = g_by_fd.find(fd);
      if (it == g_by_fd.end()) continue;
      std::shared_ptr<Conn> c = it->second;
      if (fd == c->server && !c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          std::fprintf(stderr, "delay_relay: connect to %s:%s: %s\n", argv[2], argv[3], std::strerror(err));
          CloseConn(c);
          continue;
        }
        c->connected = true;
      }
      Pump(c, now);
    }
    // chunks that came due without an event
    std::vector<std::shared_ptr<Conn>> all;
    for (auto& [fd, c] : g_by_fd) {
      if (fd == c->client) all.push_back(c);
    }
    for (auto& c : all) Pump(c, now);
  }
}
