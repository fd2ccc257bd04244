#include "tree_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "d4c/base/strcat.h"

namespace d4c::testing {
namespace {

absl::Status Errno(std::string_view op, const std::string& path) {
  return absl::InternalError(StrCat(op, " ", path, ": ", std::strerror(errno)));
}

absl::StatusOr<Digest> HashFile(const std::string& path, uint64_t* size) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Errno("open", path);
  Sha256Hasher hash;
  std::string buf(1 << 20, '\0');
  *size = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { close(fd); return Errno("read", path); }
    if (n == 0) break;
    hash.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    *size += static_cast<uint64_t>(n);
  }
  close(fd);
  return hash.Finish();
}

absl::StatusOr<std::vector<Xattr>> ReadXattrs(const std::string& path) {
  std::vector<Xattr> out;
  ssize_t n = llistxattr(path.c_str(), nullptr, 0);
  if (n < 0) return (errno == ENOTSUP) ? absl::StatusOr<std::vector<Xattr>>(out) : Errno("llistxattr", path);
  std::string names(static_cast<size_t>(n), '\0');
  n = llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) return Errno("llistxattr", path);
  for (size_t pos = 0; pos < static_cast<size_t>(n);) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    ssize_t vn = lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (vn < 0) return Errno("lgetxattr " + name, path);
    std::string value(static_cast<size_t>(vn), '\0');
    vn = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (vn < 0) return Errno("lgetxattr " + name, path);
    value.resize(static_cast<size_t>(vn));
    out.push_back({name, value});
  }
  std::sort(out.begin(), out.end(), [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
  return out;
}

struct Scanner {
  std::string root;
  std::vector<Entry> entries;
  std::map<std::pair<dev_t, ino_t>, std::vector<size_t>> inodes;

  absl::Status Visit(const std::string& rel) {
    std::string full = rel.empty() ? root : root + "/" + rel;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) return Errno("lstat", full);
    Entry e;
    e.path = rel;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime_sec = st.st_mtim.tv_sec;
    e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    auto x = ReadXattrs(full);
    if (!x.ok()) return x.status();
    e.xattrs = std::move(*x);
    if (S_ISREG(st.st_mode)) {
      e.type = EntryType::kRegular;
      auto d = HashFile(full, &e.size);
      if (!d.ok()) return d.status();
      e.digest = *d;
    } else if (S_ISDIR(st.st_mode)) {
      e.type = EntryType::kDirectory;
    } else if (S_ISLNK(st.st_mode)) {
      e.type = EntryType::kSymlink;
      std::string t(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = readlink(full.c_str(), t.data(), t.size());
      if (n < 0) return Errno("readlink", full);
      t.resize(static_cast<size_t>(n));
      e.link_target = t;
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      e.type = S_ISCHR(st.st_mode) ? EntryType::kCharDevice : EntryType::kBlockDevice;
      e.dev_major = major(st.st_rdev);
      e.dev_minor = minor(st.st_rdev);
    } else if (S_ISFIFO(st.st_mode)) {
      e.type = EntryType::kFifo;
    } else {
      return absl::UnimplementedError(StrCat("unsupported file type at ", full));
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) inodes[{st.st_dev, st.st_ino}].push_back(entries.size());
    entries.push_back(std::move(e));
    if (!S_ISDIR(st.st_mode)) return absl::OkStatus();
    return VisitChildren(full, rel);
  }

  absl::Status VisitChildren(const std::string& full, const std::string& rel) {
    DIR* d = opendir(full.c_str());
    if (!d) return Errno("opendir", full);
    std::vector<std::string> names;
    while (dirent* de = readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
    for (const std::string& n : names) {
      if (auto s = Visit(rel.empty() ? n : rel + "/" + n); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  void CanonicalizeHardlinks() {
    for (auto& [ino, idxs] : inodes) {
      if (idxs.size() < 2) continue;  // other names are outside the tree
      std::sort(idxs.begin(), idxs.end(),
                [&](size_t a, size_t b) { return PathLess(entries[a].path, entries[b].path); });
      for (size_t k = 1; k < idxs.size(); ++k) {
        Entry link;
        link.path = entries[idxs[k]].path;
        link.type = EntryType::kHardlink;
        link.link_target = entries[idxs[0]].path;
        entries[idxs[k]] = std::move(link);
      }
    }
  }
};

std::string Hex(std::string_view s) {
  static const char* k = "0123456789abcdef";
  std::string o;
  for (unsigned char c : s) { o += k[c >> 4]; o += k[c & 15]; }
  return o;
}

void DiffEntry(const Entry& a, const Entry& b, std::vector<std::string>* out) {
  auto add = [&](std::string_view field, const std::string& x, const std::string& y) {
    if (x != y) out->push_back(StrCat("/", a.path, ": ", field, " ", x, " != ", y));
  };
  add("type", EntryTypeName(a.type), EntryTypeName(b.type));
  auto oct = [](uint32_t m) { char b[16]; std::snprintf(b, sizeof b, "%04o", m); return std::string(b); };
  add("mode", oct(a.mode), oct(b.mode));
  add("uid", StrCat(a.uid), StrCat(b.uid));
  add("gid", StrCat(a.gid), StrCat(b.gid));
  add("mtime", StrCat(a.mtime_sec, ".", a.mtime_nsec), StrCat(b.mtime_sec, ".", b.mtime_nsec));
  add("size", StrCat(a.size), StrCat(b.size));
  add("digest", DigestHex(a.digest), DigestHex(b.digest));
  add("link", a.link_target, b.link_target);
  add("dev", StrCat(a.dev_major, ":", a.dev_minor), StrCat(b.dev_major, ":", b.dev_minor));
  std::string xa, xb;
  for (const Xattr& x : a.xattrs) xa += StrCat(x.name, "=", Hex(x.value), ";");
  for (const Xattr& x : b.xattrs) xb += StrCat(x.name, "=", Hex(x.value), ";");
  add("xattrs", xa, xb);
}

}  // namespace

absl::StatusOr<std::vector<Entry>> ScanTree(const std::string& root) {
  Scanner s;
  s.root = root;
  if (auto st = s.Visit(""); !st.ok()) return st;
  s.CanonicalizeHardlinks();
  std::sort(s.entries.begin(), s.entries.end(),
            [](const Entry& a, const Entry& b) { return PathLess(a.path, b.path); });
  return std::move(s.entries);
}

std::vector<std::string> DiffTrees(const std::vector<Entry>& a, const std::vector<Entry>& b, size_t limit) {
  std::vector<std::string> out;
  size_t i = 0, j = 0;
  while ((i < a.size() || j < b.size()) && out.size() < limit) {
    int c = i == a.size() ? 1 : j == b.size() ? -1 : ComparePaths(a[i].path, b[j].path);
    if (c < 0) out.push_back(StrCat("/", a[i++].path, ": only in the first tree"));
    else if (c > 0) out.push_back(StrCat("/", b[j++].path, ": only in the second tree"));
    else DiffEntry(a[i++], b[j++], &out);
  }
  if (out.size() > limit) out.resize(limit);
  return out;
}

}  // namespace d4c::testing
