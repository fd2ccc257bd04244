// Codec names and the registry of static codec instances.
#include "d4c/codec.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include "bsdiff_codec.h"
#include "chain_codec.h"
#include "gzip_codec.h"
#include "lzma_codec.h"
#include "relcopy_codec.h"
#include "xdelta3_codec.h"
#include "zstd_codec.h"
#include "d4c/base/strcat.h"

namespace d4c {

namespace {

// Stands in for an id read from a damaged file: GetCodec cannot fail, so
// the error surfaces when the codec is used.
class UnknownCodec final : public DeltaCodec {
 public:
  CodecId id() const override { return CodecId{0}; }
  absl::StatusOr<std::string> Encode(std::string_view, std::string_view) const override {
    return absl::InvalidArgumentError("unknown codec id");
  }
  absl::StatusOr<std::string> Decode(std::string_view, std::string_view, uint64_t) const override {
    return absl::DataLossError("unknown codec id");
  }
};

class SerialHelpers final : public Helpers {
 public:
  void Run(const std::vector<std::function<void()>>& tasks) override {
    for (const auto& t : tasks) t();
  }
  int Borrow(int) override { return 0; }
  void Release(int) override {}
};

}  // namespace

Helpers& NoHelpers() {
  static SerialHelpers* none = new SerialHelpers();
  return *none;
}

int SpawningHelpers::Borrow(int max) {
  MutexLock l(&mu_);
  int n = std::min(std::max(max, 0), free_);
  free_ -= n;
  return n;
}

void SpawningHelpers::Release(int n) {
  MutexLock l(&mu_);
  free_ += n;
}

void SpawningHelpers::Run(const std::vector<std::function<void()>>& tasks) {
  if (tasks.empty()) return;
  int lent = Borrow(static_cast<int>(std::min<size_t>(tasks.size() - 1, 1024)));
  std::atomic<size_t> next{0};
  // A task that throws (std::bad_alloc) on a lent thread must not end the
  // process: the first exception is thrown again on the caller, once every
  // thread has finished, as if the caller had run that task.
  std::mutex thrown_mu;
  std::exception_ptr thrown;
  auto work = [&] {
    for (size_t k; (k = next.fetch_add(1)) < tasks.size();) {
      try {
        tasks[k]();
      } catch (...) {
        std::lock_guard<std::mutex> l(thrown_mu);
        if (!thrown) thrown = std::current_exception();
        next = tasks.size();  // the rest is not started
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(lent);
  for (int t = 0; t < lent; ++t) {
    try {
      threads.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no thread: the caller does the rest
    }
  }
  work();
  for (std::thread& t : threads) t.join();
  Release(lent);
  if (thrown) std::rethrow_exception(thrown);
}

const char* CodecName(CodecId id) {
  switch (id) {
    case CodecId::kZstd:
      return "zstd";
    case CodecId::kXdelta3:
      return "xdelta3";
    case CodecId::kBsdiff:
      return "bsdiff";
    case CodecId::kRelcopy:
      return "relcopy";
    case CodecId::kGzip:
      return "gzip";
    case CodecId::kChain:
      return "chain";
    case CodecId::kLzma:
      return "lzma";
  }
  return "unknown";
}

absl::StatusOr<CodecId> ParseCodecName(std::string_view name) {
  for (CodecId id :
       {CodecId::kZstd, CodecId::kXdelta3, CodecId::kBsdiff, CodecId::kRelcopy, CodecId::kGzip, CodecId::kLzma}) {
    if (name == CodecName(id)) return id;
  }
  return absl::InvalidArgumentError(
      StrCat("unknown codec '", name, "' (valid: zstd, xdelta3, bsdiff, relcopy, gzip, lzma)"));
}

bool LooksText(std::string_view content) {
  if (content.empty()) return false;
  std::string_view sample = content.substr(0, kTextSample);
  size_t control = 0;
  for (unsigned char c : sample) {
    if (c == 0) return false;
    control += (c < 0x20 && (c < '\t' || c > '\r') && c != 0x1b) || c == 0x7f;
  }
  return control * 100 < sample.size();
}

const DeltaCodec& GetCodec(CodecId id) {
  // Function-local statics: built on first use, thread-safe, never destroyed
  // before other statics that might still decode.
  static const auto* zstd = new codec_internal::ZstdCodec();
  static const auto* xdelta3 = new codec_internal::Xdelta3Codec();
  static const auto* bsdiff = new codec_internal::BsdiffCodec();
  static const auto* relcopy = new codec_internal::RelcopyCodec();
  static const auto* gzip = new codec_internal::GzipCodec();
  static const auto* chain = new codec_internal::ChainCodec();
  static const auto* lzma = new codec_internal::LzmaCodec();
  static const auto* unknown = new UnknownCodec();
  switch (id) {
    case CodecId::kZstd:
      return *zstd;
    case CodecId::kXdelta3:
      return *xdelta3;
    case CodecId::kBsdiff:
      return *bsdiff;
    case CodecId::kRelcopy:
      return *relcopy;
    case CodecId::kGzip:
      return *gzip;
    case CodecId::kChain:
      return *chain;
    case CodecId::kLzma:
      return *lzma;
  }
  return *unknown;
}

}  // namespace d4c
