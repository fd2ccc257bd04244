// FsTree: the inode view di3fs serves, computed from one cdimg's index and
// nothing else (no blobs). Independent of FUSE so that it can be tested
// without mounting.
//
// Inode numbers: entry index + 1 of the entry that holds the metadata, so the
// root (entry 0) is inode 1 (FUSE_ROOT_ID) and every name of a hardlink group
// maps to its primary's inode.
//
// Thread-safety: immutable after Build; every const method may be called
// from di3fs's FUSE threads at once.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"

namespace d4c {

class FsTree {
 public:
  // One pass over the index: directory link counts, hardlink groups.
  static absl::StatusOr<std::unique_ptr<FsTree>> Build(const CdimgImage& image);

  const CdimgImage& image() const { return image_; }
  size_t size() const { return image_.size(); }

  // Entry holding the metadata of entry i (i itself unless i is a hardlink).
  size_t Primary(size_t i) const;
  uint64_t InodeOf(size_t i) const { return Primary(i) + 1; }
  // Entry behind an inode number; nullopt for numbers no name maps to.
  std::optional<size_t> EntryOfInode(uint64_t ino) const;
  bool IsDir(size_t i) const { return image_.TypeAt(i) == EntryType::kDirectory; }

  // Child `name` of directory `dir` (the entry of that name, maybe a hardlink).
  std::optional<size_t> Lookup(size_t dir, std::string_view name) const;
  // Parent directory of entry i (the root is its own parent).
  size_t Parent(size_t i) const;

  // Children of a directory in index order: FirstChild, then NextSibling
  // until the result equals ChildrenEnd. Positions are entry indexes, so a
  // position is also a stable readdir cookie.
  size_t FirstChild(size_t dir) const { return dir + 1; }
  size_t NextSibling(size_t child) const;
  size_t ChildrenEnd(size_t dir) const { return image_.SubtreeEnd(dir); }

  // Directories: 2 + number of subdirectories. Others: size of the hardlink group.
  uint32_t Nlink(size_t i) const;
  // Full attributes of the inode behind entry i.
  void Stat(size_t i, struct stat* st) const;

  // Regular files: content size and digest of the inode behind entry i.
  uint64_t FileSize(size_t i) const { return image_.SizeAt(Primary(i)); }

  // Extended attributes with getxattr/listxattr semantics: `size` 0 asks for
  // the needed size; errno values ERANGE (buffer too small) and ENODATA.
  struct XattrReply {
    int error = 0;       // errno, or 0
    size_t needed = 0;   // when asked for the size
    std::string bytes;   // the value / the NUL-separated name list
  };
  XattrReply GetXattr(size_t i, std::string_view name, size_t size) const;
  XattrReply ListXattr(size_t i, size_t size) const;

  // Sum of regular file sizes (each inode once), for statfs.
  uint64_t total_file_bytes() const { return total_file_bytes_; }

 private:
  explicit FsTree(const CdimgImage& image) : image_(image) {}

  const CdimgImage& image_;
  // Per entry: directories 2 + subdirs; primaries of hardlink groups the group
  // size; 1 otherwise. Hardlink entries hold 0 (their primary's count applies).
  std::vector<uint32_t> nlink_;
  // hardlink entry -> primary entry
  std::unordered_map<uint32_t, uint32_t> primary_;
  uint64_t total_file_bytes_ = 0;
};

}  // namespace d4c
