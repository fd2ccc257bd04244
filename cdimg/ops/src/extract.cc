#include "d4c/extract.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "d4c/base/io.h"
#include "d4c/base/strcat.h"
#include "thread_pool.h"

namespace d4c {
namespace {

// Extraction errors stay Internal whatever the errno, as they always were.
absl::Status Errno(std::string_view op, const std::string& path) { return InternalErrnoStatus(errno, op, path); }

absl::Status CheckTarget(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) == 0) return absl::OkStatus();
  if (errno != EEXIST) return Errno("mkdir", dir);
  DIR* d = opendir(dir.c_str());
  if (!d) return Errno("opendir", dir);
  bool empty = true;
  while (dirent* de = readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) empty = false;
  }
  closedir(d);
  if (!empty) return absl::FailedPreconditionError(StrCat(dir, ": output directory is not empty"));
  return absl::OkStatus();
}

// Ownership, then mode (chown clears setuid/setgid), xattrs, then times last.
absl::Status ApplyMetadata(const std::string& full, const Entry& e) {
  bool link = e.type == EntryType::kSymlink;
  if (lchown(full.c_str(), e.uid, e.gid) != 0) return Errno("chown", full);
  if (!link && chmod(full.c_str(), e.mode) != 0) return Errno("chmod", full);
  for (const Xattr& x : e.xattrs) {
    if (lsetxattr(full.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0) != 0)
      return Errno(StrCat("setxattr ", x.name), full);
  }
  timespec ts[2] = {{e.mtime_sec, static_cast<long>(e.mtime_nsec)}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
  if (utimensat(AT_FDCWD, full.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) return Errno("utimes", full);
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& full, std::string_view data) {
  int fd = open(full.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("create", full);
  if (absl::Status st = WriteAll(fd, data, full); !st.ok()) {
    close(fd);
    return st;
  }
  if (close(fd) != 0) return Errno("close", full);
  return absl::OkStatus();
}

absl::Status CreateNode(const std::string& full, const Entry& e) {
  switch (e.type) {
    case EntryType::kDirectory:
      if (e.path.empty()) return absl::OkStatus();
      if (mkdir(full.c_str(), 0700) != 0) return Errno("mkdir", full);
      return absl::OkStatus();
    case EntryType::kSymlink:
      if (symlink(e.link_target.c_str(), full.c_str()) != 0) return Errno("symlink", full);
      return ApplyMetadata(full, e);
    case EntryType::kCharDevice:
    case EntryType::kBlockDevice: {
      mode_t fmt = e.type == EntryType::kCharDevice ? S_IFCHR : S_IFBLK;
      if (mknod(full.c_str(), fmt | 0600, makedev(e.dev_major, e.dev_minor)) != 0) return Errno("mknod", full);
      return ApplyMetadata(full, e);
    }
    case EntryType::kFifo:
      if (mkfifo(full.c_str(), 0600) != 0) return Errno("mkfifo", full);
      return ApplyMetadata(full, e);
    default:
      return absl::OkStatus();  // files and hardlinks come later
  }
}

}  // namespace

absl::StatusOr<ExtractStats> ExtractImage(const ImageChain& chain, const std::string& dir,
                                          const ExtractOptions& options) {
  if (geteuid() != 0)
    return absl::PermissionDeniedError(
        "extract must run as root: it sets file ownership, creates device nodes and security.* xattrs");
  if (auto s = CheckTarget(dir); !s.ok()) return s;
  const CdimgImage& img = chain.top();
  auto full_path = [&](const Entry& e) { return e.path.empty() ? dir : dir + "/" + e.path; };
  ExtractStats stats;
  stats.entries = img.size();

  // 1. Directories, symlinks, devices, fifos in tree order (parents first).
  for (size_t i = 0; i < img.size(); ++i) {
    EntryType t = img.TypeAt(i);
    if (t == EntryType::kRegular || t == EntryType::kHardlink) continue;
    Entry e = img.EntryAt(i);
    if (auto s = CreateNode(full_path(e), e); !s.ok()) return s;
  }
  // 2. Regular files in parallel: rebuild (verified), write, set metadata.
  std::mutex mu;
  absl::Status first_error;
  std::atomic<uint64_t> bytes{0};
  {
    internal::ThreadPool pool(options.threads);
    for (size_t i = 0; i < img.size(); ++i) {
      if (img.TypeAt(i) != EntryType::kRegular) continue;
      pool.Submit([&, i] {
        Entry e = img.EntryAt(i);
        absl::Status s;
        auto data = chain.ReadFile(i);
        if (!data.ok()) s = data.status();
        if (s.ok()) s = WriteFile(full_path(e), *data);
        if (s.ok()) s = ApplyMetadata(full_path(e), e);
        if (s.ok()) bytes += e.size;
        std::lock_guard<std::mutex> l(mu);
        if (!s.ok() && first_error.ok()) first_error = s;
      });
    }
  }
  if (!first_error.ok()) return first_error;
  stats.bytes = bytes;
  // 3. Hardlinks (their primaries exist now).
  for (size_t i = 0; i < img.size(); ++i) {
    if (img.TypeAt(i) != EntryType::kHardlink) continue;
    Entry e = img.EntryAt(i);
    std::string target = dir + "/" + e.link_target;
    if (link(target.c_str(), full_path(e).c_str()) != 0) return Errno("link", full_path(e));
  }
  // 4. Directory metadata deepest first, so creating children cannot bump mtimes.
  for (size_t i = img.size(); i-- > 0;) {
    if (img.TypeAt(i) != EntryType::kDirectory) continue;
    Entry e = img.EntryAt(i);
    if (auto s = ApplyMetadata(full_path(e), e); !s.ok()) return s;
  }
  return stats;
}

}  // namespace d4c
