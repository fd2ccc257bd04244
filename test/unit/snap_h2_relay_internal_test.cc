// The graceful connection hand-over (snapshotter/src/h2_relay.h):
//  * H2Tracker on hand-made frames: what reaches the server and the client,
//    where the GOAWAY goes and which stream it names, when a connection is
//    drained; the same output when the bytes come one at a time;
//  * FdAcceptor::Drain with a real gRPC server and client: clients calling
//    without a pause while the server is replaced five times on the same
//    listening socket (as a snapshotter restart does) see no failed call.
#include "h2_relay.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "d4c/base/strcat.h"
#include "d4c/snap/listener.h"
#include "k8s/runtime/v1/api.grpc.pb.h"

using namespace d4c;
using namespace d4c::snap;
namespace fs = std::filesystem;
namespace v1 = runtime::v1;

namespace {

const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload = "") {
  std::string f;
  f.push_back(static_cast<char>(payload.size() >> 16));
  f.push_back(static_cast<char>(payload.size() >> 8));
  f.push_back(static_cast<char>(payload.size()));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  f.push_back(static_cast<char>(stream >> 24));
  f.push_back(static_cast<char>(stream >> 16));
  f.push_back(static_cast<char>(stream >> 8));
  f.push_back(static_cast<char>(stream));
  return f + payload;
}
std::string Settings() { return Frame(4, 0, 0, std::string(6, '\0')); }
std::string Headers(uint32_t s, uint8_t flags = 0x4) { return Frame(1, flags, s, "hdrs"); }
std::string Data(uint32_t s, uint8_t flags = 0) { return Frame(0, flags, s, "payload"); }

}  // namespace

TEST_CASE("H2Tracker passes everything on until a drain") {
  H2Tracker t;
  std::string to_server, to_client;
  std::string c = kPreface + Settings() + Headers(1) + Data(1, 1) + Headers(3) + Data(3, 1);
  REQUIRE(t.FromClient(c, &to_server).ok());
  CHECK(to_server == c);
  std::string s = Settings() + Headers(1) + Data(1) + Headers(1, 0x5);  // stream 1 answered, 3 not
  t.FromServer(s, &to_client);
  CHECK(to_client == s);
  CHECK(t.open_streams() == 1);
  CHECK(!t.Drained());
}

TEST_CASE("H2Tracker: the GOAWAY names the last stream the server got, and newer streams never reach it") {
  H2Tracker t;
  std::string to_server, to_client;
  REQUIRE(t.FromClient(kPreface + Settings() + Headers(1) + Data(1, 1) + Headers(3) + Data(3, 1), &to_server).ok());
  t.FromServer(Settings() + Headers(1) + Data(1) + Headers(1, 0x5), &to_client);
  to_client.clear();
  to_server.clear();

  t.Drain(&to_client);  // the server's side is between frames: at once
  CHECK(to_client == H2Tracker::Goaway(3));
  CHECK(t.last_stream() == 3);
  CHECK(!t.Drained());  // stream 3 is not answered yet

  // The client opened stream 5 before it read the GOAWAY: dropped, with its
  // data; its keepalive PING (stream 0) and frames of stream 3 go on.
  std::string ping = Frame(6, 0, 0, std::string(8, 'p'));
  REQUIRE(t.FromClient(Headers(5) + Data(5, 1) + ping + Frame(8, 0, 3, "wind"), &to_server).ok());
  CHECK(to_server == ping + Frame(8, 0, 3, "wind"));

  to_client.clear();
  t.FromServer(Headers(3) + Data(3), &to_client);
  CHECK(!t.Drained());
  t.FromServer(Headers(3, 0x5), &to_client);  // trailers end stream 3
  CHECK(t.Drained());
  CHECK(to_client == Headers(3) + Data(3) + Headers(3, 0x5));
}

TEST_CASE("H2Tracker: a drain in the middle of a server frame waits for its end") {
  H2Tracker t;
  std::string to_server, to_client;
  REQUIRE(t.FromClient(kPreface + Settings() + Headers(1) + Data(1, 1), &to_server).ok());
  std::string d = Data(1);
  t.FromServer(Settings() + d.substr(0, 11), &to_client);
  to_client.clear();
  t.Drain(&to_client);
  CHECK(to_client.empty());
  t.FromServer(d.substr(11), &to_client);
  CHECK(to_client == d.substr(11) + H2Tracker::Goaway(1));
  t.FromServer(Frame(3, 0, 1, std::string(4, '\0')), &to_client);  // RST_STREAM ends it too
  CHECK(t.Drained());
}

TEST_CASE("H2Tracker: no GOAWAY before the server's SETTINGS, and a header block ends with its CONTINUATION") {
  H2Tracker t;
  std::string to_server, to_client;
  REQUIRE(t.FromClient(kPreface + Settings() + Headers(1) + Data(1, 1), &to_server).ok());
  t.Drain(&to_client);
  CHECK(to_client.empty());  // the server has not sent anything yet
  t.FromServer(Settings(), &to_client);
  CHECK(to_client == Settings() + H2Tracker::Goaway(1));
  t.FromServer(Headers(1, 0x1), &to_client);  // END_STREAM without END_HEADERS
  CHECK(!t.Drained());
  t.FromServer(Frame(9, 0x4, 1, "more"), &to_client);
  CHECK(t.Drained());
}

TEST_CASE("H2Tracker: the same result byte by byte") {
  std::string c = kPreface + Settings() + Headers(1) + Data(1, 1) + Headers(3) + Data(3, 1);
  std::string s = Settings() + Headers(1) + Data(1) + Headers(1, 0x5);
  std::string late_c = Headers(5) + Data(5, 1) + Frame(3, 0, 3, std::string(4, '\0'));
  H2Tracker whole, bytes;
  std::string ws, wc, bs, bc;
  REQUIRE(whole.FromClient(c, &ws).ok());
  whole.FromServer(s, &wc);
  whole.Drain(&wc);
  REQUIRE(whole.FromClient(late_c, &ws).ok());
  for (char ch : c) REQUIRE(bytes.FromClient(std::string(1, ch), &bs).ok());
  for (char ch : s) bytes.FromServer(std::string(1, ch), &bc);
  bytes.Drain(&bc);
  for (char ch : late_c) REQUIRE(bytes.FromClient(std::string(1, ch), &bs).ok());
  CHECK(bs == ws);
  CHECK(bc == wc);
  CHECK(whole.Drained());  // stream 3 reset by the client
  CHECK(bytes.Drained());
}

TEST_CASE("H2Tracker: a client that does not speak HTTP/2 is refused") {
  H2Tracker t;
  std::string to_server;
  auto st = t.FromClient("GET / HTTP/1.1\r\n\r\n", &to_server);
  REQUIRE(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("HTTP/2 connection preface"));
  H2Tracker split;
  CHECK(split.FromClient(kPreface.substr(0, 5), &to_server).ok());
  CHECK(!split.FromClient("X", &to_server).ok());
}

namespace {

// Answers ImageStatus after 5 ms, so that calls are in flight when a drain
// starts; counts the calls it answered.
class SlowImages final : public v1::ImageService::Service {
 public:
  grpc::Status ImageStatus(grpc::ServerContext*, const v1::ImageStatusRequest* req,
                           v1::ImageStatusResponse* resp) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    resp->mutable_image()->set_id(req->image().image());
    ++answered;
    return grpc::Status::OK;
  }
  std::atomic<int> answered{0};
};

// One "snapshotter process": a server without ports fed by an FdAcceptor on
// the shared listening socket, stopped as main() stops it.
struct Snapshotter {
  explicit Snapshotter(int listen_fd) {
    grpc::ServerBuilder b;
    b.RegisterService(&service);
    server = b.BuildAndStart();
    REQUIRE(server);
    acceptor = std::make_unique<FdAcceptor>(listen_fd, server.get());
  }
  // Drain, then shut down; returns the connections still open at the drain's timeout.
  size_t Stop() {
    size_t open = acceptor->Drain(absl::Seconds(10));
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server->Wait();
    acceptor.reset();
    return open;
  }
  SlowImages service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<FdAcceptor> acceptor;
};

}  // namespace

TEST_CASE("FdAcceptor::Drain: replacing the server under steady calls fails none") {
  auto dir = fs::temp_directory_path() / StrCat("d4c-h2relay-test-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string sock = (dir / "s.sock").string();
  auto lfd = ListenUnix(sock);
  REQUIRE(lfd.ok());

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      // One channel per client thread, kept across the restarts as
      // containerd keeps its connection to the snapshotter.
      auto stub = v1::ImageService::NewStub(grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials()));
      for (int n = 0; !stop; ++n) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::ImageStatusRequest req;
        req.mutable_image()->set_image(StrCat("img-", i, "-", n));
        v1::ImageStatusResponse resp;
        auto s = stub->ImageStatus(&ctx, req, &resp);
        if (s.ok() && resp.image().id() == req.image().image()) {
          ++ok;
        } else {
          ++failed;
          std::lock_guard<std::mutex> l(mu);
          if (first_error.empty()) first_error = StrCat(static_cast<int>(s.error_code()), ": ", s.error_message());
        }
      }
    });
  }

  int answered_by_all = 0;
  for (int generation = 0; generation < 6; ++generation) {
    Snapshotter s(*lfd);
    int before = ok;
    for (int w = 0; w < 400 && ok < before + 40; ++w) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(ok >= before + 40);  // this generation served calls
    CHECK(s.Stop() == 0);
    answered_by_all += s.service.answered;
    // No server for a moment: new connections wait in the socket.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  // The clients' last calls need a server to end.
  Snapshotter last(*lfd);
  for (auto& c : clients) c.join();
  last.Stop();
  close(*lfd);
  fs::remove_all(dir);

  INFO("first failure: " << first_error);
  CHECK(failed == 0);
  CHECK(ok > 240);
  CHECK(answered_by_all + last.service.answered == ok + failed);  // no call answered twice or lost
}
