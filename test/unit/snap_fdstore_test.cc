// Descriptor store (d4c/snap/fdstore.h): names, the notification messages,
// the sending side (Notifier) and the receiving side (FdStore, the
// --supervise parent's) over a real datagram socket, and Di3fsMounter storing
// its /dev/fuse copies and taking a dead daemon over from a passed copy after
// a restart (fake mount table, real descriptors).
#include "d4c/snap/fdstore.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/base/strcat.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/mounter.h"
#include "snap_fakes.h"

using namespace d4c;
using namespace d4c::snap;
using d4c::snap::testing::FakeMountSystem;
namespace fs = std::filesystem;

namespace {

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// A notification socket in the abstract namespace, unique to this test run.
struct Receiver {
  std::string address;
  int fd = -1;
  explicit Receiver(const std::string& tag) {
    address = StrCat("@d4c-fdstore-test/", getpid(), "/", tag);
    auto s = BindNotifySocket(address);
    REQUIRE(s.ok());
    fd = *s;
  }
  ~Receiver() { close(fd); }
  // The next message, parsed, with its descriptors applied to `store`.
  NotifyMessage Next(FdStore* store) {
    auto r = ReceiveNotify(fd);
    REQUIRE(r.ok());
    CHECK(r->pid == getpid());
    auto m = ParseNotifyMessage(r->text);
    REQUIRE(m.ok());
    REQUIRE(store->Apply(*m, std::move(r->fds)).ok());
    return *m;
  }
  bool Empty() { return ReceiveNotify(fd).status().code() == absl::StatusCode::kNotFound; }
};

// Writing to a pipe whose every read end is closed fails with EPIPE.
bool ReadersGone(int write_end) {
  char c = 'x';
  return write(write_end, &c, 1) < 0 && errno == EPIPE;
}

std::string FreshDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-fdstore-test-", getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

}  // namespace

TEST_CASE("fd names: systemd's rule") {
  CHECK(CheckFdName("fuse-" + std::string(64, 'a')).ok());
  CHECK(CheckFdName(std::string(255, 'x')).ok());
  CHECK_THAT(Message(CheckFdName(std::string(256, 'x'))), Catch::Contains("must be 1 to 255 characters"));
  CHECK_THAT(Message(CheckFdName("")), Catch::Contains("must be 1 to 255 characters"));
  CHECK_THAT(Message(CheckFdName("a:b")), Catch::Contains("no ':'"));
  CHECK_THAT(Message(CheckFdName("a\nb")), Catch::Contains("printable ASCII"));
  CHECK(FuseFdName("abc") == "fuse-abc");
}

TEST_CASE("notification messages") {
  auto m = ParseNotifyMessage("FDSTORE=1\nFDNAME=fuse-aa");
  REQUIRE(m.ok());
  CHECK(m->store);
  CHECK_FALSE(m->remove);
  CHECK(m->name == "fuse-aa");
  m = ParseNotifyMessage("FDSTOREREMOVE=1\nFDNAME=fuse-aa\n");
  REQUIRE(m.ok());
  CHECK(m->remove);
  CHECK_FALSE(m->store);
  m = ParseNotifyMessage("FDSTORE=1");
  REQUIRE(m.ok());
  CHECK(m->name == "stored");  // systemd's default
  m = ParseNotifyMessage("READY=1\nSTATUS=serving");
  REQUIRE(m.ok());
  CHECK_FALSE(m->store);
  CHECK_FALSE(m->remove);
  CHECK_THAT(Message(ParseNotifyMessage("FDSTORE=1\nFDSTOREREMOVE=1\nFDNAME=x").status()),
             Catch::Contains("both FDSTORE=1 and FDSTOREREMOVE=1"));
  CHECK_THAT(Message(ParseNotifyMessage("FDSTORE=1\nFDNAME=a:b").status()), Catch::Contains("FDNAME: ") &&
                                                                              Catch::Contains("no ':'"));
}

TEST_CASE("Notifier: no NOTIFY_SOCKET is a no-op, a bad one an error naming it") {
  Notifier off(nullptr);
  CHECK_FALSE(off.enabled());
  CHECK(off.StoreFd("fuse-a", 0).ok());
  Notifier rel("relative/path");
  CHECK_THAT(Message(rel.Send("X=1")), Catch::Contains("NOTIFY_SOCKET='relative/path' is neither a path"));
  Notifier nobody(StrCat("@d4c-fdstore-test/nobody/", getpid()).c_str());
  CHECK_THAT(Message(nobody.Send("X=1")), Catch::Contains("send to NOTIFY_SOCKET @d4c-fdstore-test/nobody/"));
}

TEST_CASE("descriptor store: a descriptor sent with FDSTORE is the same file, FDSTOREREMOVE closes it") {
  signal(SIGPIPE, SIG_IGN);
  Receiver rx("roundtrip");
  Notifier n(rx.address.c_str());
  FdStore store(2);
  int p1[2], p2[2];
  REQUIRE(pipe(p1) == 0);
  REQUIRE(pipe(p2) == 0);

  REQUIRE(n.StoreFd("fuse-aa", p1[0]).ok());
  close(p1[0]);  // only the store's copy is left
  auto m = rx.Next(&store);
  CHECK(m.store);
  REQUIRE(store.entries().size() == 1);
  int kept = store.entries().at("fuse-aa");
  REQUIRE(write(p1[1], "hello", 5) == 5);
  char buf[8] = {};
  REQUIRE(read(kept, buf, sizeof buf) == 5);
  CHECK(std::string(buf) == "hello");
  CHECK(fcntl(kept, F_GETFD) & FD_CLOEXEC);  // not leaked into the children the supervisor starts

  // The same name again: the new descriptor replaces (and closes) the old.
  REQUIRE(n.StoreFd("fuse-aa", p2[0]).ok());
  close(p2[0]);
  rx.Next(&store);
  CHECK(store.entries().size() == 1);
  CHECK(ReadersGone(p1[1]));
  CHECK_FALSE(ReadersGone(p2[1]));

  // Full: a new name is refused and its descriptor closed.
  int p3[2];
  REQUIRE(pipe(p3) == 0);
  REQUIRE(n.StoreFd("fuse-bb", p3[0]).ok());
  REQUIRE(n.StoreFd("fuse-cc", p3[0]).ok());
  close(p3[0]);
  rx.Next(&store);
  auto r = ReceiveNotify(rx.fd);
  REQUIRE(r.ok());
  auto full = store.Apply(*ParseNotifyMessage(r->text), std::move(r->fds));
  CHECK(full.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(Message(full), Catch::Contains("descriptor store full (2 descriptors): 'fuse-cc' not kept"));
  CHECK(store.entries().size() == 2);

  // Descriptors without FDSTORE=1 are not kept.
  REQUIRE(n.Send("FDNAME=fuse-dd", {p1[1]}).ok());
  r = ReceiveNotify(rx.fd);
  REQUIRE(r.ok());
  CHECK_THAT(Message(store.Apply(*ParseNotifyMessage(r->text), std::move(r->fds))),
             Catch::Contains("1 descriptors sent without FDSTORE=1"));

  REQUIRE(n.RemoveFd("fuse-aa").ok());
  REQUIRE(n.RemoveFd("fuse-none").ok());  // unknown names are no error
  rx.Next(&store);
  rx.Next(&store);
  CHECK(store.entries().size() == 1);
  CHECK(ReadersGone(p2[1]));
  store.Clear();
  CHECK(ReadersGone(p3[1]));
  CHECK(rx.Empty());
  for (int fd : {p1[1], p2[1], p3[1]}) close(fd);
}

TEST_CASE("descriptor store: a path notification socket works too") {
  auto dir = FreshDir("path");
  std::string addr = dir + "/notify";
  auto s = BindNotifySocket(addr);
  REQUIRE(s.ok());
  Notifier n(addr.c_str());
  REQUIRE(n.Send("READY=1").ok());
  auto r = ReceiveNotify(*s);
  REQUIRE(r.ok());
  CHECK(r->text == "READY=1");
  CHECK(r->pid == getpid());
  close(*s);
}

TEST_CASE("di3fs mounter: its /dev/fuse copies go to the store, a restart takes a dead daemon over from one") {
  auto root = FreshDir("mounter");
  std::string a(64, 'a'), b(64, 'b');
  std::string mp = layout::MountPoint(root, a);
  Receiver rx("mounter");
  auto notifier = std::make_shared<const Notifier>(rx.address.c_str());
  FdStore store(16);

  // 1. A mount: its copy is stored under fuse-<id> (a removal first: one
  // copy per name, also under systemd), its command line kept on disk.
  std::vector<std::string> argv;
  {
    auto sys_owned = std::make_unique<FakeMountSystem>();
    FakeMountSystem* sys = sys_owned.get();
    sys->hold_fds = sys->real_fds = true;
    Di3fsMounter m({.root = root, .di3fs = "/opt/di3fs", .fdstore = notifier}, std::move(sys_owned));
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    argv = sys->spawned[0];
    auto first = rx.Next(&store);
    CHECK((first.remove && first.name == "fuse-" + a));
    auto second = rx.Next(&store);
    CHECK((second.store && second.name == "fuse-" + a));
    CHECK(store.entries().size() == 1);
    CHECK(rx.Empty());
    std::ifstream af(layout::ArgvFile(root, a), std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(af)), std::istreambuf_iterator<char>());
    CHECK(all.size() > 0);
    CHECK(std::count(all.begin(), all.end(), '\0') == static_cast<long>(argv.size()));
  }  // 2. the snapshotter is gone (its copies closed; the store keeps its own)
  CHECK(rx.Empty());
  REQUIRE(store.entries().size() == 1);

  // 3. The daemon died too. The next snapshotter is given the stored copy
  // and starts a replacement on it, from the kept command line: no statfs,
  // no detach, no new mount.
  {
    auto sys_owned = std::make_unique<FakeMountSystem>();
    FakeMountSystem* sys = sys_owned.get();
    sys->hold_fds = sys->real_fds = true;
    sys->mounts[mp] = {true, false, "fuse.di3fs"};  // a statfs would not answer
    int copy = fcntl(store.entries().at("fuse-" + a), F_DUPFD_CLOEXEC, 3);
    Di3fsMounter m({.root = root, .di3fs = "/opt/di3fs", .fdstore = notifier, .passed = {{a, copy}}},
                   std::move(sys_owned));
    m.Recover({a});
    REQUIRE(sys->spawned.size() == 1);
    std::vector<std::string> takeover = argv;
    takeover.insert(takeover.end() - 1, {"--takeover-fd", "3"});
    CHECK(sys->spawned[0] == takeover);
    CHECK(sys->passed_fds[0] == copy);
    CHECK(m.HeldCount() == 1);
    for (const auto& l : sys->log) CHECK(l.rfind("detach", 0) != 0);
    CHECK(rx.Empty());  // already stored: nothing sent
    // The replacement lives; a restart now keeps the passed copy as its own.
    int pid = sys->next_pid - 1;
    CHECK(sys->IsDi3fs(pid, mp));
  }
  {
    auto sys_owned = std::make_unique<FakeMountSystem>();
    FakeMountSystem* sys = sys_owned.get();
    sys->hold_fds = sys->real_fds = true;
    sys->mounts[mp] = {true, true, "fuse.di3fs"};
    sys->procs[777] = mp;
    sys->cmdlines[777] = argv;
    std::ofstream(layout::PidFile(root, a)) << 777 << "\n";
    // b: stored, but its mount is gone: the copy is closed and removed.
    int pb[2];
    REQUIRE(pipe(pb) == 0);
    int copy = fcntl(store.entries().at("fuse-" + a), F_DUPFD_CLOEXEC, 3);
    Di3fsMounter m({.root = root, .di3fs = "/opt/di3fs", .fdstore = notifier, .passed = {{a, copy}, {b, pb[0]}}},
                   std::move(sys_owned));
    m.Recover({a, b});
    CHECK(sys->spawned.empty());
    CHECK(m.HeldCount() == 1);
    CHECK(std::find(sys->log.begin(), sys->log.end(), StrCat("close ", pb[0])) != sys->log.end());
    auto gone = rx.Next(&store);
    CHECK((gone.remove && gone.name == "fuse-" + b));
    CHECK(rx.Empty());
    close(pb[1]);

    // 4. Unmount: the copy leaves the store.
    REQUIRE(m.Unmount(a).ok());
    auto removed = rx.Next(&store);
    CHECK((removed.remove && removed.name == "fuse-" + a));
    CHECK(store.entries().empty());
    CHECK(!fs::exists(layout::ArgvFile(root, a)));
  }
}
