// listener (d4c/snap/listener.h): the LISTEN_FDS/LISTEN_PID protocol's
// parsing (pid mismatch, count 0, malformed values: clear errors), the checks
// on a passed socket, and ListenUnix's handling of stale and live sockets.
#include "d4c/snap/listener.h"
#include "d4c/snap/fdstore.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/base/strcat.h"

using namespace d4c;
using namespace d4c::snap;
namespace fs = std::filesystem;

namespace {

std::string Message(const absl::Status& s) { return std::string(s.message()); }

struct TempDir {
  fs::path dir;
  TempDir() {
    // short: unix socket paths are limited to 108 bytes
    dir = fs::path("/tmp") / StrCat("d4c-listen-", getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() { fs::remove_all(dir); }
};

}  // namespace

TEST_CASE("ParseListenFds: no LISTEN_FDS means no passed socket") {
  auto r = ParseListenFds(nullptr, nullptr, nullptr, 42);
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
  r = ParseListenFds("42", nullptr, "snapshotter", 42);  // LISTEN_PID alone passes nothing either
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
}

TEST_CASE("ParseListenFds: one socket for this process is descriptor 3, named or not") {
  for (const char* names : {static_cast<const char*>(nullptr), "snapshotter", "di3fs-snapshotter.socket"}) {
    INFO("LISTEN_FDNAMES=" << (names ? names : "(unset)"));
    auto r = ParseListenFds("42", "1", names, 42);
    REQUIRE(r.ok());
    REQUIRE(r->has_value());
    CHECK((*r)->api == 3);
    CHECK_FALSE((*r)->cri.has_value());
    CHECK((*r)->fuse.empty());
  }
}

TEST_CASE("ParseListenFds: sockets and stored descriptors by name") {
  auto r = ParseListenFds("42", "5", "snapshotter:cri-image-proxy:fuse-aa11:fuse-bb22:fuse-aa11", 42);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  const PassedFds& p = **r;
  CHECK(p.api == 3);
  CHECK(p.cri == 4);
  REQUIRE(p.fuse.size() == 2);
  CHECK(p.fuse.at("aa11") == 7);  // stored twice: the later one counts
  CHECK(p.fuse.at("bb22") == 6);
  REQUIRE(p.unused.size() == 1);
  CHECK(p.unused[0] == std::make_pair(std::string("fuse-aa11"), 5));
  // The order is systemd's: sockets first, then the store; any order works.
  r = ParseListenFds("42", "3", "fuse-cc33:cri-image-proxy:di3fs-snapshotter.socket", 42);
  REQUIRE(r.ok());
  CHECK((*r)->api == 5);
  CHECK((*r)->cri == 4);
  CHECK((*r)->fuse.at("cc33") == 3);
}

TEST_CASE("ParseListenFds: LISTEN_FDNAMES must name each descriptor") {
  auto r = ParseListenFds("42", "2", "snapshotter", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("LISTEN_FDNAMES='snapshotter' has 1 names for LISTEN_FDS=2"));
  r = ParseListenFds("42", "2", "snapshotter::", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("has 3 names for LISTEN_FDS=2"));
  r = ParseListenFds("42", "2", "snapshotter:", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("descriptor name '' must be 1 to 255 characters"));
  r = ParseListenFds("42", "2", "snapshotter:fuse-a b", 42);
  CHECK(r.ok());  // spaces are printable
  std::string ctl = "snapshotter:bad";
  ctl.push_back('\x01');
  r = ParseListenFds("42", "2", ctl.c_str(), 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("printable ASCII characters only"));
}

TEST_CASE("ParseListenFds: exactly one Snapshots socket") {
  auto r = ParseListenFds("42", "2", "cri-image-proxy:fuse-aa", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("none of the passed descriptors is the Snapshots socket") &&
                                      Catch::Contains("FileDescriptorName=snapshotter"));
  r = ParseListenFds("42", "3", "snapshotter:cri-image-proxy:cri-image-proxy", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("names cri-image-proxy twice"));
  r = ParseListenFds("42", "2", "snapshotter:other", 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("the snapshotter serves one socket, 2 were passed"));
}

TEST_CASE("ParseListenFds: a socket meant for another process is an error") {
  auto r = ParseListenFds("41", "1", nullptr, 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("LISTEN_PID=41 is not this process (pid 42)") &&
                                      Catch::Contains("without exec"));
  r = ParseListenFds(nullptr, "1", nullptr, 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("LISTEN_FDS=1 is set but LISTEN_PID is not"));
}

TEST_CASE("ParseListenFds: malformed LISTEN_PID") {
  for (const char* pid : {"", "abc", "-42", "+42", "42 ", " 42", "0", "42x", "99999999999999999999999"}) {
    INFO("LISTEN_PID='" << pid << "'");
    auto r = ParseListenFds(pid, "1", nullptr, 42);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Message(r.status()), Catch::Contains(StrCat("LISTEN_PID='", pid, "' is not a process id")));
  }
}

TEST_CASE("ParseListenFds: LISTEN_FDS must be a number of descriptors, at least one") {
  auto r = ParseListenFds("42", "0", nullptr, 42);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("LISTEN_FDS=0: no socket was passed") &&
                                      Catch::Contains("ListenStream="));
  r = ParseListenFds("42", "2", nullptr, 42);  // two unnamed: both would be the Snapshots socket
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(r.status()), Catch::Contains("LISTEN_FDS=2: the snapshotter serves one socket, 2 were passed"));
  for (const char* n : {"", "one", "-1", "1 ", "0x1", "99999999"}) {
    INFO("LISTEN_FDS='" << n << "'");
    r = ParseListenFds("42", n, nullptr, 42);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Message(r.status()), Catch::Contains(StrCat("LISTEN_FDS='", n, "' is not a number of sockets")));
  }
}

TEST_CASE("ListenUnix and CheckListeningSocket") {
  TempDir t;
  std::string addr = (t.dir / "sub" / "snap.sock").string();
  auto fd = ListenUnix(addr);
  REQUIRE(fd.ok());
  struct stat st;
  REQUIRE(lstat(addr.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(CheckListeningSocket(*fd, addr).ok());
  CHECK(CheckListeningSocket(*fd, (t.dir / "sub" / "." / "snap.sock").string()).ok());  // same path, spelled otherwise

  auto wrong = CheckListeningSocket(*fd, (t.dir / "other.sock").string());
  REQUIRE(wrong.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(wrong), Catch::Contains(StrCat("bound to '", addr, "', not to --address ")) &&
                                 Catch::Contains("other.sock"));

  // A live socket is not taken over; a dead one's file is replaced.
  auto second = ListenUnix(addr);
  REQUIRE(second.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(second.status()), Catch::Contains("is served by a running process"));
  close(*fd);
  REQUIRE(fs::exists(addr));
  auto again = ListenUnix(addr);
  REQUIRE(again.ok());
  CHECK(CheckListeningSocket(*again, addr).ok());
  close(*again);

  // A file that is not a socket is never removed.
  std::string file = (t.dir / "file").string();
  std::ofstream(file) << "keep";
  auto notsock = ListenUnix(file);
  REQUIRE(notsock.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(notsock.status()), Catch::Contains("exists and is not a socket"));
  CHECK(fs::file_size(file) == 4);

  CHECK(ListenUnix(std::string(200, 'x')).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("CheckListeningSocket: descriptors that are not a listening unix stream socket") {
  int p[2];
  REQUIRE(pipe(p) == 0);
  auto s = CheckListeningSocket(p[0], "/x");
  CHECK_THAT(Message(s), Catch::Contains("is not a socket"));
  close(p[0]);
  close(p[1]);

  int sp[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
  s = CheckListeningSocket(sp[0], "/x");
  CHECK_THAT(Message(s), Catch::Contains("is not listening"));
  close(sp[0]);
  close(sp[1]);

  REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) == 0);
  s = CheckListeningSocket(sp[0], "/x");
  CHECK_THAT(Message(s), Catch::Contains("is not a stream socket"));
  close(sp[0]);
  close(sp[1]);

  int inet = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(inet >= 0);
  s = CheckListeningSocket(inet, "/x");
  CHECK_THAT(Message(s), Catch::Contains("is not a unix socket"));
  close(inet);

  s = CheckListeningSocket(1000, "/x");
  CHECK_THAT(Message(s), Catch::Contains("passed descriptor 1000 is not open"));
}
