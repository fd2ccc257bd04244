// d4c/base/io.h: errno statuses, full reads and writes, atomic replace, spools.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "d4c/base/io.h"
#include "d4c/base/strcat.h"

namespace fs = std::filesystem;

namespace {

// A fresh directory, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "d4c-base-io-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("ErrnoStatus names the path and maps the errno", "[base][io]") {
  absl::Status s = d4c::ErrnoStatus(ENOENT, "open", "/x/y");
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(d4c::Msg(s.message()) == "/x/y: open: No such file or directory");
  CHECK(d4c::ErrnoStatus(EACCES, "open", "p").code() == absl::StatusCode::kPermissionDenied);
  CHECK(d4c::ErrnoStatus(EPERM, "open", "p").code() == absl::StatusCode::kPermissionDenied);
  CHECK(d4c::ErrnoStatus(ENOSPC, "write", "p").code() == absl::StatusCode::kInternal);
  absl::Status internal = d4c::InternalErrnoStatus(ENOENT, "open", "/x/y");
  CHECK(internal.code() == absl::StatusCode::kInternal);
  CHECK(internal.message() == s.message());
}

TEST_CASE("WriteFileAtomically writes the whole file and leaves nothing else", "[base][io]") {
  TempDir dir;
  std::string path = dir.path() + "/state.json";
  REQUIRE(d4c::WriteFileAtomically(path, "first", 0600).ok());
  REQUIRE(d4c::WriteFileAtomically(path, std::string(100000, 'x'), 0640).ok());
  CHECK(Slurp(path) == std::string(100000, 'x'));
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(dir.Names() == std::vector<std::string>{"state.json"});
}

TEST_CASE("WriteFileAtomically leaves no temporary file when it fails", "[base][io]") {
  TempDir dir;
  // rename(2) of a file over a non-empty directory fails after the data is written.
  std::string target = dir.path() + "/occupied";
  REQUIRE(mkdir(target.c_str(), 0755) == 0);
  REQUIRE(d4c::WriteFileAtomically(target + "/inner", "x").ok());
  absl::Status s = d4c::WriteFileAtomically(target, "data");
  REQUIRE_FALSE(s.ok());
  CHECK(d4c::Msg(s.message()).find("rename to " + target) != std::string::npos);
  CHECK(dir.Names() == std::vector<std::string>{"occupied"});

  // A missing directory: NotFound, nothing created.
  absl::Status missing = d4c::WriteFileAtomically(dir.path() + "/no/such/file", "data");
  CHECK(missing.code() == absl::StatusCode::kNotFound);
  CHECK(dir.Names() == std::vector<std::string>{"occupied"});
}

TEST_CASE("OpenTempFile gives an unnamed file that round-trips data", "[base][io]") {
  TempDir dir;
  auto fd = d4c::OpenTempFile(dir.path());
  REQUIRE(fd.ok());
  CHECK(dir.Names().empty());  // unnamed (or already unlinked)
  std::string a(70000, 'a'), b = "tail bytes";
  REQUIRE(d4c::PWriteAll(*fd, a, 0, "spool").ok());
  REQUIRE(d4c::PWriteAll(*fd, b, a.size(), "spool").ok());
  std::string got(b.size(), '\0');
  REQUIRE(d4c::PReadAll(*fd, got.data(), got.size(), a.size(), "spool").ok());
  CHECK(got == b);

  // Reading past the end is DataLoss and names the file.
  absl::Status past = d4c::PReadAll(*fd, got.data(), got.size(), a.size() + 1, "spool");
  CHECK(past.code() == absl::StatusCode::kDataLoss);
  CHECK(d4c::Msg(past.message()).starts_with("spool: "));
  close(*fd);

  auto bad = d4c::OpenTempFile(dir.path() + "/missing");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInternal);
  CHECK(d4c::Msg(bad.status().message()).find(dir.path() + "/missing: cannot create temp file") != std::string::npos);
}

TEST_CASE("WriteAll, SyncAndClose and DirectoryOf", "[base][io]") {
  TempDir dir;
  std::string path = dir.path() + "/f";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(d4c::WriteAll(fd, "hello ", path).ok());
  REQUIRE(d4c::WriteAll(fd, "world", path).ok());
  REQUIRE(d4c::SyncAndClose(&fd, path).ok());
  CHECK(fd == -1);
  CHECK(Slurp(path) == "hello world");
  CHECK(d4c::WriteAll(-1, "x", "nofd").code() == absl::StatusCode::kInternal);

  CHECK(d4c::DirectoryOf("a/b/c") == "a/b");
  CHECK(d4c::DirectoryOf("c") == ".");
  CHECK(d4c::DirectoryOf("/c") == "/");
}
