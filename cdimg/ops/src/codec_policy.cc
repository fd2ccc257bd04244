// The `auto` codec policy (codec_policy.h). The rules are described in
// docs/architecture.md, "The `auto` codec policy"; the measurements behind
// each number are noted beside it.
#include "codec_policy.h"

#include <algorithm>
#include <limits>

#include "d4c/deflate.h"

namespace d4c::delta_internal {

namespace {
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();
}  // namespace

// Rates: the slowest measured on the corpus (a 30 MB Rust binary; text is
// 5-40x faster for xdelta3 and bsdiff) on a busy 2-core machine. A model
// rather than a clock keeps the output independent of load and thread count.
//
// zstd with the whole base as prefix (level 19, long matching) costs ~0.5 s
// per MB of base + target, and on the corpus it never beat xdelta3 or bsdiff
// on a binary over 130 KB (on big files: 4.14 MB against bsdiff's 3.70 MB for
// biome's 28 MB binary, in 27 s): hence its 1 MiB input limit. It was 4 MiB
// until the debian pair showed the cost: four files of 1.2-4.1 MB of base +
// target took 4.0 s of zstd's 5.1 s there (of ~13 s of codec time, one
// thread, loaded machine) and bsdiff won all four by far (5.6-52.8 KB).
// Text is another matter (its codec level is 19, ZstdCodec): prettier's
// 0.6-0.9 MB bundles, whose patches are mostly literals, got patches 5-12%
// smaller than bsdiff's and 26% smaller than xdelta3's from zstd, so text
// targets get it up to 2 MiB of base + target (4 MiB changed no prettier
// delta by a byte; docs/benchmarks.md, "2026-12-06 (third session)").
//
// lzma (a raw LZMA2 stream with the base as preset dictionary) takes zstd's
// place on targets from 64 KiB, within zstd's input limits: its literals are
// range-coded with context, where a zstd patch's are Huffman-coded, and on
// prettier's 23 pairs the deltas shrank 1,872,588 -> 1,783,171 B (-4.8%)
// while diff time fell 16.8 -> 12.0 s; debian's and debian-python's small
// binaries moved by under 0.05% (-15 B, +443 B), 11% faster
// (docs/benchmarks.md, "2026-12-06 (fourth session)"). Below 64 KiB zstd
// stays: on prettier's small changed files its frames were 16-19% smaller.
// On text lzma runs up to 4 MiB of base + target, past zstd's 2 MiB:
// prettier's typescript plugin (1.1 MB, 2.3 MB with its base) got 18,883 B
// from it against bsdiff's 21,042, in 0.27 s; over the 23 pairs 1,783,171 ->
// 1,746,121 B. xdelta3 still runs there (it is skipped only within zstd's
// limits): on a 2 MiB text with 7% random bytes it beat bsdiff by 424 B.
// Its rate is held to zstd's (measured: 11 MB/s of base + target on
// prettier's bundles, busy machine).
//
// xdelta3 lost every big file with 10% or more new content of the corpus
// (biome's binary, 74% new: 5.55 MB against bsdiff's 3.70 MB; perl 28%:
// 178 KB against 75 KB; libapt-pkg 65%) and costs 11 s on biome. With packs
// on (the default), where zstd or lzma runs too (base + target <= 1 MiB and
// its time fits) xdelta3 is skipped: without it there, every delta of the corpus came
// out the same or smaller (debian -13 B, debian-python -10 B, six prettier
// pairs -7 to -341 B: zstd's and relcopy's patches pack better than the
// VCDIFF that won alone), in the same time within the noise
// (docs/benchmarks.md, 2026-12-05 "xdelta3 where zstd runs"). Without packs
// its compact VCDIFF can still win a one-edit file by a few dozen bytes
// (ops_delta_rules_internal_test), so it runs there; and it stays the
// cheapest fallback under a budget zstd misses.
//
// relcopy sorts the base's suffixes like bsdiff, so it is held to the same
// rate; it exists for packs, where files that got the same edit share its
// instruction runs, and won all of typescript's near-identical 6-9 MB bundles.
//
// gzip (a delta of the inflated content plus a deflate recipe) runs only on
// targets that are gzip files or zip archives (GzipNext), after the others; its rate is that
// of its inner codecs on the inflated content, ~4x the file.
const CodecTraits kCodecTraits[6] = {
    {.id = CodecId::kXdelta3, .bytes_per_ms = 2400, .min_target = 0, .max_input = kNoLimit, .max_text_input = kNoLimit,
     .general = true, .first_when_near_identical = false, .skipped_when_novel = true,
     .skipped_where_zstd_runs = true, .skipped_where_lzma_runs = false, .two_forms = true},
    {.id = CodecId::kZstd, .bytes_per_ms = 1500, .min_target = 0, .max_input = 1 << 20, .max_text_input = 2 << 20,
     .general = true, .first_when_near_identical = false, .skipped_when_novel = false,
     .skipped_where_zstd_runs = false, .skipped_where_lzma_runs = true, .two_forms = false},
    {.id = CodecId::kLzma, .bytes_per_ms = 1500, .min_target = 64 << 10, .max_input = 1 << 20,
     .max_text_input = 4 << 20,
     .general = true, .first_when_near_identical = false, .skipped_when_novel = false,
     .skipped_where_zstd_runs = false, .skipped_where_lzma_runs = false, .two_forms = false},
    {.id = CodecId::kBsdiff, .bytes_per_ms = 1500, .min_target = 0, .max_input = kNoLimit, .max_text_input = kNoLimit,
     .general = true, .first_when_near_identical = false, .skipped_when_novel = false,
     .skipped_where_zstd_runs = false, .skipped_where_lzma_runs = false, .two_forms = false},
    {.id = CodecId::kRelcopy, .bytes_per_ms = 1500, .min_target = 0, .max_input = kNoLimit, .max_text_input = kNoLimit,
     .general = false, .first_when_near_identical = true, .skipped_when_novel = false,
     .skipped_where_zstd_runs = false, .skipped_where_lzma_runs = false, .two_forms = true,
     .standalone_wraps_pack = true},
    {.id = CodecId::kGzip, .bytes_per_ms = 400, .min_target = 0, .max_input = kNoLimit, .max_text_input = kNoLimit,
     .general = false, .first_when_near_identical = false, .skipped_when_novel = false,
     .skipped_where_zstd_runs = false, .skipped_where_lzma_runs = false, .two_forms = true},
};

const CodecTraits& TraitsOf(CodecId id) {
  for (const CodecTraits& t : kCodecTraits)
    if (t.id == id) return t;
  return kCodecTraits[0];  // unreachable: every CodecId has a row
}

namespace {

bool Fits(const CodecTraits& t, const DiffOptions& o, uint64_t base, uint64_t target) {
  // The time budget also bounds bsdiff's memory (~9 bytes per base byte):
  // at the default it never sees more than ~90 MB of input.
  return static_cast<double>(base + target) / t.bytes_per_ms <= o.time_budget_ms;
}

}  // namespace

std::vector<CodecId> CodecsFor(const DiffOptions& o, uint64_t base, uint64_t target, bool text) {
  if (o.codec) return {*o.codec};
  std::vector<CodecId> out;
  for (const CodecTraits& t : kCodecTraits) {
    if (!t.general || target < t.min_target || base + target > (text ? t.max_text_input : t.max_input)) continue;
    if (out.empty() || Fits(t, o, base, target)) out.push_back(t.id);  // the cheapest always runs
  }
  if (o.pack_small_blobs && std::find(out.begin(), out.end(), CodecId::kZstd) != out.end())
    std::erase_if(out, [](CodecId id) { return TraitsOf(id).skipped_where_zstd_runs; });
  if (std::find(out.begin(), out.end(), CodecId::kLzma) != out.end())
    std::erase_if(out, [](CodecId id) { return TraitsOf(id).skipped_where_lzma_runs; });
  return out;
}

bool RelcopyFits(const DiffOptions& o, uint64_t base, uint64_t target) {
  return Fits(TraitsOf(CodecId::kRelcopy), o, base, target);
}

bool BsdiffFits(const DiffOptions& o, uint64_t base, uint64_t target) {
  return Fits(TraitsOf(CodecId::kBsdiff), o, base, target);
}

Plan PlanFor(const DiffOptions& o, uint64_t base_max, uint64_t first_base, uint64_t target,
             const std::optional<Novelty>& least, bool text) {
  Plan p{CodecsFor(o, base_max, target, text)};
  p.text = text;
  if (o.codec || target < kStandaloneFirstMinFile || !least) return p;
  const Novelty& n = *least;
  uint64_t estimated_patch = n.missing * kBytesPerAnchor;
  p.standalone_first = estimated_patch > kStandaloneFirstPatch;
  if (target < kBigFile) return p;
  bool novel = n.anchors > 0 && n.missing * 100 >= n.anchors * kNewPercentSkip;
  if (novel && p.codecs.size() > 1 && TraitsOf(p.codecs[0]).skipped_when_novel) p.codecs.erase(p.codecs.begin());
  // Near-identical (the estimated patch fits a pack member): the codec the
  // pack compresses best goes first, so that when its patch is tiny the
  // tiny-patch rule spares the others.
  if (o.pack_small_blobs && estimated_patch <= kPackMemberMax / 4) {
    for (const CodecTraits& t : kCodecTraits)
      if (t.first_when_near_identical && Fits(t, o, first_base, target)) {
        p.codecs.insert(p.codecs.begin(), t.id);
        break;
      }
  }
  return p;
}

Plan PlanCodecs(std::string_view target, const std::vector<Base>& bases, const DiffOptions& o) {
  uint64_t base_max = 0;
  for (const Base& b : bases) base_max = std::max<uint64_t>(base_max, b.content.size());
  std::optional<Novelty> least;  // the base that lacks least of the target
  bool measured = target.size() >= kBigFile || (target.size() >= kStandaloneFirstMinFile && o.pack_small_blobs);
  if (!o.codec && measured) {
    for (const Base& b : bases) {
      Novelty n = b.novelty ? *b.novelty : MeasureNovelty(b.content, target);
      if (!least || n.missing * least->anchors < least->missing * n.anchors) least = n;
    }
  }
  Plan p = PlanFor(o, base_max, bases[0].content.size(), target.size(), least, !o.codec && LooksText(target));
  // A zip archive from a zip archive: the gzip codec's zip form first (on
  // every base), so that its patch, usually a fraction of what codecs of the
  // compressed bytes make, bounds theirs (EncodeWithin) instead of the
  // other way round (debian-tomcat: diff time, docs/benchmarks.md).
  if (!o.codec && deflate::LooksZip(target) && deflate::LooksZip(bases[0].content))
    p.codecs.insert(p.codecs.begin(), CodecId::kGzip);
  return p;
}

bool SkipRestAfterFirst(const DiffOptions& o, uint64_t target, uint64_t patch) {
  return !o.codec && target >= kTinyPatchMinFile && patch * kTinyPatchRatio <= target;
}

bool RelcopyNext(const DiffOptions& o, bool tried, uint64_t best_patch, uint64_t base, uint64_t target) {
  return !o.codec && o.pack_small_blobs && !tried && best_patch <= kPackMemberMax && RelcopyFits(o, base, target);
}

bool GzipNext(const DiffOptions& o, const Plan& plan, std::string_view target) {
  if (o.codec || plan.codecs[0] == CodecId::kGzip) return false;
  return deflate::LooksGzip(target) || deflate::LooksZip(target);
}

bool KeepCandidate(const DiffOptions& o, CodecId codec, uint64_t patch, uint64_t target) {
  return o.codec || codec != CodecId::kRelcopy || patch < target;
}

}  // namespace d4c::delta_internal
