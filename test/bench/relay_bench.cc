// relay_bench: what the drain relay (snapshotter/src/h2_relay.h) costs a gRPC
// call. The same server (a CRI ImageService answering at once) is reached on a
// unix socket served by gRPC itself ("direct") and through FdAcceptor's relay
// ("relay"), alternating, in one run:
//   * sequential small calls (ImageStatus, ~100 B each way): microseconds per call;
//   * 4 client threads of small calls: calls per second;
//   * ListImages answers of ~1 MiB: MB/s.
//
//   build/test/relay_bench [ROUNDS]      (prints a Markdown table)
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "d4c/base/strcat.h"
#include "d4c/snap/listener.h"
#include "k8s/runtime/v1/api.grpc.pb.h"

namespace fs = std::filesystem;
namespace v1 = runtime::v1;
using Clock = std::chrono::steady_clock;

namespace {

class Images final : public v1::ImageService::Service {
 public:
  grpc::Status ImageStatus(grpc::ServerContext*, const v1::ImageStatusRequest* req,
                           v1::ImageStatusResponse* resp) override {
    resp->mutable_image()->set_id(req->image().image());
    return grpc::Status::OK;
  }
  grpc::Status ListImages(grpc::ServerContext*, const v1::ListImagesRequest*, v1::ListImagesResponse* resp) override {
    for (int i = 0; i < 4096; ++i) resp->add_images()->set_id(std::string(256, 'a' + i % 26));
    return grpc::Status::OK;
  }
};

struct Result {
  double us_per_call, calls_per_s, mb_per_s;
};

double Seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

Result Measure(const std::string& target) {
  auto stub = v1::ImageService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  auto call = [&](v1::ImageService::Stub* s) {
    grpc::ClientContext ctx;
    v1::ImageStatusRequest req;
    req.mutable_image()->set_image("registry.example/app:v1");
    v1::ImageStatusResponse resp;
    if (!s->ImageStatus(&ctx, req, &resp).ok()) std::abort();
  };
  for (int i = 0; i < 200; ++i) call(stub.get());  // connection up, warm
  Result r{};
  const int n = 5000;
  auto t = Clock::now();
  for (int i = 0; i < n; ++i) call(stub.get());
  r.us_per_call = Seconds(t) * 1e6 / n;

  std::atomic<int> done{0};
  std::vector<std::thread> th;
  t = Clock::now();
  for (int k = 0; k < 4; ++k) {
    th.emplace_back([&] {
      auto s = v1::ImageService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
      for (int i = 0; i < n / 2; ++i) call(s.get());
      done += n / 2;
    });
  }
  for (auto& x : th) x.join();
  r.calls_per_s = done / Seconds(t);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto big = v1::ImageService::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  size_t bytes = 0;
  t = Clock::now();
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    v1::ListImagesRequest req;
    v1::ListImagesResponse resp;
    if (!big->ListImages(&ctx, req, &resp).ok()) std::abort();
    bytes += resp.ByteSizeLong();
  }
  r.mb_per_s = bytes / Seconds(t) / 1e6;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  auto dir = fs::temp_directory_path() / d4c::StrCat("d4c-relay-bench-", getpid());
  fs::create_directories(dir);
  std::string direct_sock = (dir / "direct.sock").string(), relay_sock = (dir / "relay.sock").string();

  Images direct_service, relay_service;
  grpc::ServerBuilder db;
  db.AddListeningPort("unix:" + direct_sock, grpc::InsecureServerCredentials());
  db.RegisterService(&direct_service);
  auto direct = db.BuildAndStart();
  grpc::ServerBuilder rb;
  rb.RegisterService(&relay_service);
  auto relayed = rb.BuildAndStart();
  auto lfd = d4c::snap::ListenUnix(relay_sock);
  if (!direct || !relayed || !lfd.ok()) {
    std::fprintf(stderr, "relay_bench: cannot start the servers\n");
    return 1;
  }
  d4c::snap::FdAcceptor acceptor(*lfd, relayed.get());

  std::vector<Result> d, r;
  for (int i = 0; i < rounds; ++i) {
    d.push_back(Measure("unix:" + direct_sock));
    r.push_back(Measure("unix:" + relay_sock));
  }
  auto median = [](std::vector<Result> v, double Result::*f) {
    std::sort(v.begin(), v.end(), [f](const Result& a, const Result& b) { return a.*f < b.*f; });
    return v[v.size() / 2].*f;
  };
  std::printf("| measure (median of %d rounds, alternating) | direct | relay | relay ÷ direct |\n|---|---:|---:|---:|\n",
              rounds);
  auto row = [&](const char* name, double Result::*f, const char* fmt) {
    double a = median(d, f), b = median(r, f);
    std::printf("| %s | ", name);
    std::printf(fmt, a);
    std::printf(" | ");
    std::printf(fmt, b);
    std::printf(" | %.2f× |\n", b / a);
  };
  row("sequential ImageStatus, µs per call", &Result::us_per_call, "%.1f");
  row("4 threads of ImageStatus, calls/s", &Result::calls_per_s, "%.0f");
  row("ListImages of 1.1 MB, MB/s", &Result::mb_per_s, "%.0f");

  acceptor.Drain(absl::Seconds(5));
  relayed->Shutdown();
  direct->Shutdown();
  close(*lfd);
  fs::remove_all(dir);
  return 0;
}
