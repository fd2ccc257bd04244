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
#include <filesystem>
#include <mutex>

#include "d4c/base/io.h"
#include "d4c/base/strcat.h"
#include "thread_pool.h"

namespace d4c {
namespace {

// Extraction errors stay Internal whatever the errno, as they always were.
absl::Status Errno(std::string_view op, const std::string& path) { return InternalErrnoStatus(errno, op, path); }

// What was at the target before extract started; it is all put back on
// failure.
struct Target {
  std::string dir;   // as given, without trailing '/'
  bool existed = false;  // an empty directory already (else absent)
  struct stat before {};
};

absl::StatusOr<Target> CheckTarget(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  Target t;
  t.dir = dir;
  if (lstat(dir.c_str(), &t.before) != 0) {
    if (errno == ENOENT) return t;
    return Errno("stat", dir);
  }
  if (!S_ISDIR(t.before.st_mode))
    return absl::FailedPreconditionError(StrCat(dir, ": output exists and is not a directory"));
  DIR* d = opendir(dir.c_str());
  if (!d) return Errno("opendir", dir);
  bool empty = true;
  while (dirent* de = readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) empty = false;
  }
  closedir(d);
  if (!empty) return absl::FailedPreconditionError(StrCat(dir, ": output directory is not empty"));
  t.existed = true;
  return t;
}

// A new directory beside `dir` (same filesystem, so it can be renamed into
// place): "<parent>/.<name>.extract-XXXXXX".
absl::StatusOr<std::string> MakeWorkDir(const std::string& dir) {
  std::filesystem::path p(dir);
  std::string tmpl = (p.parent_path() / StrCat(".", p.filename().string(), ".extract-XXXXXX")).string();
  if (!mkdtemp(tmpl.data())) return Errno("mkdir", StrCat(tmpl, " (temporary directory for ", dir, ")"));
  // mkdir(2)'s default, as before; the image's root metadata is set at the end.
  if (chmod(tmpl.c_str(), 0755) != 0) return Errno("chmod", tmpl);
  return tmpl;
}

// Undoes a failed extraction: removes the work directory, or (for a target
// that was an empty directory) everything created inside it, and puts the
// directory's own metadata back. Returns `cause` with any cleanup error added.
absl::Status Undo(const Target& t, const std::string& work, absl::Status cause) {
  std::error_code ec;
  std::string failed;
  if (!t.existed) {
    std::filesystem::remove_all(work, ec);
    if (ec) failed = StrCat(work, ": ", ec.message());
  } else {
    for (std::filesystem::directory_iterator it(work, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code rm;
      std::filesystem::remove_all(it->path(), rm);
      if (rm && failed.empty()) failed = StrCat(it->path().string(), ": ", rm.message());
    }
    if (ec && failed.empty()) failed = StrCat(work, ": ", ec.message());
    const struct stat& b = t.before;
    timespec ts[2] = {b.st_atim, b.st_mtim};
    if ((lchown(work.c_str(), b.st_uid, b.st_gid) != 0 || chmod(work.c_str(), b.st_mode & 07777) != 0 ||
         utimensat(AT_FDCWD, work.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) &&
        failed.empty())
      failed = StrCat(work, ": restoring its owner, mode and times: ", std::strerror(errno));
  }
  if (failed.empty()) return cause;
  return absl::Status(cause.code(), StrCat(cause.message(), " (and removing the partial tree failed: ", failed,
                                           "; remove it by hand)"));
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

// Writes the tree into `dir`, an empty directory.
absl::StatusOr<ExtractStats> ExtractInto(const ImageChain& chain, const std::string& dir,
                                         const ExtractOptions& options) {
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
  std::atomic<bool> failed{false};  // later files are skipped after an error
  std::atomic<uint64_t> bytes{0};
  {
    internal::ThreadPool pool(options.threads);
    for (size_t i = 0; i < img.size(); ++i) {
      if (img.TypeAt(i) != EntryType::kRegular) continue;
      pool.Submit([&, i] {
        if (failed) return;
        Entry e = img.EntryAt(i);
        absl::Status s;
        auto data = chain.ReadFile(i);
        if (!data.ok()) s = data.status();
        if (s.ok()) s = WriteFile(full_path(e), *data);
        if (s.ok()) s = ApplyMetadata(full_path(e), e);
        if (s.ok()) bytes += e.size;
        std::lock_guard<std::mutex> l(mu);
        if (!s.ok() && first_error.ok()) first_error = s;
        if (!s.ok()) failed = true;
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

}  // namespace

absl::StatusOr<ExtractStats> ExtractImage(const ImageChain& chain, const std::string& dir,
                                          const ExtractOptions& options) {
  if (geteuid() != 0)
    return absl::PermissionDeniedError(
        "extract must run as root: it sets file ownership, creates device nodes and security.* xattrs");
  auto target = CheckTarget(dir);
  if (!target.ok()) return target.status();
  // An absent target is built in a directory beside it and renamed into
  // place at the end, so it never exists half-written; an existing empty
  // one is filled in place and emptied again on failure.
  std::string work = target->dir;
  if (!target->existed) {
    auto made = MakeWorkDir(target->dir);
    if (!made.ok()) return made.status();
    work = *made;
  }
  auto stats = ExtractInto(chain, work, options);
  if (!stats.ok()) return Undo(*target, work, stats.status());
  if (!target->existed && rename(work.c_str(), target->dir.c_str()) != 0)
    return Undo(*target, work, Errno(StrCat("rename ", work, " to"), target->dir));
  return stats;
}

}  // namespace d4c
