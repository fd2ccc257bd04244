// di3fs --cdimg TOP [--base PARENT ...] [--cache-dir DIR --cache-size BYTES]
//       [-o OPTIONS] MOUNTPOINT
// Serves the cdimg chain read-only at MOUNTPOINT in the foreground until it is
// unmounted or the process gets SIGINT/SIGTERM/SIGHUP (then it unmounts).
#include <CLI/CLI.hpp>
#include <clocale>
#include <cstdio>

#include "d4c/di3fs.h"
#include "d4c/base/strcat.h"

int main(int argc, char** argv) {
  std::setlocale(LC_ALL, "C");
  CLI::App app{"di3fs: read-only FUSE filesystem over a chain of cdimg images (lazy, verified)"};
  d4c::Di3fsOptions o;
  std::string mountpoint;
  app.add_option("--cdimg", o.cdimg, "The image to serve (full or delta cdimg)")->required();
  app.add_option("--base", o.bases, "An ancestor image of a delta (repeatable, any order)");
  app.add_option("--cache-dir", o.cache_dir,
                 "Content cache directory, shareable between mounts (default: a private temporary one)");
  app.add_option("--cache-size", o.cache_size, "Content cache limit in bytes (suffixes K, M, G; default 2G)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("-o", o.mount_options, "Mount options, e.g. allow_other (repeatable, comma lists)");
  app.add_option("--timeout", o.timeout_sec, "Kernel attribute/entry cache seconds (default 3600)");
  app.add_option("--threads", o.max_idle_threads, "Idle worker threads kept (default 16)");
  app.add_flag("-d,--debug", o.debug, "Trace every FUSE request on stderr");
  app.add_option("mountpoint", mountpoint, "Directory to mount on")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  absl::Status st = d4c::RunDi3fs(o, mountpoint);
  if (!st.ok()) {
    std::fprintf(stderr, "di3fs: %s\n", d4c::Msg(st.message()).c_str());
    return 1;
  }
  return 0;
}
