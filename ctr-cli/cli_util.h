// Shared helpers of ctr-cli commands: error reporting and TTY progress.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "d4c/base/strcat.h"

namespace d4c::cli {

// ctr-cli's own download directory for pulls (the snapshotter's root is the
// snapshotter's); `ctr-cli prune` bounds it too.
inline constexpr const char* kDefaultDownloadDir = "/var/cache/d4c/downloads";

// Prints "ctr-cli: <what>: <status message>" and returns the exit code 1.
inline int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "ctr-cli: %s: %s\n", what.c_str(), Msg(s.message()).c_str());
  return 1;
}

inline std::string HumanBytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// A one-line progress meter on stderr, only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)), tty_(isatty(2)) {}
  ~Progress() {
    if (tty_ && drawn_) std::fprintf(stderr, "\n");
  }
  void Update(uint64_t done, uint64_t total) {
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(100) && done < total) return;
    last_ = now;
    drawn_ = true;
    double pct = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 0;
    std::fprintf(stderr, "\r%s: %s / %s (%.0f%%)   ", label_.c_str(), HumanBytes(done).c_str(),
                 HumanBytes(total).c_str(), pct);
    std::fflush(stderr);
  }

 private:
  std::string label_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace d4c::cli
