// Internals shared by diff, patch and merge: the blob job runner (parallel,
// largest first, memory bounded, results spooled to disk and committed in
// entry order), per-file encoding, base selection in the old tree, stats.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/base/mutex.h"
#include "d4c/cdimg.h"
#include "d4c/delta.h"

namespace d4c::delta_internal {

// Pack limits of the delta writer: a member (a patch, or a new file's raw
// bytes) of at most kPackMemberMax bytes; packs of at most kPackRawMax bytes,
// so a lazy read of one file decompresses little.
inline constexpr uint64_t kPackMemberMax = 64 << 10;
// merge --compose: a chained patch without raw pack-form steps is packed
// only when it is this small (its steps lie in packs, or are tiny).
inline constexpr uint64_t kComposeChainPackMax = 4 << 10;
inline constexpr uint64_t kPackRawMax = 256 << 10;

// A second packed patch of the same file in a raw pack form (no entropy
// coding of its own: bsdiff's raw form against the file's base by name, else
// relcopy's against the winner's base): files that got the same edit
// (prettier's `x.js` and `x.mjs`, each against its own old version) then
// share byte-identical runs that the pack's frame stores once, which each
// file's own smallest patch (entropy-coded, or against the new `x.js`)
// cannot. WriteDelta picks, pack by pack, whichever of the two compresses
// smaller with the pack's other members (ChooseAlternates).
struct PackAlternate {
  CodecId codec = CodecId::kRelcopy;
  std::string blob;
  Digest base{};  // the alternate's base (content digest)
};

// A PackAlternate in the spool.
struct SpooledAlternate {
  CodecId codec = CodecId::kRelcopy;
  BlobRef blob;
  Digest base{};
};

// What a job produces for one entry: kind kFull or kDelta (codec, base) and
// its blob (recipe.packed: a pack member, see Recipe); the blob position is
// assigned at commit.
struct BlobResult {
  Recipe recipe;
  std::string blob;
  std::optional<PackAlternate> alt;  // a packed kDelta only
  // A second one, relcopy's against the winner's base, when `alt` is bsdiff's.
  std::optional<PackAlternate> alt_relcopy;
  bool rename_base = false;  // delta base taken from another path
  bool reencoded = false;    // merge: built anew rather than copied
  // Set when the job streamed its blob into the spool itself (Spool::Reserve,
  // WriteAt; `blob` stays empty): a big file's blob is never held whole.
  std::optional<BlobRef> spooled;
};

struct BlobJob {
  size_t entry = 0;     // index in the output image
  uint64_t size = 0;    // file bytes: larger jobs start first
  uint64_t memory = 0;  // estimated working set while it runs
  // `helpers`: idle pool threads the job may use (see Helpers).
  std::function<absl::StatusOr<BlobResult>(Helpers& helpers)> run;
};

// A finished job whose blob sits in the spool.
struct SpooledBlob {
  Recipe recipe;  // blob = position in the spool
  std::optional<SpooledAlternate> alt, alt_relcopy;
  bool rename_base = false;
  bool reencoded = false;
};

// An unlinked temp file next to the output holding finished blobs, so that
// out-of-order results cost disk, not memory.
//
// Thread-safety: internally synchronized. Put and Get may be called from any
// threads at once: Put reserves its range under mu_ and writes it without the
// lock (pwrite at a private offset); Get reads ranges already returned by Put.
class Spool {
 public:
  static absl::StatusOr<std::unique_ptr<Spool>> Create(const std::string& out_path);
  ~Spool();
  absl::StatusOr<BlobRef> Put(std::string_view bytes) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::string> Get(const BlobRef& ref) const;
  // A range of `length` bytes for a blob that its job writes in pieces
  // (WriteAt, at offsets inside the range) instead of one Put.
  BlobRef Reserve(uint64_t length) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status WriteAt(uint64_t offset, std::string_view bytes);

 private:
  explicit Spool(int fd) : fd_(fd) {}
  const int fd_;
  Mutex mu_;
  uint64_t end_ ABSL_GUARDED_BY(mu_) = 0;
};

struct RunOptions {
  int threads = 0;
  uint64_t memory_budget = 1ull << 30;
  DeltaProgress progress;
  // The output's entries (may be null): names a job's file in errors the
  // job could not name itself (an exception it threw).
  const std::vector<Entry>* entries = nullptr;
  // Jobs of fewer file bytes start after the larger ones, in entry order
  // instead of by size, so that a writer following entry order (patch) is
  // never far behind them. 0: every job by size.
  uint64_t entry_order_below = 0;
  // Polled under RunJobs' lock before each job starts (may be null; cheap,
  // thread-safe, takes no lock): once it returns true no job starts, and
  // RunJobs returns kCancelled after the running ones end (if none failed).
  std::function<bool()> cancelled;
};

// The options every RunJobs caller passes on from its own (DiffOptions,
// PatchOptions, MergeOptions).
template <typename Options>
RunOptions RunOptionsOf(const Options& o, const std::vector<Entry>* entries) {
  RunOptions r;
  r.threads = o.threads;
  r.memory_budget = o.memory_budget;
  r.progress = o.progress;
  r.entries = entries;
  return r;
}

// Runs every job, largest first (but see entry_order_below), with at most
// `memory_budget` estimated bytes in flight (one job alone may exceed it) on
// `threads` pool threads; idle ones help running jobs (Helpers). Stops
// starting jobs after the first failure and returns the failure of the
// lowest entry index.
absl::StatusOr<std::map<size_t, SpooledBlob>> RunJobs(std::vector<BlobJob> jobs, Spool& spool,
                                                      const RunOptions& options);

// How much of a target its base lacks: of the target's content-defined
// anchors (one per ~32 bytes, each standing for the 64 bytes before it), how
// many have a window found nowhere in the base. Linear time (~0.3 s for two
// 28 MB files), a few bytes of memory per 32 base bytes. `auto` uses it to
// skip codecs that cannot win on big files (see codec_policy.h).
struct Novelty {
  uint64_t anchors = 0;
  uint64_t missing = 0;
};
Novelty MeasureNovelty(std::string_view base, std::string_view target);

// A candidate delta base: content of a file of the parent image.
struct Base {
  Base() = default;
  Base(const Digest& d, std::string c, bool r = false, std::optional<Novelty> n = std::nullopt)
      : digest(d), content(std::move(c)), renamed(r), novelty(n) {}
  Digest digest{};
  std::string content;
  bool renamed = false;  // from another path than the target's
  // MeasureNovelty(content, target) of the file it is offered for, once
  // measured (OfferTwin, OfferSibling, PickNeighbor), so that nothing
  // measures it again (PlanCodecs): each look hashes base and target whole.
  std::optional<Novelty> novelty;
};

// Best representation of `target`: a delta against one of `bases` with the
// chosen codec(s), or a `full` blob (`ready_full` if given, else compressed at
// options.zstd_level). A delta is kept only when smaller than the full blob.
absl::StatusOr<BlobResult> EncodeFile(std::string_view target, const std::vector<Base>& bases,
                                      const DiffOptions& options,
                                      std::optional<std::string> ready_full = std::nullopt,
                                      Helpers& helpers = NoHelpers());

// The size of a fast zstd patch (level 3, the base as prefix) of `target`:
// a cheap measure of how well `base` serves it, ~40x faster than the level-19
// patch of text (10 ms against 400 ms for prettier's 0.7 MB flow.js).
// Errors count as the largest size.
uint64_t FastPatchSize(std::string_view base, std::string_view target);

// A sparse sample of the same anchors (~1 per 128 bytes), sorted, without
// repeats: what SimilarBases compares between files.
std::vector<uint64_t> SampleAnchors(std::string_view s);

// Upper bound of the working memory EncodeFile needs for these sizes.
uint64_t EncodeMemory(uint64_t base_size, uint64_t target_size);

// The parent image's tree seen as a pool of delta bases.
class OldTree {
 public:
  explicit OldTree(const CdimgImage& img);
  // True if some file of the parent's tree has this content.
  bool Has(const Digest& d) const { return by_digest_.count(d) > 0; }
  // An entry of the parent with this content.
  std::optional<size_t> Find(const Digest& d) const {
    auto it = by_digest_.find(d);
    return it == by_digest_.end() ? std::nullopt : std::optional<size_t>(it->second);
  }
  // True if the parent has a file at `path` with this content.
  bool SamePathSameContent(std::string_view path, const Digest& d) const;
  // Entry of the parent to diff a new file against: same path if it is a
  // regular file, else the likeliest rename (see delta_select.cc).
  std::optional<size_t> BaseFor(std::string_view path, uint64_t size) const;
  // For a file BaseFor finds nothing for: files of the parent that `next`
  // (the new image) no longer has, in the same directory, with the same
  // extension and within 4x the size -- a file renamed and changed at once
  // (cli.mjs -> legacy-cli.mjs, chunk-3f2a.js -> chunk-9be1.js). At most
  // kMaxNeighbors, nearest in size first; the diff job keeps the one that
  // lacks the fewest of the target's anchors (PickNeighbor).
  static constexpr size_t kMaxNeighbors = 3;
  std::vector<size_t> NeighborsFor(std::string_view path, uint64_t size, const CdimgImage& next) const;
  // The parent's twin of `path` (see Twins: same directory, same name up to
  // the first '.', another path; within 2x of `size`, nearest in size):
  // babel.mjs for babel.js. A bundle's wrappers are minified apart, and a
  // new version's mangled names often follow the other wrapper's old ones
  // (prettier 3.2.3's flow.js: zstd --patch-from old flow.js 14,587 B, old
  // flow.mjs 9,518 B). Diff and merge offer it beside the same-path base
  // (OfferSibling).
  std::optional<size_t> SiblingFor(std::string_view path, uint64_t size) const;
  const CdimgImage& image() const { return img_; }

 private:
  std::optional<size_t> RenameFor(std::string_view path, uint64_t size) const;
  const CdimgImage& img_;
  std::unordered_map<Digest, size_t, DigestHash> by_digest_;
  // parent directory -> regular non-empty files in it, in entry order
  std::unordered_map<std::string_view, std::vector<size_t>> by_dir_;
  // digit runs folded: "libfoo.so.1.2" -> "libfoo.so.#.#"
  std::unordered_map<std::string, std::vector<size_t>> by_folded_name_;
};

// Twins: files of a new image in one directory with one stem up to the
// first '.' (babel.js, babel.mjs, babel.cjs): packages ship one module in
// several wrappers, so a change shows in each of them. Entry `i`'s twin is
// the earlier entry of its group whose content the parent lacks (content the
// parent has is the parent's to offer), nearest in size, within 2x of it.
// Diff and merge offer it as a second base, resolved in the delta's own image.
// Its content is carried in the delta by the first entry with that content
// (diff and merge give the blob to the first one), which is never after the
// twin, hence before `i`: a delta's base from its own image is always an
// entry earlier in entry order, so in-image bases never form a cycle
// (docs/format.md, "Resolving content").
class Twins {
 public:
  // `entries` (the new image's, in entry order) must outlive this object.
  Twins(const std::vector<Entry>& entries, const OldTree& old);
  std::optional<size_t> For(size_t i) const;

 private:
  const std::vector<Entry>& entries_;
  std::unordered_map<std::string_view, std::vector<size_t>> groups_;  // entries in order
  std::vector<bool> offer_;
};

// Adds a twin's content as a base when `bases` is empty or the twin lacks
// fewer of the target's anchors (MeasureNovelty) than bases[0]; appended, so
// the parent's base wins ties.
void OfferTwin(std::vector<Base>* bases, const Digest& digest, std::string content, std::string_view target);
// Adds the parent's twin of the target's path (OldTree::SiblingFor) as a base
// when it lacks at least 2% of the target's anchors fewer than bases[0] (the
// base by name). A near-tie costs a codec run on a second base and seldom
// wins: only the winner of the first codec gets the others (BestDelta).
void OfferSibling(std::vector<Base>* bases, const Digest& digest, std::string content, std::string_view target);

// Bases found by content for new files that no name leads to (BaseFor finds
// nothing): a module split out of a bundle, a chunk with a hashed name, a
// notices file cut from a LICENSE. Each orphan (an entry of the new image,
// kSimilarMinFile to kSimilarScanMax bytes) gets the file of the parent that shares
// most of its sampled anchors (SampleAnchors), if that is at least a tenth of
// them. Candidates: the parent's regular files from an eighth of the
// smallest orphan's size up to 8x the largest's (at least 1 MiB), each
// content once, those with an orphan's extension first, in entry order, up
// to kSimilarScanPerByte times the orphans' bytes (at least
// kSimilarScanFloor, at most kSimilarScanMax) in all; read and sampled on
// `threads` threads, orphans too. Anchors that more than
// kSimilarCommonAnchor candidates share (licence headers, boilerplate) do not
// vote. Memory: one orphan or candidate per thread, each at most
// kSimilarScanMax bytes, plus 16 bytes per sampled anchor.
// Returns orphan -> parent entry; read errors name the image and path.
inline constexpr uint64_t kSimilarMinFile = 4 << 10;
inline constexpr uint64_t kSimilarScanFloor = 8 << 20;
inline constexpr uint64_t kSimilarScanPerByte = 16;
inline constexpr uint64_t kSimilarScanMax = 64 << 20;
inline constexpr size_t kSimilarCommonAnchor = 8;
absl::StatusOr<std::unordered_map<size_t, size_t>> SimilarBases(const ImageChain& old_chain,
                                                                const ImageChain& new_chain,
                                                                const std::vector<size_t>& orphans, int threads);

// "legacy-cli.mjs" -> ".mjs"; "" without a '.' after the first character.
std::string_view Extension(std::string_view name);

// "python3.11/x.py" -> "python#.#/x.py"
std::string FoldDigits(std::string_view s);

// Entries of an image, materialized (metadata only).
std::vector<Entry> AllEntries(const CdimgImage& img);

// Fills `stats` from the recipes of an image and the header of the written
// file. `parent` (may be null) tells unchanged kBase entries from dedup ones.
absl::Status FillStats(const std::string& path, const std::vector<Entry>& entries,
                       const std::vector<Recipe>& recipes, const CdimgImage* parent,
                       DeltaStats* stats);

// merge --compose: the packs of D1 and D2 that the merged delta copies.
struct CopiedPack {
  const CdimgImage* img = nullptr;
  uint32_t pack = 0;
};
struct PlacedPacks {
  std::vector<CopiedPack> stored;  // copied as stored, numbered 0, 1, ...
  // Inline packs (no stored frame): their members, back to back, start the
  // first pack formed anew (number stored.size()).
  std::vector<CopiedPack> lead;
};

// A packed blob on its way into a pack: its bytes, its PackAlternates', and
// which one the pack gets.
struct PackMember {
  size_t entry = 0;
  const SpooledBlob* blob = nullptr;
  std::string bytes;
  std::string alt;          // empty without an alternate
  std::string alt_relcopy;  // empty without a second one
  bool use_alt = false;
  bool use_relcopy = false;  // the second one (takes precedence)
};
// The zstd level at which ChooseAlternates weighs a pack (the pack itself is
// written at 19): fast enough to compress a 256 KiB pack once per member
// with an alternate. On prettier's 23 pairs level 3 chose exactly as level 9
// did, and added 8% to diff time where level 9 added 33%.
inline constexpr int kAlternateChoiceLevel = 3;
inline constexpr int kPackLevel = 19;  // CdimgWriter::CompressPack's default
// Sets use_alt / use_relcopy of members with alternates so that `lead` (the
// pack's bytes before these members) and the members compress small, lead
// and members together at most `max_raw` bytes (docs/architecture.md, "Raw
// alternates in packs"); whatever is chosen compresses at kPackLevel no
// bigger than every primary. Deterministic: depends on the bytes only.
// `helpers` weigh the choices side by side.
void ChooseAlternates(std::string_view lead, std::vector<PackMember>& members, uint64_t max_raw,
                      Helpers& helpers = NoHelpers());

// Writes a delta image: entries with a spooled blob get it (in entry order),
// the others keep their recipe from `recipes`. Returns its stats.
// `threads` (0: one per CPU) compress the packs, a few at a time; the bytes
// do not depend on it.
// `placed` (optional): the image gets placed packs (docs/format.md): the
// stored packs come first, numbered in their order, then the lead packs'
// members and after them the spooled packed blobs fill new packs; `recipes`
// may name any of these.
// `index_level`: zstd level of the meta frame (config, index, last pack).
absl::StatusOr<DeltaStats> WriteDelta(const std::string& out_path, const CdimgImage& parent,
                                      std::string_view config, const std::vector<Entry>& entries,
                                      std::vector<Recipe> recipes,
                                      const std::map<size_t, SpooledBlob>& blobs, const Spool& spool,
                                      int threads = 1, const PlacedPacks* placed = nullptr,
                                      int index_level = CdimgWriter::Options{}.index_zstd_level);

// "<image file>: /<path>: <cause>", keeping the status code.
absl::Status AtEntry(const absl::Status& s, std::string_view image_path, std::string_view entry_path);

}  // namespace d4c::delta_internal
