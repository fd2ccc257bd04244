#include "format/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "d4c/strcat.h"

namespace d4c::internal {

absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path) {
  std::string msg = StrCat(path, ": ", op, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
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

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, "rename to " + to, from);
  std::filesystem::path parent = std::filesystem::path(to).parent_path();
  std::string dir = parent.empty() ? std::string(1, '.') : parent.string();
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoStatus(errno, "open directory", dir);
  int rc = fsync(dfd);
  int err = errno;
  close(dfd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace d4c::internal
