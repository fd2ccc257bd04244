#include "d4c/base/io.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "d4c/base/strcat.h"

namespace d4c {

namespace {

std::string ErrnoMessage(int err, std::string_view op, std::string_view path) {
  return StrCat(path, ": ", op, ": ", std::strerror(err));
}

}  // namespace

absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path) {
  std::string msg = ErrnoMessage(err, op, path);
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

absl::Status InternalErrnoStatus(int err, std::string_view op, std::string_view path) {
  return absl::InternalError(ErrnoMessage(err, op, path));
}

absl::Status WriteAll(int fd, std::string_view data, std::string_view path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write", path);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status PWriteAll(int fd, std::string_view data, uint64_t offset, std::string_view path) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write", path);
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PReadAll(int fd, char* buf, size_t n, uint64_t offset, std::string_view path) {
  while (n > 0) {
    ssize_t r = pread(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "read", path);
    if (r == 0) return absl::DataLossError(StrCat(path, ": unexpected end of file (truncated?)"));
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

absl::Status SyncAndClose(int* fd, std::string_view path) {
  int f = *fd;
  *fd = -1;
  if (fsync(f) != 0) {
    int err = errno;
    close(f);
    return ErrnoStatus(err, "fsync", path);
  }
  if (close(f) != 0) return ErrnoStatus(errno, "close", path);
  return absl::OkStatus();
}

std::string DirectoryOf(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(1, '.') : parent.string();
}

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, StrCat("rename to ", to), from);
  std::string dir = DirectoryOf(to);
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoStatus(errno, "open directory", dir);
  int rc = fsync(dfd);
  int err = errno;
  close(dfd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory", dir);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode) {
  return WriteFileAtomically(
      path, [&](int fd, const std::string& tmp) { return WriteAll(fd, data, tmp); }, mode);
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<absl::Status(int fd, const std::string& tmp_path)>& fill,
                                 mode_t mode) {
  std::string tmp = StrCat(path, ".tmp.XXXXXX");
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "create temporary file", tmp);
  absl::Status st = fill(fd, tmp);
  if (st.ok() && fchmod(fd, mode) != 0) st = ErrnoStatus(errno, "chmod", tmp);
  if (st.ok()) {
    st = SyncAndClose(&fd, tmp);
  } else {
    close(fd);
  }
  if (st.ok()) st = RenameDurably(tmp, path);
  // After a successful rename `tmp` no longer exists; after a failure the
  // temporary file must not be left behind.
  if (!st.ok()) unlink(tmp.c_str());
  return st;
}

absl::StatusOr<int> OpenTempFile(const std::string& dir) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // Filesystems without O_TMPFILE: a named file, unlinked at once.
    std::string tmpl = StrCat(dir, "/.d4c-spool.XXXXXX");
    fd = mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd >= 0) unlink(tmpl.c_str());
  }
  if (fd < 0) return InternalErrnoStatus(errno, "cannot create temp file", dir);
  return fd;
}

}  // namespace d4c
