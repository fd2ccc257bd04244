// di3fs --cdimg TOP [--base PARENT ...] [--cache-dir DIR --cache-size BYTES]
//       [-o OPTIONS] MOUNTPOINT
// Serves the cdimg chain read-only at MOUNTPOINT in the foreground until it is
// unmounted or the process gets SIGINT/SIGTERM/SIGHUP (then it unmounts).
// The flags are defined in d4c/di3fs_args.h (shared with the snapshotter).
#include <CLI/CLI.hpp>
#include <clocale>
#include <cstdio>

#include "d4c/di3fs.h"
#include "d4c/base/strcat.h"
#include "d4c/di3fs_args.h"

int main(int argc, char** argv) {
  std::setlocale(LC_ALL, "C");
  CLI::App app{"di3fs: read-only FUSE filesystem over a chain of cdimg images (lazy, verified)"};
  d4c::Di3fsArgs a;
  d4c::AddDi3fsFlags(app, &a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  absl::Status st = d4c::RunDi3fs(a.fs, a.mountpoint, a.takeover_fd);
  if (!st.ok()) {
    std::fprintf(stderr, "di3fs: %s\n", d4c::Msg(st.message()).c_str());
    return 1;
  }
  return 0;
}
