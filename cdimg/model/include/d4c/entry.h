// The image model: one root filesystem as a sorted list of entries carrying
// everything a container sees (type, full mode, ownership, times, xattrs,
// device numbers, link targets, content digest).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

#include "d4c/base/digest.h"
#include "d4c/base/sha256.h"

namespace d4c {

enum class EntryType : uint8_t {
  kRegular = 1,
  kDirectory = 2,
  kSymlink = 3,
  // A second name for an earlier entry's inode. `link_target` is the path of
  // the primary entry (never itself a hardlink, never a directory); all other
  // metadata lives on the primary.
  kHardlink = 4,
  kCharDevice = 5,
  kBlockDevice = 6,
  kFifo = 7,
};
const char* EntryTypeName(EntryType t);
// S_IFMT bits for a type (a hardlink has none of its own).
uint32_t EntryTypeFormatBits(EntryType t);

struct Xattr {
  std::string name;
  std::string value;
  bool operator==(const Xattr&) const = default;
};

struct Entry {
  std::string path;  // relative to the root, no leading '/', "" is the root
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky (& 07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;  // regular files only
  uint32_t dev_major = 0;  // char/block devices only
  uint32_t dev_minor = 0;
  std::string link_target;  // symlink target, or hardlink primary path
  std::vector<Xattr> xattrs;  // sorted by name, unique names
  Digest digest{};  // regular files: sha256 of the content

  bool operator==(const Entry&) const = default;
};

// Total order on paths in which a directory's whole subtree directly follows
// it: paths compare component by component ('/' sorts before every byte).
int ComparePaths(std::string_view a, std::string_view b);
inline bool PathLess(std::string_view a, std::string_view b) { return ComparePaths(a, b) < 0; }

// Parent directory of a path ("" for top-level names). Precondition: path != "".
std::string_view ParentPath(std::string_view path);
std::string_view BaseName(std::string_view path);

// Limits every stored tree obeys (ValidateTree; the cdimg reader checks them too).
inline constexpr uint64_t kMaxConfigBytes = 16ull << 20;
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxXattrValueBytes = 64 * 1024;
inline constexpr size_t kMaxXattrsPerEntry = 256;

// Image id of a tree: sha256 of its canonical metadata encoding. Entries must be
// sorted by ComparePaths and valid (see ValidateTree).
Digest ComputeImageId(const std::vector<Entry>& entries);
// Checks the rules every stored tree obeys: sorted unique paths, a root dir,
// every parent is a directory, hardlinks name an existing non-dir primary, sizes.
absl::Status ValidateTree(const std::vector<Entry>& entries);

}  // namespace d4c
