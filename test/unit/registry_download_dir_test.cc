// PruneDownloadDir: what a pull leaves in its download directory is bounded
// in age and bytes, and only download files are ever touched.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/base/strcat.h"
#include "d4c/registry/download_dir.h"

using namespace d4c;
using namespace d4c::registry;
namespace fs = std::filesystem;
using std::chrono::hours;

namespace {

std::string Name(char c, bool partial) { return std::string(64, c) + (partial ? ".cdimg.partial" : ".cdimg"); }

void Put(const fs::path& dir, const std::string& name, size_t bytes, hours age) {
  std::ofstream(dir / name) << std::string(bytes, 'x');
  fs::last_write_time(dir / name, fs::file_time_type::clock::now() - age);
}

std::set<std::string> Names(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

TEST_CASE("download dir: old files go, then the oldest until the rest fit, kept and foreign files stay") {
  fs::path dir = fs::temp_directory_path() / StrCat("d4c-dldir-test-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  Put(dir, Name('a', true), 100, hours(24 * 30));  // too old
  Put(dir, Name('b', false), 100, hours(24 * 30));  // too old, but resumed by this pull
  Put(dir, Name('c', true), 400, hours(48));
  Put(dir, Name('d', true), 400, hours(24));
  Put(dir, Name('e', true), 400, hours(1));
  Put(dir, "notes.txt", 10, hours(24 * 365));  // not a download file
  Put(dir, "abc.cdimg.partial", 10, hours(24 * 365));

  DownloadDirLimits limits;
  limits.max_age = hours(24 * 7);
  limits.max_bytes = 1000;
  auto gone = PruneDownloadDir(dir.string(), limits, {Name('b', false)});
  // a: old. Then 100 (b) + 1200 > 1000: c (oldest) goes, 900 is left.
  CHECK(std::set<std::string>(gone.begin(), gone.end()) == std::set<std::string>{Name('a', true), Name('c', true)});
  CHECK(Names(dir) == std::set<std::string>{Name('b', false), Name('d', true), Name('e', true), "notes.txt",
                                            "abc.cdimg.partial"});
  // Within both bounds: nothing more.
  // b is too old once no pull resumes it.
  CHECK(PruneDownloadDir(dir.string(), limits, {}) == std::vector<std::string>{Name('b', false)});
  CHECK(PruneDownloadDir(dir.string(), limits, {}).empty());
  // A directory that does not exist: nothing to do.
  CHECK(PruneDownloadDir((dir / "none").string(), limits, {}).empty());
  fs::remove_all(dir);
}
