// The bsdiff difference algorithm (Colin Percival, "Naive differences of
// executable code", 2003; his bsdiff 4.3 is BSD-licensed), reimplemented here:
// suffix-array matches extended approximately, so that the "diff" stream of
// bytewise differences is mostly zeros and compresses well.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/codec.h"

namespace d4c::codec_internal {

// One control triple: out[i] = diff[j] + base[old_pos] for the next `add`
// bytes, then `copy` bytes taken verbatim from extra, then old_pos moves by
// `seek`.
struct BsdiffTriple {
  uint64_t add = 0;
  uint64_t copy = 0;
  int64_t seek = 0;
  bool operator==(const BsdiffTriple&) const = default;
};

struct BsdiffStreams {
  std::vector<BsdiffTriple> ctrl;
  std::string diff;
  std::string extra;
};

// The target is scanned in segments of this size, independently (each as if
// the decoder started it at old position 0), so that they can run on several
// threads; the split depends on the target size only, never on the threads.
// On biome's 28 MB binary, 4 MiB segments cost ~0.1% of the patch.
inline constexpr uint64_t kBsdiffSegment = 4 << 20;

// Where each search for the longest match starts: the result is the same,
// only the cost differs; kBucketOnly (less memory, slower) and kWholeArray
// (Percival's search over the whole suffix array, slowest) are there so
// that tests can check that.
enum class SearchStart { kLinked, kBucketOnly, kWholeArray };

// Fails only for inputs divsufsort cannot index (>= 2 GiB) or out of memory.
// The segments' scans run as `helpers` tasks.
absl::StatusOr<BsdiffStreams> BsdiffCompute(std::string_view base, std::string_view target,
                                            Helpers& helpers = NoHelpers(),
                                            SearchStart start = SearchStart::kLinked);

// The diff stream of `ctrl`'s add blocks against `base` (target minus base,
// bytewise), as the patcher adds it back; ctrl must lie within both files.
std::string BsdiffDiffStream(const std::vector<BsdiffTriple>& ctrl, std::string_view base, std::string_view target);

// One of the diffs BsdiffComputeMany computes together.
struct BsdiffInput {
  std::string_view base, target;
  // If set, they may rewrite in place the bytes that base and target view
  // (the x86 code form): prepare_base runs on the thread that then sorts
  // the base, prepare_target beside the sorts.
  std::function<void()> prepare_base, prepare_target;
};

// BsdiffCompute of every input, the same streams, computed side by side: the
// suffix sorts (one thread's work each: 1.2-2 s for biome's 28 MB) run at
// once as `helpers` tasks, then all inputs' segments are scanned as one set
// of tasks, so that two diffs of one file keep two threads busy where one
// after the other each left a thread idle during its sort. Holds every
// input's index at once (~9 bytes per base byte each).
std::vector<absl::StatusOr<BsdiffStreams>> BsdiffComputeMany(const std::vector<BsdiffInput>& inputs,
                                                             Helpers& helpers = NoHelpers(),
                                                             SearchStart start = SearchStart::kLinked);

// BsdiffComputeMany in steps, for a caller that runs other work beside one
// input's scan (the adjusted x86 form's suffix sort beside the plain form's
// scan): Build sorts every base side by side, then each input is scanned
// (Scan, or ScanTasks run by the caller and then Join), in any order. Each
// input's streams are BsdiffCompute's. An input's index is freed when it is
// joined. Not thread-safe: one thread drives it (its tasks run on helpers).
class BsdiffBatch {
 public:
  explicit BsdiffBatch(std::vector<BsdiffInput> inputs, SearchStart start = SearchStart::kLinked);
  ~BsdiffBatch();
  BsdiffBatch(const BsdiffBatch&) = delete;
  BsdiffBatch& operator=(const BsdiffBatch&) = delete;

  // Allocates (on the caller) and sorts every base, preparing bases and
  // targets first (BsdiffInput), as tasks on `helpers`. Once.
  void Build(Helpers& helpers);
  // Input j's scan: its segments' tasks appended to `tasks`.
  void ScanTasks(size_t j, std::vector<std::function<void()>>* tasks);
  // Input j's streams, once its scan tasks have run (or its error). Frees
  // its index unless `keep_index` (for a Rescan).
  absl::StatusOr<BsdiffStreams> Join(size_t j, bool keep_index = false);
  // ScanTasks, run on `helpers` after `beside` (started first: put long
  // tasks there), then Join.
  absl::StatusOr<BsdiffStreams> Scan(size_t j, Helpers& helpers, std::vector<std::function<void()>> beside = {},
                                     bool keep_index = false);
  // Input j's target scanned again (after Build, or after a Scan that kept
  // its index) against `scored`: its base with some bytes rewritten (the
  // same size, alive until this returns). Matches are still searched in the
  // base's suffix order, those the kept Scan searched replayed from it (the
  // same outcome at a fraction of the cost, unless a segment reaches its
  // work budget, which counts only the searches run); their lengths and
  // the alignments are taken on `scored`. The streams have no diff: the
  // caller diffs the blocks against the base it stores. Frees the index.
  // InvalidArgument if `scored` is not the base's size, FailedPrecondition
  // without the index.
  absl::StatusOr<BsdiffStreams> Rescan(size_t j, std::string_view scored, Helpers& helpers);

 private:
  struct Part;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace d4c::codec_internal
