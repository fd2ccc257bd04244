// diff / patch / merge: the delta engine.
//
//   diff:  full or delta image A (as a chain) + image B  -> delta cdimg A→B
//   patch: image A (as a chain) + delta A→B              -> full cdimg B: its
//          image id and every file's bytes; at convert's level (PatchOptions)
//          byte for byte what `convert` writes for B
//   merge: A (as a chain) + delta A→B + delta B→C        -> delta A→C
//
// A delta names its parent's image id and only ever relies on content of the
// parent's own tree (never on files that only an older ancestor had), so any
// representation of the parent (full, or a delta chain) can serve it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"
#include "d4c/chain.h"
#include "d4c/codec.h"

namespace d4c {

// Called with (bytes done, bytes to do); may be called from worker threads,
// never concurrently.
using DeltaProgress = std::function<void(uint64_t, uint64_t)>;

struct DiffOptions {
  // A fixed codec, or nullopt for "auto": per file the smallest patch among
  // the codecs whose predicted run time fits `time_budget_ms`.
  std::optional<CodecId> codec;
  int threads = 0;  // 0 = number of CPUs
  // Per file and codec, for auto: a codec runs only if its run time,
  // predicted from the file sizes with a fixed cost model (never measured, so
  // the choice and the output do not depend on machine load), fits. The
  // cheapest codec (xdelta3) always runs; the default lets xdelta3 and bsdiff
  // work on files up to ~45 MB. The other rules of auto (zstd only up to
  // 4 MiB of input; files of 1 MiB or more measured against their base first;
  // the other codecs skipped after a first patch of at most 1/2000 of a file
  // of 256 KiB or more; relcopy for packed patches) are described in
  // docs/architecture.md, "The `auto` codec policy" (code: codec_policy.cc).
  uint32_t time_budget_ms = 60000;
  // Files smaller than this are stored whole: no delta is tried.
  uint64_t min_delta_size = 64;
  // Files bigger than this that B stores as a standalone `full` blob keep
  // that blob (checked and copied in pieces, never held whole): no delta is
  // tried, so diff's memory does not grow with a file's size. Files up to it
  // are read whole (base, new content, patches: see EncodeMemory), about 7x
  // the file. The default keeps deltas for the big binaries images do carry
  // (node ~100 MB, browsers ~200 MB): bytes on the link matter more than a
  // build machine's memory; lower it to bound diff's memory further.
  uint64_t max_delta_size = 256ull << 20;
  // `full` blobs compressed anew; must match convert's for patch to copy
  // them. A file that B stores as a standalone full blob keeps that blob.
  int zstd_level = 19;
  // Small patches and small new files of the delta share zstd frames (packs,
  // docs/format.md) so that framing and similar edits compress together.
  bool pack_small_blobs = true;
  // Estimated working memory of files in flight (contents + codec state).
  uint64_t memory_budget = 1ull << 30;
  DeltaProgress progress;
};

// "auto" -> nullopt, else ParseCodecName.
absl::StatusOr<std::optional<CodecId>> ParseCodecChoice(std::string_view name);

// Blob count and bytes by representation, for reports.
struct DeltaBucket {
  uint64_t files = 0;          // entries
  uint64_t blob_bytes = 0;     // stored bytes
  uint64_t content_bytes = 0;  // file bytes they represent
};

struct DeltaStats {
  ImageHeader header;  // of the written file
  size_t entries = 0;
  // Keys: "empty", "unchanged" (same path and content as the parent: kBase),
  // "dedup" (kBase: content the parent has under another path, or a second
  // copy within the image), "full", "delta/<codec>"; packed entries under
  // "packed full" / "packed delta/<codec>" (blob_bytes: member bytes before
  // the pack's compression) and the packs themselves under "packs" (files:
  // members, blob_bytes: stored).
  std::map<std::string, DeltaBucket> by_kind;
  uint64_t rename_bases = 0;  // deltas whose base came from another path
  uint64_t reencoded = 0;     // merge: files changed in both deltas, re-encoded against A
};

// Writes the delta new_chain.top() relative to old_chain.top() to `out_path`.
absl::StatusOr<DeltaStats> DiffImages(const ImageChain& old_chain, const ImageChain& new_chain,
                                      const std::string& out_path, const DiffOptions& options);

// patch's default zstd level for what it compresses anew (changed files and
// the index): fast. On the corpus pairs it cuts patch's CPU time 6–70×
// against convert's 19, for a full image of 1.03–1.4× convert's bytes
// (docs/benchmarks.md, "patch speed"; docs/design.md, "What "identical"
// means for a patched image").
inline constexpr int kPatchFastLevel = 1;
// The level convert (and every full image writer but a fast patch) gives the
// meta frame of a full image.
inline constexpr int kConvertMetaLevel = CdimgWriter::Options{}.index_zstd_level;

struct PatchOptions {
  int threads = 0;
  // Level of the `full` blobs patch compresses anew (contents that no image
  // of the chain stores as a standalone full blob: changed files), and of
  // the meta frame (config + index). At any levels the output has B's image
  // id and every file's bytes. With zstd_level = the level every image of
  // the chain was written at (convert's 19 by default) and meta_zstd_level =
  // convert's (kConvertMetaLevel) it is the very bytes convert writes for B.
  int zstd_level = kPatchFastLevel;
  int meta_zstd_level = kPatchFastLevel;
  // Copy `full` blobs of unchanged content from the base chain and the delta
  // instead of recompressing. Every copied blob is still decompressed (as a
  // stream) and checked against its digest before its bytes are copied.
  bool reuse_full_blobs = true;
  // Estimated working memory of the files in flight (RunJobs: one job alone
  // may exceed it). A rebuilt file counts 3× its size + 128 MiB, a copied
  // one its zstd window (≤ min(size, 128 MiB)) + 3 MiB.
  uint64_t memory_budget = 1ull << 30;
  DeltaProgress progress;
};

// Applies the delta at `delta_path` to base_chain.top() and writes the full
// image at `out_path`. A delta of another base is refused naming both ids.
// Peak memory: the chain's open images (index and metadata) plus the jobs in
// flight (PatchOptions::memory_budget); no blob is ever held whole outside a
// job that rebuilds its file.
absl::StatusOr<DeltaStats> PatchImage(const ImageChain& base_chain, const std::string& delta_path,
                                      const std::string& out_path, const PatchOptions& options);

// D1 = A→B, D2 = B→C  ->  A→C. `base_chain` ends in A. Blobs that stay valid
// against A are copied (after verification); files changed by both deltas are
// re-encoded against A and kept only when smaller than the alternatives.
// `options` drive the re-encoding.
absl::StatusOr<DeltaStats> MergeDeltas(const ImageChain& base_chain, const std::string& d1_path,
                                       const std::string& d2_path, const std::string& out_path,
                                       const DiffOptions& options);

// D1 = A→B, D2 = B→C  ->  A→C from the two deltas alone: of A's chain only
// the index is read (to open D1 and to write the result against A), never a
// file's content, so it takes about as long as copying the deltas. Per file
// of C: content A has -> base; a blob of D2 or D1 that decodes against A's
// content (or C's at an earlier entry) as it is -> copied; deltas on deltas
// -> one chained patch (codec 6, docs/format.md); a full blob with deltas on
// top (new in B, changed again) -> a chained patch whose first step is that
// blob (a standalone zstd frame as a zstd patch using none of its base, A's
// smallest file; a packed member as a stored step). The result has placed
// packs: D1's and D2's packs are copied as stored and packed members and
// patches stay in them (chained patches name their place), so little is
// compressed anew. Full blobs are checked against their digests; patches
// are checked where they are applied (patch, di3fs, extract check every
// file's sha256).
// The result is at most about D1 + D2 (a few bytes per chained patch more
// than the patches it holds, and C's metadata against A instead of two
// indexes).
absl::StatusOr<DeltaStats> ComposeDeltas(const ImageChain& base_chain, const std::string& d1_path,
                                         const std::string& d2_path, const std::string& out_path,
                                         const DiffOptions& options);

// For a delta cdimg: finds its ancestors (parent, grandparent, ... down to a
// full image) by image id among `candidates` first, then among the *.cdimg
// files of `search_dirs` (headers only). Of several files with the same id
// the first whose own chain resolves is taken; files off that chain,
// unreadable or corrupt ones are ignored. Returns the paths, nearest first
// (empty for a full image), or a NotFound error naming the missing image id,
// the files tried, where it looked and the fix.
absl::StatusOr<std::vector<std::string>> FindAncestors(const std::string& cdimg,
                                                      const std::vector<std::string>& candidates,
                                                      const std::vector<std::string>& search_dirs);

}  // namespace d4c
