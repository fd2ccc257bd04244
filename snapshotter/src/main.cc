// snapshotter: containerd proxy snapshotter "di3fs" (gRPC on a unix socket).
//   snapshotter [--root /var/lib/di3fs] [--address /run/di3fs/snapshotter.sock] [--di3fs PATH]
//               [--hosts-dir /etc/containerd/certs.d] [--no-cri-deltas] [--supervise]
//               [--cri-image-proxy SOCKET [--cri-upstream /run/containerd/containerd.sock]]
// containerd config:  [proxy_plugins.di3fs] type = "snapshot" address = "<socket>"
// The socket is bound by the snapshotter itself, or passed to it (LISTEN_FDS:
// systemd's di3fs-snapshotter.socket or the --supervise parent), so that it
// outlives a restart, as is the --cri-image-proxy socket; the di3fs
// /dev/fuse copies go to a descriptor store there and come back the same
// way: see listener.h, fdstore.h and docs/operations.md.
#include <grpcpp/grpcpp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <clocale>
#include <filesystem>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "d4c/registry/hosts.h"
#include "d4c/snap/cri_keychain.h"
#include "d4c/snap/fdstore.h"
#include "d4c/snap/listener.h"
#include "d4c/snap/remote.h"
#include "d4c/snap/service.h"
#include "d4c/snap/snapshotter.h"
#include "d4c/base/strcat.h"
#include "spdlog/spdlog.h"

namespace {

std::string DefaultDi3fs() {
  // Prefer a di3fs next to this binary's build tree or install dir, then PATH.
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto cand : {self.parent_path() / "di3fs", self.parent_path().parent_path() / "fs" / "di3fs"}) {
      if (access(cand.c_str(), X_OK) == 0) return cand.string();
    }
  }
  return "di3fs";
}

}  // namespace

int main(int argc, char** argv) {
  std::setlocale(LC_ALL, "C");
  CLI::App app{"di3fs snapshotter: containerd proxy snapshotter serving cdimg images through di3fs"};
  d4c::snap::Snapshotter::Options opt;
  std::string address = "/run/di3fs/snapshotter.sock";
  std::string containerd_address;
  std::string log_level = "info";
  opt.di3fs = DefaultDi3fs();
  app.add_option("--root", opt.root, "State directory (metadata, image store, mounts)")->capture_default_str();
  app.add_option("--address", address, "Unix socket to serve the Snapshots API on")->capture_default_str();
  app.add_option("--di3fs", opt.di3fs, "di3fs binary")->capture_default_str();
  app.add_option("--cache-size", opt.cache_size,
                 "di3fs content cache budget in bytes, for all images together (ROOT/cache/.budget; "
                 "daemons adopted after a restart apply it too)")
      ->capture_default_str();
  opt.compaction.max_depth = 4;
  opt.compaction.max_waste = 0.3;
  app.add_option("--compact-depth", opt.compaction.max_depth,
                 "Compact an image whose chain holds more deltas than this (0: never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--compact-waste", opt.compaction.max_waste,
                 "Compact an image when images only its chain keeps exceed this fraction of its full image (0: never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--compact-level", opt.compaction.zstd_level,
                 "zstd level of the files a compaction recompresses (19: the full image convert writes; 12: ~13x faster, ~10% larger)")
      ->capture_default_str()->check(CLI::Range(1, 22));
  app.add_option("--compact-threads", opt.compaction.threads, "Threads of one (background, niced) compaction")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--containerd-address", containerd_address, "Accepted for D4C compatibility (unused)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  std::string hosts_dir = d4c::registry::kDefaultHostsDir;
  bool no_cri_deltas = false;
  app.add_option("--hosts-dir", hosts_dir,
                 "containerd's registry configuration (DIR/HOST/hosts.toml, or docker's certs.d files) for the "
                 "registries CRI pulls come from; credentials from docker's config.json")
      ->capture_default_str();
  app.add_flag("--no-cri-deltas", no_cri_deltas,
               "Never look for cdimgs when containerd unpacks an image (CRI pulls fetch every layer)");
  std::string cri_proxy, cri_upstream = "/run/containerd/containerd.sock";
  app.add_option("--cri-image-proxy", cri_proxy,
                 "Also serve the CRI v1 ImageService on this unix socket (kubelet --image-service-endpoint="
                 "unix://SOCKET), forwarding every call to --cri-upstream; the auth of each PullImage (an image "
                 "pull secret) is kept in memory for 10 minutes for that image's registry and repository, and used "
                 "before docker's config.json");
  app.add_option("--cri-upstream", cri_upstream, "containerd's CRI socket the --cri-image-proxy forwards to")
      ->capture_default_str();
  bool supervise = false;
  app.add_flag("--supervise", supervise,
               "Bind --address (and --cri-image-proxy) once and run the snapshotter as a child process that is "
               "started again whenever it exits or dies (the sockets stay: connections wait instead of being "
               "refused), keeping the di3fs FUSE connections it stores (kill -9 of the snapshotter and a di3fs "
               "together is survived). SIGTERM stops both, SIGHUP restarts the child. Not needed under systemd "
               "(di3fs-snapshotter.socket, FileDescriptorStoreMax=)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ snapshotter: %v");

  if (supervise) {
    std::vector<std::string> child_argv;
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);  // by path: an upgrade's new binary
    child_argv.push_back(ec ? std::string(argv[0]) : self.string());
    for (int i = 1; i < argc; ++i) {
      if (std::string_view(argv[i]) != "--supervise") child_argv.push_back(argv[i]);
    }
    return d4c::snap::Supervise(address, cri_proxy, child_argv);
  }

  // Descriptors passed by systemd or the supervisor (LISTEN_FDS: the sockets
  // and the stored /dev/fuse copies, fdstore.h); checked before anything
  // else starts, and hidden from the di3fs daemons we spawn, as is the
  // descriptor store's NOTIFY_SOCKET.
  auto passed = d4c::snap::ParseListenFds(getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getenv("LISTEN_FDNAMES"),
                                          getpid());
  auto fdstore = std::make_shared<const d4c::snap::Notifier>(getenv("NOTIFY_SOCKET"));
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  unsetenv("NOTIFY_SOCKET");
  if (!passed.ok()) {
    spdlog::critical("{}", std::string(passed.status().message()));
    return 1;
  }
  d4c::snap::PassedFds given = passed->value_or(d4c::snap::PassedFds{});
  for (const auto& [name, fd] : given.unused) {
    spdlog::warn("descriptor store: a second descriptor named {} was passed; closed", name);
    close(fd);
  }
  for (const auto& [id, fd] : given.fuse) fcntl(fd, F_SETFD, FD_CLOEXEC);
  int listen_fd = given.api.value_or(-1);
  if (listen_fd >= 0) {
    if (auto st = d4c::snap::CheckListeningSocket(listen_fd, address); !st.ok()) {
      spdlog::critical("{}", std::string(st.message()));
      return 1;
    }
    fcntl(listen_fd, F_SETFD, FD_CLOEXEC);
  }
  int cri_fd = given.cri.value_or(-1);
  if (cri_fd >= 0) {
    if (cri_proxy.empty()) {
      spdlog::critical("the CRI image proxy's socket ({}) was passed but --cri-image-proxy is not given: add "
                       "--cri-image-proxy SOCKET to the command, or disable the proxy's socket unit",
                       d4c::snap::kCriSocketName);
      return 1;
    }
    if (auto st = d4c::snap::CheckListeningSocket(cri_fd, cri_proxy); !st.ok()) {
      spdlog::critical("--cri-image-proxy: {}", std::string(st.message()));
      return 1;
    }
    fcntl(cri_fd, F_SETFD, FD_CLOEXEC);
  }

  // Block the stop signals in every thread; one thread waits for them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (geteuid() != 0) spdlog::warn("not running as root: overlay and FUSE mounts will fail");
  opt.address = address;
  opt.fdstore = fdstore;
  opt.passed_fuse = std::move(given.fuse);
  d4c::snap::CriKeychain keychain;
  d4c::snap::CredentialLookup from_cri;
  if (!cri_proxy.empty()) from_cri = [&keychain](const d4c::registry::ImageReference& r) { return keychain.Get(r); };
  if (!no_cri_deltas)
    opt.remote = d4c::snap::NewRegistryRemote(d4c::snap::HostsDirRegistries(hosts_dir, 2, from_cri));
  auto sn = d4c::snap::Snapshotter::Open(opt);
  if (!sn.ok()) {
    spdlog::critical("cannot open {}: {}", opt.root, d4c::Msg(sn.status().message()));
    return 1;
  }
  auto service = d4c::snap::MakeSnapshotsService(sn->get());
  grpc::ServerBuilder builder;
  if (listen_fd < 0) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(address).parent_path(), ec);
    unlink(address.c_str());  // a stale socket of a previous run
    builder.AddListeningPort("unix:" + address, grpc::InsecureServerCredentials());
  }  // else: no port; FdAcceptor hands the passed socket's connections over
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  mode_t old = umask(0177);  // socket created 0600
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old);
  if (!server) {
    spdlog::critical("cannot listen on unix:{}", address);
    return 1;
  }
  std::unique_ptr<d4c::snap::FdAcceptor> acceptor;
  if (listen_fd < 0) {
    chmod(address.c_str(), 0600);
  } else {
    acceptor = std::make_unique<d4c::snap::FdAcceptor>(listen_fd, server.get());
  }
  // The CRI image proxy: its own server and socket (no Snapshots API there).
  std::unique_ptr<grpc::Service> cri_service;
  std::unique_ptr<grpc::Server> cri_server;
  std::unique_ptr<d4c::snap::FdAcceptor> cri_acceptor;
  if (!cri_proxy.empty()) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);  // ListImages of a node with many images
    cri_service = d4c::snap::MakeCriImageProxy(
        grpc::CreateCustomChannel("unix:" + cri_upstream, grpc::InsecureChannelCredentials(), args), &keychain);
    grpc::ServerBuilder cb;
    if (cri_fd < 0) {
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(cri_proxy).parent_path(), ec);
      unlink(cri_proxy.c_str());  // a stale socket of a previous run
      cb.AddListeningPort("unix:" + cri_proxy, grpc::InsecureServerCredentials());
    }  // else: a passed socket, accepted by its own FdAcceptor
    cb.RegisterService(cri_service.get());
    cb.SetMaxReceiveMessageSize(16 << 20);
    mode_t old_mask = umask(0177);
    cri_server = cb.BuildAndStart();
    umask(old_mask);
    if (!cri_server) {
      spdlog::critical("cannot listen on unix:{} (--cri-image-proxy)", cri_proxy);
      server->Shutdown();
      return 1;
    }
    if (cri_fd < 0) {
      chmod(cri_proxy.c_str(), 0600);
    } else {
      cri_acceptor = std::make_unique<d4c::snap::FdAcceptor>(cri_fd, cri_server.get());
    }
    spdlog::info("CRI image proxy on unix:{}{} -> unix:{} (pull secrets kept in memory 10 min)", cri_proxy,
                 cri_fd < 0 ? "" : " (passed socket)", cri_upstream);
  }
  spdlog::info("serving on unix:{}{} root={} di3fs={} pid={} cri-deltas={} descriptor-store={}", address,
               listen_fd < 0 ? "" : " (passed socket)", opt.root, opt.di3fs, getpid(),
               no_cri_deltas ? "off" : "on (registries from " + hosts_dir + ")",
               fdstore->enabled() ? fdstore->address() : "none");

  // Notified when the server stops; the reaper wakes at once (a restart's gap,
  // in which containerd's new connections wait, is not made longer by it).
  absl::Notification stopping;
  std::thread reaper([&] {
    do {
      (*sn)->Reap();
    } while (!stopping.WaitForNotificationWithTimeout(absl::Milliseconds(500)));
  });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop, &sig);
    spdlog::info("signal {}: stopping (di3fs mounts stay for running containers)", sig);
    auto t0 = absl::Now();
    // A passed socket: stop accepting first; connections not accepted yet
    // wait in the socket for the next process. Then drain the accepted ones
    // (FdAcceptor::Drain: the clients send new calls on new connections,
    // which wait in the socket, and the calls in flight finish) before the
    // server shuts down, cancelling what is left after 5 s.
    std::thread cri_drain;
    if (cri_acceptor) cri_drain = std::thread([&] { cri_acceptor->Drain(absl::Seconds(5)); });
    if (acceptor) {
      if (size_t open = acceptor->Drain(absl::Seconds(5)); open > 0)
        spdlog::warn("{} connection(s) still had calls in flight after 5 s; they are cancelled", open);
    }
    if (cri_drain.joinable()) cri_drain.join();
    if (acceptor) spdlog::info("connections drained in {} ms", absl::ToInt64Milliseconds(absl::Now() - t0));
    if (cri_server) cri_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopping.Notify();
  reaper.join();
  waiter.detach();
  if (cri_server) {
    cri_server->Wait();
    if (cri_fd < 0) unlink(cri_proxy.c_str());  // a passed socket belongs to systemd or the supervisor
  }
  if (listen_fd < 0) unlink(address.c_str());  // a passed socket belongs to systemd or the supervisor
  spdlog::info("stopped");
  return 0;
}
