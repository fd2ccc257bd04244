// codec_bench: one codec on one pair of files, timed, to profile and compare
// codec changes without a whole diff around them.
//
//   codec_bench <zstd|xdelta3|bsdiff|relcopy|gzip> BASE TARGET [THREADS]
//
// D4C_BENCH_PACK=1 encodes and decodes the pack form instead (EncodeForPack),
// D4C_BENCH_PACK=raw the raw pack form (EncodeRawForPack);
// D4C_BENCH_OUT=FILE writes the patch to FILE.
// D4C_BSDIFF_ALL_FORMS_MAX=N: bsdiff with BsdiffCodec's all_forms_max_target
// N instead of kAllFormsMaxTarget (every form of a bigger x86-64 ELF target).
//
// Prints the patch size, the encode wall time (with THREADS - 1 helper
// threads, as diff lends a big file its idle workers), and the decode time;
// for bsdiff also the suffix sort + scan alone. Exits non-zero if the patch
// does not decode to the target.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bsdiff_codec.h"
#include "bsdiff_diff.h"
#include "d4c/codec.h"

namespace {

// Runs tasks on `threads` threads (the caller's included).
class ThreadHelpers : public d4c::Helpers {
 public:
  explicit ThreadHelpers(int threads) : threads_(threads) {}
  void Run(const std::vector<std::function<void()>>& tasks) override {
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next++) < tasks.size();) tasks[i]();
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads_; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  int Borrow(int max) override { return std::min(max, threads_ - 1); }
  void Release(int) override {}

 private:
  int threads_;
};

bool ReadFile(const char* path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s CODEC BASE TARGET [THREADS]\n", argv[0]);
    return 2;
  }
  auto id = d4c::ParseCodecName(argv[1]);
  std::string base, target;
  if (!id.ok() || !ReadFile(argv[2], &base) || !ReadFile(argv[3], &target)) {
    std::fprintf(stderr, "codec_bench: bad codec name or unreadable file\n");
    return 2;
  }
  ThreadHelpers helpers(argc > 4 ? std::atoi(argv[4]) : 1);
  const char* all_forms = std::getenv("D4C_BSDIFF_ALL_FORMS_MAX");
  const d4c::codec_internal::BsdiffCodec bsdiff(19, d4c::codec_internal::BsdiffCodec::kSideBySideMaxBase,
                                                all_forms ? std::strtoull(all_forms, nullptr, 10)
                                                          : d4c::codec_internal::BsdiffCodec::kAllFormsMaxTarget);
  const d4c::DeltaCodec& codec = *id == d4c::CodecId::kBsdiff ? bsdiff : d4c::GetCodec(*id);
  if (*id == d4c::CodecId::kBsdiff) {
    auto t0 = std::chrono::steady_clock::now();
    auto streams = d4c::codec_internal::BsdiffCompute(base, target, helpers);
    if (!streams.ok()) return 1;
    std::printf("bsdiff_scan_s=%.3f ctrl=%zu diff=%zu extra=%zu\n", Since(t0), streams->ctrl.size(),
                streams->diff.size(), streams->extra.size());
    // D4C_BSDIFF_DUMP=PREFIX writes the raw streams to PREFIX.{diff,extra}, to try compressors on them.
    if (const char* dump = std::getenv("D4C_BSDIFF_DUMP")) {
      std::ofstream(std::string(dump) + ".diff", std::ios::binary) << streams->diff;
      std::ofstream(std::string(dump) + ".extra", std::ios::binary) << streams->extra;
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  const char* pack_env = std::getenv("D4C_BENCH_PACK");
  const bool pack = pack_env != nullptr;
  const bool raw = pack && std::string_view(pack_env) == "raw";
  auto patch = raw    ? codec.EncodeRawForPack(base, target, helpers)
               : pack ? codec.EncodeForPack(base, target)
                      : codec.EncodeParallel(base, target, helpers);
  double enc = Since(t0);
  if (!patch.ok()) {
    std::fprintf(stderr, "encode: %s\n", patch.status().ToString().c_str());
    return 1;
  }
  // D4C_BENCH_OUT=FILE writes the patch there (to try packing patches together).
  if (const char* out = std::getenv("D4C_BENCH_OUT")) std::ofstream(out, std::ios::binary) << *patch;
  t0 = std::chrono::steady_clock::now();
  auto back = codec.DecodeForm(base, *patch, target.size(), pack);
  double dec = Since(t0);
  bool same = back.ok() && *back == target;
  std::printf("codec=%s bytes=%zu encode_s=%.3f decode_s=%.3f roundtrip=%s\n", argv[1], patch->size(), enc, dec,
              same ? "ok" : "FAILED");
  return same ? 0 : 1;
}
