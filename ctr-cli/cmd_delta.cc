// cdimg diff / patch / merge (D4C's option spellings).
#include <chrono>
#include <filesystem>
#include <memory>

#include "cli_util.h"
#include "commands.h"
#include "d4c/delta.h"

namespace d4c::cli {
namespace {

std::string DirOf(const std::string& path) {
  std::string d = std::filesystem::path(path).parent_path().string();
  return d.empty() ? "." : d;
}

// Opens `top` with the ancestors it needs: from --base, else found by image
// id among the *.cdimg files next to the given files.
absl::StatusOr<std::unique_ptr<ImageChain>> OpenChain(const std::string& top, const std::vector<std::string>& bases,
                                                      const std::vector<std::string>& near_files) {
  std::vector<std::string> dirs;
  for (const std::string& f : near_files) dirs.push_back(DirOf(f));
  auto ancestors = FindAncestors(top, bases, dirs);
  if (!ancestors.ok()) return ancestors.status();
  return ImageChain::Open(top, *ancestors);
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void PrintStats(const char* what, const std::string& out, const DeltaStats& s, double secs) {
  const ImageHeader& h = s.header;
  std::printf("%s: %s written in %.1f s, image id %s\n", what, out.c_str(), secs, DigestString(h.image_id).c_str());
  if (h.is_delta) std::printf("  parent id %s\n", DigestString(h.parent_id).c_str());
  std::printf("  %-14s %8s %14s %14s\n", "recipe", "files", "file bytes", "stored bytes");
  for (const auto& [k, b] : s.by_kind)
    std::printf("  %-14s %8llu %14llu %14llu\n", k.c_str(), static_cast<unsigned long long>(b.files),
                static_cast<unsigned long long>(b.content_bytes), static_cast<unsigned long long>(b.blob_bytes));
  std::printf("  total %llu bytes (%s): header %llu, blobs %llu, config+index %llu\n",
              static_cast<unsigned long long>(h.file_size), HumanBytes(h.file_size).c_str(),
              static_cast<unsigned long long>(h.header_length), static_cast<unsigned long long>(h.blobs_length),
              static_cast<unsigned long long>(h.meta_length));
  if (s.rename_bases) std::printf("  deltas against a renamed/moved file: %llu\n", static_cast<unsigned long long>(s.rename_bases));
  if (s.reencoded) std::printf("  re-encoded against the base: %llu\n", static_cast<unsigned long long>(s.reencoded));
}

struct DeltaArgs {
  std::string codec = "auto";
  int threads = 0;
  uint32_t time_budget_ms = DiffOptions{}.time_budget_ms;
  uint64_t min_delta_size = DiffOptions{}.min_delta_size;
  uint64_t max_delta_size = DiffOptions{}.max_delta_size;
  int level = DiffOptions{}.zstd_level;
  bool pack = DiffOptions{}.pack_small_blobs;
  std::vector<std::string> bases;
};

constexpr const char* kLevelHelp =
    "zstd level of whole-file blobs compressed anew (the new image's own ones are copied); keep it equal "
    "to convert's --level so that patch can copy blobs";

absl::StatusOr<DiffOptions> ToDiffOptions(const DeltaArgs& a, Progress* progress) {
  auto codec = ParseCodecChoice(a.codec);
  if (!codec.ok()) return codec.status();
  DiffOptions o;
  o.codec = *codec;
  o.threads = a.threads;
  o.time_budget_ms = a.time_budget_ms;
  o.min_delta_size = a.min_delta_size;
  o.max_delta_size = a.max_delta_size;
  o.zstd_level = a.level;
  o.pack_small_blobs = a.pack;
  o.progress = [progress](uint64_t d, uint64_t t) { progress->Update(d, t); };
  return o;
}

void AddDeltaOptions(CLI::App* c, DeltaArgs* a) {
  c->add_option("--threadNum,--threads", a->threads, "Worker threads (default: all CPUs)");
  c->add_option("--codec", a->codec, "Delta codec: auto (smallest per file), zstd, xdelta3, bsdiff, relcopy, lzma or gzip (gzip files and zip archives only)")
      ->capture_default_str();
  c->add_option("--time-budget-ms", a->time_budget_ms,
                "auto: skip codecs predicted (from file sizes, not measured) to take longer per file")
      ->capture_default_str();
  c->add_option("--min-delta-size", a->min_delta_size, "Files smaller than this are stored whole")
      ->capture_default_str();
  c->add_option("--max-delta-size", a->max_delta_size,
                "diff: files bigger than this keep the new image's stored blob (copied in pieces, no delta), so "
                "memory does not grow with a file's size")
      ->capture_default_str();
  c->add_option("--level", a->level, kLevelHelp)->check(CLI::Range(1, 22))->capture_default_str();
  c->add_flag("!--no-pack", a->pack, "Store every blob alone (no packs of small patches and new files)");
  c->add_option("--base", a->bases,
                "Ancestor cdimg(s) needed by delta inputs, any order (repeatable); by default found by "
                "image id among the *.cdimg files next to the inputs");
}

struct DiffArgs : DeltaArgs {
  std::string old_cdimg, new_cdimg, out;
};

int RunDiff(const DiffArgs& a) {
  auto start = std::chrono::steady_clock::now();
  auto old_chain = OpenChain(a.old_cdimg, a.bases, {a.old_cdimg});
  if (!old_chain.ok()) return Fail("cdimg diff", old_chain.status());
  std::vector<std::string> bases = a.bases;
  for (size_t l = 0; l < (*old_chain)->depth(); ++l) bases.push_back((*old_chain)->image(l).path());
  auto new_chain = OpenChain(a.new_cdimg, bases, {a.new_cdimg, a.old_cdimg});
  if (!new_chain.ok()) return Fail("cdimg diff", new_chain.status());
  Progress progress("diff");
  auto options = ToDiffOptions(a, &progress);
  if (!options.ok()) return Fail("cdimg diff", options.status());
  auto stats = DiffImages(**old_chain, **new_chain, a.out, *options);
  if (!stats.ok()) return Fail("cdimg diff", stats.status());
  PrintStats("diff", a.out, *stats, Seconds(start));
  const ImageHeader& nh = (*new_chain)->top().header();
  if (!nh.is_delta && nh.file_size)
    std::printf("  %.2f%% of the full image %s (%llu bytes)\n", 100.0 * stats->header.file_size / nh.file_size,
                a.new_cdimg.c_str(), static_cast<unsigned long long>(nh.file_size));
  return 0;
}

struct PatchArgs {
  std::string base_cdimg, diff_cdimg, out;
  std::vector<std::string> bases;
  int threads = 0;
  int level = 0;  // 0: the fast default (kPatchFastLevel, meta too)
};

int RunPatch(const PatchArgs& a) {
  auto start = std::chrono::steady_clock::now();
  auto base_chain = OpenChain(a.base_cdimg, a.bases, {a.base_cdimg});
  if (!base_chain.ok()) return Fail("cdimg patch", base_chain.status());
  Progress progress("patch");
  PatchOptions o;
  o.threads = a.threads;
  if (a.level != 0) {  // convert's mode: blobs at --level, the meta frame at convert's level
    o.zstd_level = a.level;
    o.meta_zstd_level = kConvertMetaLevel;
  }
  o.progress = [&progress](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto stats = PatchImage(**base_chain, a.diff_cdimg, a.out, o);
  if (!stats.ok()) return Fail("cdimg patch", stats.status());
  PrintStats("patch", a.out, *stats, Seconds(start));
  return 0;
}

struct MergeArgs : DeltaArgs {
  std::string lower, upper, out;
  bool compose = false;
};

int RunMerge(const MergeArgs& a) {
  auto start = std::chrono::steady_clock::now();
  // A is D1's parent: the chain below D1, from --base or next to the inputs.
  auto ancestors = FindAncestors(a.lower, a.bases, {DirOf(a.lower), DirOf(a.upper)});
  if (!ancestors.ok())
    return Fail("cdimg merge", absl::Status(ancestors.status().code(),
                                            StrCat(Msg(ancestors.status().message()),
                                                   a.compose ? " (merge --compose reads the lower delta's base "
                                                               "image's index, which its meta is compressed against)"
                                                             : " (merge rebuilds files changed twice from the lower "
                                                               "delta's base image)")));
  if (ancestors->empty())
    return Fail("cdimg merge", absl::InvalidArgumentError(StrCat(a.lower, ": is a full image, not a delta")));
  auto base_chain = ImageChain::Open(ancestors->front(), *ancestors);
  if (!base_chain.ok()) return Fail("cdimg merge", base_chain.status());
  Progress progress("merge");
  auto options = ToDiffOptions(a, &progress);
  if (!options.ok()) return Fail("cdimg merge", options.status());
  auto stats = a.compose ? ComposeDeltas(**base_chain, a.lower, a.upper, a.out, *options)
                         : MergeDeltas(**base_chain, a.lower, a.upper, a.out, *options);
  if (!stats.ok()) return Fail("cdimg merge", stats.status());
  PrintStats("merge", a.out, *stats, Seconds(start));
  auto h1 = CdimgImage::ReadHeader(a.lower);
  auto h2 = CdimgImage::ReadHeader(a.upper);
  if (h1.ok() && h2.ok())
    std::printf("  inputs: %llu + %llu = %llu bytes\n", static_cast<unsigned long long>(h1->file_size),
                static_cast<unsigned long long>(h2->file_size),
                static_cast<unsigned long long>(h1->file_size + h2->file_size));
  return 0;
}

void RegisterDiff(CLI::App& cdimg) {
  auto a = std::make_shared<DiffArgs>();
  CLI::App* c = cdimg.add_subcommand(
      "diff",
      "Write a delta cdimg that turns image A into image B: per file unchanged/moved (no bytes), a binary "
      "delta against A's file at the same path or a renamed one, or a new full blob");
  c->add_option("--oldCdimg", a->old_cdimg, "Image A (full, or a delta with its chain)")->required();
  c->add_option("--newCdimg", a->new_cdimg, "Image B (full, or a delta with its chain)")->required();
  c->add_option("--outCdimg", a->out, "Delta A→B to write")->required();
  AddDeltaOptions(c, a.get());
  c->callback([a] { ExitCode() = RunDiff(*a); });
}

void RegisterPatch(CLI::App& cdimg) {
  auto a = std::make_shared<PatchArgs>();
  CLI::App* c = cdimg.add_subcommand(
      "patch",
      "Apply a delta A→B to image A and write the full image B: B's image id and every file's bytes; with "
      "--level 19 (convert's default) the same bytes `convert` writes for B");
  c->add_option("--baseCdimg", a->base_cdimg, "Image A the delta was made against")->required();
  c->add_option("--diffCdimg", a->diff_cdimg, "Delta A→B")->required();
  c->add_option("--outCdimg", a->out, "Full image B to write")->required();
  c->add_option("--threadNum,--threads", a->threads, "Worker threads (default: all CPUs)");
  c->add_option("--base", a->bases,
                "Ancestors of A if A is itself a delta, any order (repeatable); by default found by image id "
                "among the *.cdimg files next to A");
  c->add_option("--level", a->level,
                StrCat("zstd level of the files compressed anew (changed ones; unchanged files keep their "
                       "stored blobs), the index then at convert's level. Default: ", kPatchFastLevel,
                       " for both (fast). convert's --level of A and the delta (19 by default) gives the "
                       "very bytes convert writes for B"))
      ->check(CLI::Range(1, 22));
  c->callback([a] { ExitCode() = RunPatch(*a); });
}

void RegisterMerge(CLI::App& cdimg) {
  auto a = std::make_shared<MergeArgs>();
  CLI::App* c = cdimg.add_subcommand(
      "merge",
      "Merge deltas A→B and B→C into one delta A→C, usually smaller than both together (files both "
      "changed are diffed again; no bound is enforced). Needs image A "
      "(--base, or found by image id among the *.cdimg files next to the deltas): by default its files, to "
      "re-diff those changed by both deltas; with --compose only its index");
  c->add_option("--lowerCdimg", a->lower, "Delta A→B")->required();
  c->add_option("--upperCdimg", a->upper, "Delta B→C")->required();
  c->add_option("--outCdimg", a->out, "Delta A→C to write")->required();
  c->add_flag("--compose", a->compose,
              "Read no file of A: copy the deltas' blobs and packs as they are stored and store a file changed "
              "by both as a chained patch (A→B patch then B→C patch, left where they lie in the copied packs). "
              "About the deltas' bytes (measured at or below D1 + D2 on the corpus; not enforced) and far "
              "faster than the default (nothing but chain headers and the deltas' small inline packs is "
              "compressed again), but larger than the default's re-diff where both deltas changed the same "
              "file. The result is a delta with placed packs, which readers older than this build refuse");
  AddDeltaOptions(c, a.get());
  c->callback([a] { ExitCode() = RunMerge(*a); });
}

}  // namespace

void RegisterDelta(CLI::App& cdimg) {
  RegisterDiff(cdimg);
  RegisterPatch(cdimg);
  RegisterMerge(cdimg);
}

}  // namespace d4c::cli
