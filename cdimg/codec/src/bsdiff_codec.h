// bsdiff delta codec. Patch layout (all integers little endian):
//   u32 ctrl_len, u32 diff_len, u32 extra_len   byte lengths of the three streams; bit 31
//                                               of ctrl_len marks the x86 code form
//   u64 target_hash                             Hash64 of the target
//   [x86 record]                                if marked: byte 1, varint start and size of
//                                               the base's and of the target's code span
//                                               (x86_code.h); the streams then rebuild the
//                                               target with absolute references from the
//                                               base with absolute references
//   ctrl                                        the control triples, nothing if none:
//                                               varint columns or fixed triples
//                                               (bsdiff_ctrl.h)
//   diff                                        nothing if empty, else byte 0x01, varint
//                                               length of the runs frame, the zstd frames
//                                               of the zero runs and of the literals
//                                               (bsdiff_zero_runs.h), or the whole stream
//                                               as an LZMA2 (0x02) or bzip2 (0x03) section
//                                               (alt_section.h); patches written before
//                                               the zero runs hold one zstd frame here
//   extra                                       one zstd frame, an LZMA2 or bzip2 section,
//                                               or nothing if empty
// The encoder writes each of diff and extra in whichever form is smallest,
// and, when base and target are both x86-64 ELF files, the x86 code form if
// that makes the patch smaller.
//
// Raw pack form (EncodeRawForPack; read only from a pack, DecodeFromPack):
// the same header, no x86 record, and every section uncompressed, as
// kRawPartsForm (multi_frame.h): ctrl = the three varint columns, diff = the
// zero runs and the literals, extra = the extra stream. Two files that got
// the same edit (prettier's `x.js` and `x.mjs`, each against its own old
// version) have nearly the same diff stream, which the pack's frame then
// stores once.
// The streams are described in bsdiff_diff.h.
#pragma once

#include <memory>

#include "d4c/codec.h"
#include "x86_adjust.h"
#include "x86_code.h"

namespace d4c::codec_internal {

class BsdiffCodec final : public DeltaCodec {
 public:
  // Both forms of an x86-64 ELF pair are computed side by side only for a
  // base of at most this many bytes: side by side holds both forms' indexes
  // (9 bytes per base byte each), and the job's memory estimate
  // (EncodeMemory in cdimg/ops: 11x the base + 4x the target + 256 MiB)
  // counts one index plus a constant that covers a second one up to here.
  // Larger pairs run one form after the other: the same bytes, less memory.
  static constexpr uint64_t kSideBySideMaxBase = 28 << 20;
  // Up to this target size every form of an x86-64 ELF pair is made: the
  // plain one, the x86 one and the adjusted one, which scans the target a
  // second time against the base moved along the x86 scan's blocks, in the
  // moved base's own index: three suffix sorts and scans. Larger targets get
  // the x86 form and the adjusted form rescanned in the x86 base's index
  // (EncodeX86Forms): one sort, one scan and a rescan that replays most of
  // the scan's searches. On biome's 28 MB binary, where the plain form lost
  // clearly, that costs 0.8-1.1% more bytes than the moved base's own index
  // and saves half the diff's time; containerd's 48 MB Go binary comes out
  // the same (docs/benchmarks.md, 2026-12-07 eleventh session). Below
  // 16 MiB the own index pays (debian-python's python3.11, 6.8 MB: 2.1%
  // smaller).
  static constexpr uint64_t kAllFormsMaxTarget = 16 << 20;
  explicit BsdiffCodec(int level = 19, uint64_t side_by_side_max_base = kSideBySideMaxBase,
                       uint64_t all_forms_max_target = kAllFormsMaxTarget)
      : level_(level), side_by_side_max_base_(side_by_side_max_base), all_forms_max_target_(all_forms_max_target) {}
  CodecId id() const override { return CodecId::kBsdiff; }
  absl::StatusOr<std::string> Encode(std::string_view base, std::string_view target) const override;
  absl::StatusOr<std::string> EncodeParallel(std::string_view base, std::string_view target,
                                             Helpers& helpers) const override;
  // Gives up before the slow level-19 compression of the streams when even
  // half their level-1 size exceeds `limit`.
  absl::StatusOr<std::string> EncodeWithin(std::string_view base, std::string_view target, Helpers& helpers,
                                           uint64_t limit) const override;
  // The standalone form; DecodeFromPack also reads the raw pack form.
  absl::StatusOr<std::string> Decode(std::string_view base, std::string_view patch,
                                     uint64_t target_size) const override;
  absl::StatusOr<std::string> DecodeFromPack(std::string_view base, std::string_view patch,
                                             uint64_t target_size) const override;
  // Non-ELF pairs (the plain form only): the raw form from the same diff.
  absl::StatusOr<std::string> EncodeWithinAndRaw(std::string_view base, std::string_view target, Helpers& helpers,
                                                 uint64_t limit, std::string* raw) const override;
  // The raw pack form of the plain form (above).
  absl::StatusOr<std::string> EncodeRawForPack(std::string_view base, std::string_view target,
                                               Helpers& helpers) const override;
  // The plain form, whether or not the x86 form would be smaller.
  absl::StatusOr<std::string> EncodePlain(std::string_view base, std::string_view target, Helpers& helpers,
                                          uint64_t limit) const;
  // The diff and extra sections decode on `helpers` while `base` is made,
  // which then takes the x86 form in place (no copy).
  absl::StatusOr<std::string> DecodeWith(const BaseSource& base, std::string_view patch, uint64_t target_size,
                                         bool packed, Helpers& helpers) const override;
  // The x86 code form on the given spans, whether or not it is the smaller.
  absl::StatusOr<std::string> EncodeX86(std::string_view base, std::string_view target, X86Span base_span,
                                        X86Span target_span, Helpers& helpers, uint64_t limit) const;
  // The adjusted x86 form (x86_adjust.h), whether or not it is the smaller;
  // kOutOfRange if a file has no program headers or it exceeds `limit`.
  // The target is scanned again against the moved base: up to
  // all_forms_max_target in the moved base's own index, above it in the
  // x86 base's (the x86 scan is run here for it). `first_map` (may be
  // null, used up to all_forms_max_target): the blocks of the x86 form's
  // scan of this pair, if already made (the same bytes either way).
  // `forms_of` (may be empty): a patch of this pair (the x86 form's) whose
  // extra section's form the adjusted form reuses, compressing that section
  // only in the form that patch chose (zstd, LZMA2 or bzip2) instead of all.
  absl::StatusOr<std::string> EncodeAdjusted(std::string_view base, std::string_view target, X86Span base_span,
                                             X86Span target_span, Helpers& helpers, uint64_t limit,
                                             const MoveMap* first_map = nullptr,
                                             std::string_view forms_of = {}) const;
  // Patches of the x86 form at least this big are tried in the adjusted form
  // too (a suffix sort and a scan more up to kAllFormsMaxTarget); below it
  // the gain is a few bytes at most.
  static constexpr uint64_t kAdjustMinPatch = 4096;
  // From this target size on, the forms' level-1 sizes choose which forms
  // are compressed at all (EncodeBigPair); below it compression is cheap
  // and every form is compressed.
  static constexpr uint64_t kQuickChoiceMinTarget = 1 << 20;

 private:
  absl::StatusOr<std::string> DecodeIn(std::string_view base, std::string_view patch, uint64_t target_size,
                                       bool packed) const;
  absl::StatusOr<std::string> EncodeFormsInTurn(std::string_view base, std::string_view target, X86Span base_span,
                                                X86Span target_span, Helpers& helpers, uint64_t limit) const;
  // `x86_map` (may be null): receives the blocks of the x86 form's scan.
  absl::StatusOr<std::string> EncodeBothForms(std::string_view base, std::string_view target, X86Span base_span,
                                              X86Span target_span, Helpers& helpers, uint64_t limit,
                                              std::optional<MoveMap>* x86_map = nullptr) const;
  // Targets over all_forms_max_target (see the .cc).
  absl::StatusOr<std::string> EncodeX86Forms(std::string_view base, std::string_view target, X86Span base_span,
                                             X86Span target_span, Helpers& helpers, uint64_t limit) const;
  // Pairs of kQuickChoiceMinTarget bytes or more (see the .cc).
  absl::StatusOr<std::string> EncodeBigPair(std::string_view base, std::string_view target, X86Span base_span,
                                            X86Span target_span, Helpers& helpers, uint64_t limit) const;
  // `raw` (plain form only, may be null): receives the raw pack form of the same diff.
  absl::StatusOr<std::string> EncodeStreams(std::string_view base, std::string_view target, Helpers& helpers,
                                            uint64_t limit, uint64_t hash, std::string_view x86_record,
                                            std::string* raw = nullptr) const;
  int level_;
  uint64_t side_by_side_max_base_;
  uint64_t all_forms_max_target_;
};

}  // namespace d4c::codec_internal
