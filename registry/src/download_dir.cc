#include "d4c/registry/download_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "d4c/base/digest.h"

namespace d4c::registry {
namespace {

// `<64 hex>.cdimg` or `<64 hex>.cdimg.partial`.
bool IsDownloadName(const std::string& name) {
  std::string_view rest = name;
  if (rest.ends_with(".partial")) rest.remove_suffix(8);
  if (!rest.ends_with(".cdimg") || rest.size() != 70) return false;
  Digest d;
  return ParseDigestHex(rest.substr(0, 64), &d);
}

}  // namespace

std::vector<std::string> PruneDownloadDir(const std::string& dir, const DownloadDirLimits& limits,
                                          const std::set<std::string>& keep) {
  struct File {
    std::string name;
    uint64_t bytes;
    std::filesystem::file_time_type written;
  };
  std::vector<File> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    std::error_code fe;
    if (!IsDownloadName(name) || !e.is_regular_file(fe)) continue;
    uint64_t bytes = e.file_size(fe);
    auto written = e.last_write_time(fe);
    if (!fe) files.push_back({name, bytes, written});
  }
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.written < b.written; });
  uint64_t total = 0;
  for (const auto& f : files) total += f.bytes;
  const auto now = std::filesystem::file_time_type::clock::now();
  std::vector<std::string> deleted;
  for (const auto& f : files) {
    if (keep.count(f.name)) continue;
    bool old = now - f.written > limits.max_age;
    if (!old && total <= limits.max_bytes) continue;
    std::error_code re;
    if (std::filesystem::remove(std::filesystem::path(dir) / f.name, re) && !re) {
      total -= f.bytes;
      deleted.push_back(f.name);
    }
  }
  return deleted;
}

}  // namespace d4c::registry
