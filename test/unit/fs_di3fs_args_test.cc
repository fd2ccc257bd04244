// The di3fs command line contract: what the snapshotter builds with ToArgv is
// what di3fs parses with AddDi3fsFlags (d4c/di3fs_args.h).
#include <catch2/catch.hpp>

#include "d4c/di3fs_args.h"

using namespace d4c;

namespace {

Di3fsArgs Parse(const std::vector<std::string>& argv) {
  CLI::App app{"di3fs"};
  Di3fsArgs a;
  AddDi3fsFlags(app, &a);
  std::vector<const char*> cargv;
  for (const auto& s : argv) cargv.push_back(s.c_str());
  app.parse(static_cast<int>(cargv.size()), cargv.data());
  return a;
}

}  // namespace

TEST_CASE("di3fs args: ToArgv round-trips through di3fs's parser") {
  Di3fsArgs a;
  a.fs.cdimg = "/r/store/top.cdimg";
  a.fs.bases = {"/r/store/p1.cdimg", "/r/store/p 2.cdimg"};
  a.fs.cache_dir = "/r/cache/x";
  a.fs.cache_size = 123456789;
  a.fs.mount_options = {"allow_other"};
  a.mountpoint = "/r/mnt/x";
  auto argv = ToArgv("di3fs", a);
  // The snapshotter's historical command line, flag for flag.
  CHECK(argv == std::vector<std::string>{"di3fs", "--cdimg", "/r/store/top.cdimg", "--base", "/r/store/p1.cdimg",
                                         "--base", "/r/store/p 2.cdimg", "--cache-dir", "/r/cache/x",
                                         "--cache-size", "123456789", "-o", "allow_other", "/r/mnt/x"});
  Di3fsArgs b = Parse(argv);
  CHECK(b.fs.cdimg == a.fs.cdimg);
  CHECK(b.fs.bases == a.fs.bases);
  CHECK(b.fs.cache_dir == a.fs.cache_dir);
  CHECK(b.fs.cache_size == a.fs.cache_size);
  CHECK(b.fs.cache_root.empty());
  CHECK(b.fs.mount_options == a.fs.mount_options);
  CHECK(b.mountpoint == a.mountpoint);
  CHECK(!b.fs.debug);

  a.fs.timeout_sec = 2.5;
  a.fs.max_idle_threads = 3;
  a.fs.debug = true;
  a.fs.cache_dir.clear();
  a.fs.cache_root = "/r/cache";
  Di3fsArgs c = Parse(ToArgv("di3fs", a));
  CHECK(c.fs.cache_root == "/r/cache");
  CHECK(c.fs.timeout_sec == 2.5);
  CHECK(c.fs.max_idle_threads == 3u);
  CHECK(c.fs.debug);
  CHECK(c.fs.cache_dir.empty());
  CHECK(c.mountpoint == "/r/mnt/x");
  CHECK(c.takeover_fd == -1);

  // A replacement daemon: --takeover-fd, before the mountpoint.
  a.takeover_fd = 3;
  auto t = ToArgv("di3fs", a);
  REQUIRE(t.size() >= 3);
  CHECK(t[t.size() - 3] == "--takeover-fd");
  CHECK(t[t.size() - 2] == "3");
  Di3fsArgs d = Parse(t);
  CHECK(d.takeover_fd == 3);
  CHECK(d.mountpoint == "/r/mnt/x");
}
