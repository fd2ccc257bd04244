// cdimg_open_bench FILE...: how long opening an image and looking up paths
// take, versus decoding every entry into heap objects (what a naive reader
// would do). Prints one markdown row per image.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "d4c/cdimg.h"

namespace {
double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
}  // namespace

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  std::printf("| image | entries | index bytes | open ms | lookup us (avg, all paths) | decode all entries ms |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (int a = 1; a < argc; ++a) {
    const int kRounds = 20;
    auto t0 = Clock::now();
    std::unique_ptr<d4c::CdimgImage> img;
    for (int r = 0; r < kRounds; ++r) {
      auto o = d4c::CdimgImage::Open(argv[a]);
      if (!o.ok()) {
        std::fprintf(stderr, "%s: %s\n", argv[a], std::string(o.status().message()).c_str());
        return 1;
      }
      img = std::move(*o);
    }
    double open_ms = Ms(Clock::now() - t0) / kRounds;
    std::vector<std::string> paths;
    for (size_t i = 0; i < img->size(); ++i) paths.emplace_back(img->PathAt(i));
    auto t1 = Clock::now();
    size_t found = 0;
    for (const auto& p : paths) found += img->Find(p).has_value();
    double lookup_us = Ms(Clock::now() - t1) * 1000 / static_cast<double>(paths.size());
    auto t2 = Clock::now();
    std::vector<d4c::Entry> all;
    for (size_t i = 0; i < img->size(); ++i) all.push_back(img->EntryAt(i));
    double decode_ms = Ms(Clock::now() - t2);
    if (found != paths.size()) return 1;
    std::printf("| %s | %zu | %llu | %.2f | %.3f | %.2f |\n", argv[a], img->size(),
                static_cast<unsigned long long>(img->header().meta_length), open_ms, lookup_us, decode_ms);
  }
  return 0;
}
