// The di3fs command line, one definition for both sides of the exec: the
// snapshotter builds argv with ToArgv (mounter.cc) and di3fs parses it with
// AddDi3fsFlags (di3fs_main.cc). Header-only (target d4c_di3fs_args), so the
// snapshotter includes it without linking di3fs or libfuse.
//
//   di3fs --cdimg TOP [--base PARENT ...] [--cache-dir DIR] [--cache-root ROOT] [--cache-size BYTES]
//         [-o OPTIONS ...] [--timeout SEC] [--threads N] [-d] [--takeover-fd FD] MOUNTPOINT
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "d4c/di3fs.h"

namespace d4c {

struct Di3fsArgs {
  Di3fsOptions fs;
  std::string mountpoint;
  // >= 0: serve the existing connection on this inherited /dev/fuse
  // descriptor instead of mounting (Di3fs::TakeOver).
  int takeover_fd = -1;
};

namespace di3fs_flags {
inline constexpr const char* kCdimg = "--cdimg";
inline constexpr const char* kBase = "--base";
inline constexpr const char* kCacheDir = "--cache-dir";
inline constexpr const char* kCacheRoot = "--cache-root";
inline constexpr const char* kCacheSize = "--cache-size";
inline constexpr const char* kMountOption = "-o";
inline constexpr const char* kTimeout = "--timeout";
inline constexpr const char* kThreads = "--threads";
inline constexpr const char* kDebug = "-d";
inline constexpr const char* kTakeoverFd = "--takeover-fd";
}  // namespace di3fs_flags

// argv for exec: `binary` first, then the flags; fields left at their
// defaults are omitted except --cache-size (always given).
inline std::vector<std::string> ToArgv(const std::string& binary, const Di3fsArgs& a) {
  namespace f = di3fs_flags;
  const Di3fsOptions defaults;
  std::vector<std::string> v = {binary, f::kCdimg, a.fs.cdimg};
  for (const auto& b : a.fs.bases) v.insert(v.end(), {f::kBase, b});
  if (!a.fs.cache_dir.empty()) v.insert(v.end(), {f::kCacheDir, a.fs.cache_dir});
  if (!a.fs.cache_root.empty()) v.insert(v.end(), {f::kCacheRoot, a.fs.cache_root});
  v.insert(v.end(), {f::kCacheSize, std::to_string(a.fs.cache_size)});
  for (const auto& o : a.fs.mount_options) v.insert(v.end(), {f::kMountOption, o});
  if (a.fs.timeout_sec != defaults.timeout_sec) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", a.fs.timeout_sec);
    v.insert(v.end(), {f::kTimeout, buf});
  }
  if (a.fs.max_idle_threads != defaults.max_idle_threads)
    v.insert(v.end(), {f::kThreads, std::to_string(a.fs.max_idle_threads)});
  if (a.fs.debug) v.push_back(f::kDebug);
  if (a.takeover_fd >= 0) v.insert(v.end(), {f::kTakeoverFd, std::to_string(a.takeover_fd)});
  v.push_back(a.mountpoint);
  return v;
}

// Declares di3fs's options on `app`, parsed into `a`.
inline void AddDi3fsFlags(CLI::App& app, Di3fsArgs* a) {
  namespace f = di3fs_flags;
  app.add_option(f::kCdimg, a->fs.cdimg, "The image to serve (full or delta cdimg)")->required();
  app.add_option(f::kBase, a->fs.bases, "An ancestor image of a delta (repeatable, any order)");
  app.add_option(f::kCacheDir, a->fs.cache_dir,
                 "Content cache directory, shareable between mounts (default: a private temporary one)");
  app.add_option(f::kCacheRoot, a->fs.cache_root,
                 "Budget root shared with other daemons: --cache-dir or a parent of it (default: --cache-dir)");
  app.add_option(f::kCacheSize, a->fs.cache_size,
                 "Budget in bytes of everything under the cache root, written to ROOT/.budget; 0 keeps the "
                 "file's (suffixes K, M, G; default 2G)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option(f::kMountOption, a->fs.mount_options, "Mount options, e.g. allow_other (repeatable, comma lists)");
  app.add_option(f::kTimeout, a->fs.timeout_sec, "Kernel attribute/entry cache seconds (default 3600)");
  app.add_option(f::kThreads, a->fs.max_idle_threads, "Idle worker threads kept (default 16)");
  app.add_flag(std::string(f::kDebug) + ",--debug", a->fs.debug, "Trace every FUSE request on stderr");
  app.add_option(f::kTakeoverFd, a->takeover_fd,
                 "Take over the connection of a killed di3fs: FD is an inherited copy of its /dev/fuse "
                 "descriptor, still mounted at MOUNTPOINT (needs Linux 6.9 to replay the requests it lost)");
  app.add_option("mountpoint", a->mountpoint, "Directory to mount on")->required();
}

}  // namespace d4c
