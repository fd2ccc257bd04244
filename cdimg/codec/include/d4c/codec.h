// Delta codecs: encode(base, target) -> patch; decode(base, patch) -> target.
// The codec id is stored per entry in a cdimg, so images mixing codecs decode.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "d4c/base/mutex.h"

namespace d4c {

// Stored on disk: never renumber.
enum class CodecId : uint8_t {
  kZstd = 1,     // zstd with the base as prefix (--patch-from), long matching
  kXdelta3 = 2,  // VCDIFF via libxdelta3
  kBsdiff = 3,   // suffix-array diff, zstd-compressed control/diff/extra
  kRelcopy = 4,  // copy/add with relative addresses, left for the pack's zstd
  kGzip = 5,     // a gzip file: an inner codec's delta of the inflated content + a deflate recipe
  kChain = 6,    // merge: patches of several deltas applied in sequence (ChainStep)
  kLzma = 7,     // a raw LZMA2 stream with the base as preset dictionary (the last id a recipe byte holds)
};

const char* CodecName(CodecId id);
// Accepts "zstd", "xdelta3", "bsdiff", "relcopy", "gzip", "lzma".
absl::StatusOr<CodecId> ParseCodecName(std::string_view name);

// Threads that one encode may use besides its caller's: the delta engine
// lends a codec the worker pool's idle threads, so that one big file does not
// leave the others idle. A codec's output must never depend on them.
// Thread-safety: implementations are internally synchronized: one object may
// serve several encodes running at once, and the tasks Run is given may run
// on any thread.
class Helpers {
 public:
  virtual ~Helpers() = default;
  // Runs every task, some on idle workers and the rest on the calling
  // thread; returns when all have finished.
  virtual void Run(const std::vector<std::function<void()>>& tasks) = 0;
  // Takes up to `max` idle workers off the pool (for a library that starts
  // its own threads, as zstd does) until Release(n); returns how many.
  virtual int Borrow(int max) = 0;
  virtual void Release(int n) = 0;
};
// None: tasks run one after the other on the caller, Borrow gives 0.
Helpers& NoHelpers();

// Helpers with threads of their own, for a program without a job pool
// (di3fs rebuilding one big file on a FUSE worker): each Run starts as many
// threads as its tasks need beside the caller, at most `extra` in all at
// any time (concurrent and nested Runs and Borrows share them; a Run that
// finds none free runs its tasks on the caller, as does one whose thread
// cannot be started). A task that throws stops the Run from starting more;
// the exception is thrown again on the caller after every thread finished.
// Thread-safe: Run, Borrow and Release may be called from any threads at
// once.
class SpawningHelpers final : public Helpers {
 public:
  explicit SpawningHelpers(int extra) : free_(extra > 0 ? extra : 0) {}
  void Run(const std::vector<std::function<void()>>& tasks) override;
  int Borrow(int max) override;
  void Release(int n) override;

 private:
  Mutex mu_;
  int free_ ABSL_GUARDED_BY(mu_);
};

class DeltaCodec {
 public:
  virtual ~DeltaCodec() = default;
  virtual CodecId id() const = 0;
  virtual absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const = 0;
  // The same bytes as Encode; codecs that can split their work use `helpers`.
  virtual absl::StatusOr<std::string> EncodeParallel(std::string_view base, std::string_view target,
                                                     Helpers& /*helpers*/) const {
    return Encode(base, target);
  }
  // As EncodeParallel, but a codec may give up (kOutOfRange) as soon as it
  // is clear that the patch would be larger than `limit` bytes, saving the
  // rest of the work. Used by diff's auto, which needs only the smallest.
  virtual absl::StatusOr<std::string> EncodeWithin(std::string_view base, std::string_view target,
                                                   Helpers& helpers, uint64_t /*limit*/) const {
    return EncodeParallel(base, target, helpers);
  }
  // EncodeWithin, and, where the codec makes it from the same work, its raw
  // pack form (EncodeRawForPack's bytes) into `raw`, left empty otherwise.
  virtual absl::StatusOr<std::string> EncodeWithinAndRaw(std::string_view base, std::string_view target,
                                                         Helpers& helpers, uint64_t limit, std::string* raw) const {
    raw->clear();
    return EncodeWithin(base, target, helpers, limit);
  }
  // A patch that will be compressed again together with others (a cdimg
  // pack): codecs that can skip their own entropy coding and checksums do so.
  // DecodeFromPack reads it back (Decode also does for xdelta3, whose pack
  // form is VCDIFF too).
  virtual absl::StatusOr<std::string> EncodeForPack(std::string_view base, std::string_view target) const {
    return Encode(base, target);
  }
  // Encode's bytes made from `member`, this target's EncodeForPack bytes,
  // without matching again: for codecs whose standalone form wraps the pack
  // form (relcopy: a checksum and a zstd frame of it). kUnimplemented for
  // the others.
  virtual absl::StatusOr<std::string> StandaloneFromPack(std::string_view /*target*/,
                                                         std::string_view /*member*/) const {
    return absl::UnimplementedError("the standalone form is not made from the pack form");
  }
  // A pack form without any entropy coding of the codec's own (relcopy's
  // pack form, bsdiff's raw form): files that got the same edit then share
  // byte-identical runs that the pack's frame stores once. Read back by
  // DecodeFromPack. kUnimplemented for codecs without one.
  virtual absl::StatusOr<std::string> EncodeRawForPack(std::string_view /*base*/, std::string_view /*target*/,
                                                       Helpers& /*helpers*/) const {
    return absl::UnimplementedError("no raw pack form");
  }
  // Must never return bytes of a size other than `target_size`, and must fail
  // cleanly (no crash, bounded memory) on corrupt or hostile patches.
  virtual absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const = 0;
  // A patch written by EncodeForPack. Codecs whose two forms differ read each
  // only as itself, so that damage cannot turn a checksummed standalone patch
  // into an unchecked pack one.
  virtual absl::StatusOr<std::string> DecodeFromPack(std::string_view base, std::string_view patch,
                                                     uint64_t target_size) const {
    return Decode(base, patch, target_size);
  }
  // The form a cdimg recipe records (`packed`).
  absl::StatusOr<std::string> DecodeForm(std::string_view base, std::string_view patch, uint64_t target_size,
                                         bool packed) const {
    return packed ? DecodeFromPack(base, patch, target_size) : Decode(base, patch, target_size);
  }
  // The base of a decode, made on demand (the chain reads it; it checks the
  // base against its digest only if what is built on it fails its own);
  // called once, on any thread.
  using BaseSource = std::function<absl::StatusOr<std::string>()>;
  // DecodeForm's bytes and errors (a failure of `base` is returned as it is,
  // before any of the patch's), but a codec may decode its patch's streams on
  // `helpers` while `base` runs, and may change the base's bytes in place
  // (they are its own): one big file's rebuild then uses idle threads.
  virtual absl::StatusOr<std::string> DecodeWith(const BaseSource& base, std::string_view patch,
                                                 uint64_t target_size, bool packed, Helpers& /*helpers*/) const {
    auto b = base();
    if (!b.ok()) return b.status();
    return DecodeForm(*b, patch, target_size, packed);
  }
};

// Codecs are stateless and thread-safe; the returned reference is static.
const DeltaCodec& GetCodec(CodecId id);

// Whether `content` looks like text: its first kTextSample bytes hold no NUL
// and fewer than one control byte (other than tab, line feed, vertical tab,
// form feed, carriage return, escape) in 100; bytes of 0x80 and up count as
// text (UTF-8). Empty content is not text. The zstd codec compresses text
// harder, and diff's auto gives zstd and lzma larger text files
// (docs/architecture.md, "The `auto` codec policy"): minified bundles and
// other text have patches made mostly of literals, which entropy coding
// stores best.
inline constexpr size_t kTextSample = 64 << 10;
bool LooksText(std::string_view content);

// One step of a chained patch (codec 6, docs/format.md): a patch of codec
// `codec` (1..5 or 7) in its pack form or not, making `out_size` bytes from the
// previous step's output (the first step: from the base).
struct ChainStep {
  CodecId codec = CodecId::kZstd;
  bool packed = false;
  uint64_t out_size = 0;
  std::string_view patch;  // into the buffer parsed or to be written
  uint64_t patch_length = 0;  // set by ParseChainPatch (= patch.size())
  // First step only (codec byte 0): `patch` is the step's output itself.
  bool stored = false;
  // In an image with placed packs: the step's bytes are not in the chained
  // patch but `patch_length` bytes at `offset` of the image's pack `pack`.
  // Only the image reader resolves them (CdimgImage::ReadPayload copies them
  // in); the codec refuses a patch with such a step.
  bool located = false;
  uint32_t pack = 0;
  uint64_t offset = 0;
};
inline constexpr uint64_t kMaxChainSteps = 64;
// The steps of a chained patch stored in form `packed`; checks the layout
// and bounds only (the steps' patches are checked when decoded).
absl::StatusOr<std::vector<ChainStep>> ParseChainPatch(std::string_view patch, bool packed);
// A chained patch of 2..kMaxChainSteps steps, in the form `packed`; a
// located step's bytes are left out (its pack and offset are written).
std::string MakeChainPatch(const std::vector<ChainStep>& steps, bool packed);

}  // namespace d4c
