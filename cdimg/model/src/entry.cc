#include "d4c/entry.h"

#include <sys/stat.h>

#include <cstring>

namespace d4c {

const char* EntryTypeName(EntryType t) {
  switch (t) {
    case EntryType::kRegular: return "file";
    case EntryType::kDirectory: return "dir";
    case EntryType::kSymlink: return "symlink";
    case EntryType::kHardlink: return "hardlink";
    case EntryType::kCharDevice: return "chardev";
    case EntryType::kBlockDevice: return "blockdev";
    case EntryType::kFifo: return "fifo";
  }
  return "unknown";
}

uint32_t EntryTypeFormatBits(EntryType t) {
  switch (t) {
    case EntryType::kRegular: return S_IFREG;
    case EntryType::kDirectory: return S_IFDIR;
    case EntryType::kSymlink: return S_IFLNK;
    case EntryType::kCharDevice: return S_IFCHR;
    case EntryType::kBlockDevice: return S_IFBLK;
    case EntryType::kFifo: return S_IFIFO;
    case EntryType::kHardlink: return 0;
  }
  return 0;
}

int ComparePaths(std::string_view a, std::string_view b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    // '/' ranks below every other byte so that "a/x" < "a-b": a directory's
    // descendants then form one contiguous run right after it.
    unsigned ca = a[i] == '/' ? 0u : static_cast<unsigned char>(a[i]) + 1u;
    unsigned cb = b[i] == '/' ? 0u : static_cast<unsigned char>(b[i]) + 1u;
    if (ca != cb) return ca < cb ? -1 : 1;
  }
  if (a.size() == b.size()) return 0;
  return a.size() < b.size() ? -1 : 1;
}

std::string_view ParentPath(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

std::string_view BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace d4c
