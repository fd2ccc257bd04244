// The `auto` codec policy of diff: which codecs run on a file, in which
// order, and when the slow ones are skipped. Pure decisions from sizes and a
// novelty measure (never from a clock), so a delta is the same bytes whatever
// the load or thread count. The rules and their reasons are described once,
// in docs/architecture.md ("The `auto` codec policy"); the numbers live in
// kCodecTraits and the constants below. EncodeFile (delta_common.cc) drives
// the codecs along these decisions.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "d4c/codec.h"
#include "d4c/delta.h"
#include "delta_internal.h"

namespace d4c::delta_internal {

// What `auto` knows about one codec.
struct CodecTraits {
  CodecId id;
  // Cost class: bytes of base + target encoded per millisecond, the slowest
  // rate measured on the corpus. Predicts a run time for time_budget_ms.
  double bytes_per_ms;
  // auto does not try it on targets smaller than this.
  uint64_t min_target;
  // auto does not try it when base + target exceeds this (it never won there),
  // or max_text_input when the target is text (LooksText).
  uint64_t max_input;
  uint64_t max_text_input;
  // In the general list (cheapest first). Not: relcopy, which auto runs only
  // for patches that go into a pack.
  bool general;
  // Suits big near-identical files whose patch will be packed: tried first.
  bool first_when_near_identical;
  // Loses on big files with much new content: skipped there.
  bool skipped_when_novel;
  // With packs on, skipped wherever zstd runs (base + target within zstd's
  // input limit and the time budget), or lzma in its place: no corpus delta
  // grew without it there.
  bool skipped_where_zstd_runs;
  // Skipped wherever lzma runs (its input limits are zstd's, from 64 KiB of
  // target): lzma's patch was the smaller one there, in less time (zstd 19
  // alone wins on near-identical text, but once packed it saves 0.05-0.4% for
  // ~10x lzma's time on those files: docs/architecture.md).
  bool skipped_where_lzma_runs;
  // Has a pack form distinct from its standalone form (EncodeForPack).
  bool two_forms;
  // Its standalone form wraps the pack form (StandaloneFromPack): one match
  // gives both, so the pack form is always made first.
  bool standalone_wraps_pack = false;
};

// Every codec, the general ones cheapest first (the order auto tries them).
extern const CodecTraits kCodecTraits[6];
const CodecTraits& TraitsOf(CodecId id);

// From this target size on, the codecs are chosen after a look at the file
// (MeasureNovelty against every base).
inline constexpr uint64_t kBigFile = 1 << 20;
// A first patch of at most 1/kTinyPatchRatio of a file of kTinyPatchMinFile
// bytes or more ends the search (the tiny-patch rule).
inline constexpr uint64_t kTinyPatchRatio = 2000;
inline constexpr uint64_t kTinyPatchMinFile = 256 << 10;
// An estimated patch over this many bytes (4 pack members) will not fit a
// pack member: two-form codecs encode their standalone form first (the same
// choice of form, docs/architecture.md, one encode instead of two). Targets
// from kStandaloneFirstMinFile up are measured for this alone, when packs
// are on (smaller ones cannot reach the estimate: one anchor per ~32 bytes).
inline constexpr uint64_t kStandaloneFirstPatch = 4 * kPackMemberMax;
inline constexpr uint64_t kStandaloneFirstMinFile = kStandaloneFirstPatch;
// A big target with at least this share (%) of its anchors new to the base
// skips the codecs marked skipped_when_novel.
inline constexpr uint64_t kNewPercentSkip = 10;
// Bytes of target content an anchor stands for, to guess a patch's size.
inline constexpr uint64_t kBytesPerAnchor = 32;

// The codecs of the general list whose predicted time fits the budget (the
// cheapest always does), or just the fixed codec.
std::vector<CodecId> CodecsFor(const DiffOptions& o, uint64_t base, uint64_t target, bool text = false);

// Whether relcopy's predicted time for these sizes fits the budget.
bool RelcopyFits(const DiffOptions& o, uint64_t base, uint64_t target);
// Whether bsdiff's time fits (its raw pack form, the alternate of a packed
// winner: docs/architecture.md, "Raw alternates in packs").
bool BsdiffFits(const DiffOptions& o, uint64_t base, uint64_t target);

// Which codecs to run on a target, in order, and how.
struct Plan {
  std::vector<CodecId> codecs;
  // The patch will not fit a pack member: two-form codecs encode their
  // standalone form first instead of a pack form that would be thrown away.
  bool standalone_first = false;
  // The target is text (LooksText; never with a fixed codec), as PlanCodecs
  // found: BestDelta picks its base with a fast patch when it has several.
  bool text = false;
};

// The plan from sizes alone: `base_max` the largest base, `first_base` the
// size of bases[0], `least` the novelty of the base that lacks least of the
// target (needed only under auto for big files, and for targets from
// kStandaloneFirstMinFile up when packs are on; nullopt otherwise).
Plan PlanFor(const DiffOptions& o, uint64_t base_max, uint64_t first_base, uint64_t target,
             const std::optional<Novelty>& least, bool text = false);
// The same, measuring the novelty of the targets PlanFor needs it for
// against `bases` (not empty).
Plan PlanCodecs(std::string_view target, const std::vector<Base>& bases, const DiffOptions& o);

// The tiny-patch rule: after the first codec's best patch of `patch` bytes,
// the other codecs of the plan are skipped.
bool SkipRestAfterFirst(const DiffOptions& o, uint64_t target, uint64_t patch);

// Whether auto runs relcopy now on the chosen base (of `base` bytes): packs
// on, not tried yet, and the best patch so far (`best_patch` bytes) will be
// packed.
bool RelcopyNext(const DiffOptions& o, bool tried, uint64_t best_patch, uint64_t base, uint64_t target);

// Whether auto runs the gzip codec (on the chosen base, after the others):
// the target starts like a gzip file or a zip archive, and the plan did not
// run it first (a zip archive from a zip archive, PlanCodecs). The codec
// refuses files whose deflate streams it cannot rebuild; then the other
// codecs' best patch stays.
bool GzipNext(const DiffOptions& o, const Plan& plan, std::string_view target);

// Whether auto keeps a patch of `patch` bytes from `codec` as a candidate: a
// relcopy patch no smaller than the file found nothing to copy.
bool KeepCandidate(const DiffOptions& o, CodecId codec, uint64_t patch, uint64_t target);

}  // namespace d4c::delta_internal
