#include "d4c/fs_tree.h"

#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>

#include "d4c/base/strcat.h"

namespace d4c {

absl::StatusOr<std::unique_ptr<FsTree>> FsTree::Build(const CdimgImage& image) {
  std::unique_ptr<FsTree> t(new FsTree(image));
  const size_t n = image.size();
  if (n == 0 || image.TypeAt(0) != EntryType::kDirectory || !image.PathAt(0).empty())
    return absl::DataLossError(StrCat(image.path(), ": the first entry is not the root directory"));
  t->nlink_.assign(n, 1);
  std::vector<size_t> dirs;  // the ancestors of entry i, innermost last
  for (size_t i = 0; i < n; ++i) {
    std::string_view path = image.PathAt(i);
    EntryType type = image.TypeAt(i);
    if (i > 0) {
      std::string_view parent = ParentPath(path);
      while (!dirs.empty() && image.PathAt(dirs.back()) != parent) dirs.pop_back();
      if (dirs.empty())
        return absl::DataLossError(StrCat(image.path(), ": /", path, ": parent directory is missing"));
    }
    switch (type) {
      case EntryType::kDirectory:
        if (i > 0) ++t->nlink_[dirs.back()];
        t->nlink_[i] = 2;
        dirs.push_back(i);
        break;
      case EntryType::kHardlink: {
        std::string target = image.EntryAt(i).link_target;
        auto p = image.Find(target);
        if (!p || *p == i || image.TypeAt(*p) == EntryType::kHardlink ||
            image.TypeAt(*p) == EntryType::kDirectory)
          return absl::DataLossError(
              StrCat(image.path(), ": /", path, ": hardlink to /", target, " which is not a file"));
        t->nlink_[i] = 0;
        ++t->nlink_[*p];
        t->primary_.emplace(static_cast<uint32_t>(i), static_cast<uint32_t>(*p));
        break;
      }
      case EntryType::kRegular:
        t->total_file_bytes_ += image.SizeAt(i);
        break;
      default:
        break;
    }
  }
  return t;
}

size_t FsTree::Primary(size_t i) const {
  if (nlink_[i] != 0) return i;
  return primary_.at(static_cast<uint32_t>(i));
}

std::optional<size_t> FsTree::EntryOfInode(uint64_t ino) const {
  if (ino == 0 || ino > nlink_.size() || nlink_[ino - 1] == 0) return std::nullopt;
  return static_cast<size_t>(ino - 1);
}

std::optional<size_t> FsTree::Lookup(size_t dir, std::string_view name) const {
  if (!IsDir(dir) || name.empty() || name == "." || name == ".." ||
      name.find('/') != std::string_view::npos)
    return std::nullopt;
  std::string_view dir_path = image_.PathAt(dir);
  if (dir_path.empty()) return image_.Find(name);
  std::string path;
  path.reserve(dir_path.size() + 1 + name.size());
  path.append(dir_path).append("/").append(name);
  return image_.Find(path);
}

size_t FsTree::Parent(size_t i) const {
  if (i == 0) return 0;
  auto p = image_.Find(ParentPath(image_.PathAt(i)));
  return p ? *p : 0;
}

size_t FsTree::NextSibling(size_t child) const {
  return IsDir(child) ? image_.SubtreeEnd(child) : child + 1;
}

uint32_t FsTree::Nlink(size_t i) const { return nlink_[Primary(i)]; }

void FsTree::Stat(size_t i, struct stat* st) const {
  size_t p = Primary(i);
  Entry e = image_.EntryAt(p);
  std::memset(st, 0, sizeof *st);
  st->st_ino = p + 1;
  st->st_mode = EntryTypeFormatBits(e.type) | (e.mode & 07777);
  st->st_nlink = nlink_[p];
  st->st_uid = e.uid;
  st->st_gid = e.gid;
  switch (e.type) {
    case EntryType::kRegular: st->st_size = static_cast<off_t>(e.size); break;
    case EntryType::kSymlink: st->st_size = static_cast<off_t>(e.link_target.size()); break;
    case EntryType::kDirectory: st->st_size = 4096; break;
    case EntryType::kCharDevice:
    case EntryType::kBlockDevice: st->st_rdev = makedev(e.dev_major, e.dev_minor); break;
    default: break;
  }
  st->st_blksize = 65536;
  st->st_blocks = (st->st_size + 511) / 512;
  st->st_mtim.tv_sec = e.mtime_sec;
  st->st_mtim.tv_nsec = e.mtime_nsec;
  st->st_atim = st->st_mtim;
  st->st_ctim = st->st_mtim;
}

namespace {

FsTree::XattrReply SizedReply(std::string bytes, size_t size) {
  FsTree::XattrReply r;
  if (size == 0) {
    r.needed = bytes.size();
  } else if (size < bytes.size()) {
    r.error = ERANGE;
  } else {
    r.bytes = std::move(bytes);
  }
  return r;
}

}  // namespace

FsTree::XattrReply FsTree::GetXattr(size_t i, std::string_view name, size_t size) const {
  Entry e = image_.EntryAt(Primary(i));
  for (Xattr& x : e.xattrs)
    if (x.name == name) return SizedReply(std::move(x.value), size);
  XattrReply r;
  r.error = ENODATA;
  return r;
}

FsTree::XattrReply FsTree::ListXattr(size_t i, size_t size) const {
  Entry e = image_.EntryAt(Primary(i));
  std::string names;
  for (const Xattr& x : e.xattrs) {
    names.append(x.name);
    names.push_back('\0');
  }
  return SizedReply(std::move(names), size);
}

}  // namespace d4c
