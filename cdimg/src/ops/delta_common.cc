// Shared machinery of diff / patch / merge: spool, job runner, per-file
// encoding with codec choice, stats.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>

#include "d4c/convert.h"
#include "d4c/strcat.h"
#include "ops/delta_internal.h"
#include "ops/thread_pool.h"

namespace d4c {

absl::StatusOr<std::optional<CodecId>> ParseCodecChoice(std::string_view name) {
  if (name == "auto") return std::optional<CodecId>();
  auto id = ParseCodecName(name);
  if (!id.ok())
    return absl::InvalidArgumentError(StrCat("unknown codec '", name, "' (valid: auto, zstd, xdelta3, bsdiff, relcopy)"));
  return std::optional<CodecId>(*id);
}

namespace delta_internal {

// ---------------------------------------------------------------- spool

absl::StatusOr<std::unique_ptr<Spool>> Spool::Create(const std::string& out_path) {
  std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  std::string dir = parent.empty() ? std::string(".") : parent.string();
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // Filesystems without O_TMPFILE: a named file, unlinked at once.
    std::string tmpl = StrCat(dir, "/.d4c-spool.XXXXXX");
    fd = mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd >= 0) unlink(tmpl.c_str());
  }
  if (fd < 0) return absl::InternalError(StrCat(dir, ": cannot create temp file: ", std::strerror(errno)));
  return std::unique_ptr<Spool>(new Spool(fd));
}

Spool::~Spool() { close(fd_); }

absl::StatusOr<BlobRef> Spool::Put(std::string_view bytes) {
  uint64_t off;
  {
    std::lock_guard<std::mutex> l(mu_);
    off = end_;
    end_ += bytes.size();
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(StrCat("temp file write: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return BlobRef{off, bytes.size()};
}

absl::StatusOr<std::string> Spool::Get(const BlobRef& ref) const {
  std::string out(ref.length, '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(ref.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(StrCat("temp file read: ", n < 0 ? std::strerror(errno) : "short"));
    done += static_cast<size_t>(n);
  }
  return out;
}

// ---------------------------------------------------------------- jobs

namespace {

// State shared between the dispatcher and the workers of one RunJobs call.
struct RunState {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t inflight = 0, done = 0, total = 0;
  size_t running = 0;
  std::map<size_t, absl::Status> errors;  // by entry: the lowest is reported
  std::map<size_t, SpooledBlob> out;
};

void RunOne(const BlobJob& job, Spool& spool, const RunOptions& o, RunState& st) {
  auto r = job.run();
  absl::StatusOr<BlobRef> ref = r.ok() ? spool.Put(r->blob) : r.status();
  std::lock_guard<std::mutex> l(st.mu);
  if (!ref.ok()) {
    st.errors.emplace(job.entry, ref.status());
  } else {
    SpooledBlob s{r->recipe, r->rename_base, r->reencoded};
    s.recipe.blob = *ref;
    st.out.emplace(job.entry, s);
  }
  st.inflight -= job.memory;
  --st.running;
  st.done += job.size;
  if (o.progress) o.progress(st.done, st.total);
  st.cv.notify_all();
}

}  // namespace

absl::StatusOr<std::map<size_t, SpooledBlob>> RunJobs(std::vector<BlobJob> jobs, Spool& spool,
                                                      const RunOptions& o) {
  // Largest first keeps the long jobs from ending up alone at the tail.
  std::sort(jobs.begin(), jobs.end(), [](const BlobJob& a, const BlobJob& b) {
    return a.size != b.size ? a.size > b.size : a.entry < b.entry;
  });
  RunState st;
  for (const BlobJob& j : jobs) st.total += j.size;
  {
    internal::ThreadPool pool(o.threads);
    for (const BlobJob& job : jobs) {
      std::unique_lock<std::mutex> l(st.mu);
      st.cv.wait(l, [&] {
        return !st.errors.empty() ||
               (st.running < pool.size() && (st.running == 0 || st.inflight + job.memory <= o.memory_budget));
      });
      if (!st.errors.empty()) break;
      st.inflight += job.memory;
      ++st.running;
      l.unlock();
      pool.Submit([&job, &spool, &o, &st] { RunOne(job, spool, o, st); });
    }
  }  // the pool joins here: every submitted job has finished
  if (!st.errors.empty()) return st.errors.begin()->second;
  return std::move(st.out);
}

// ---------------------------------------------------------------- encoding

namespace {

// Fixed cost model for `auto`: bytes of base + target per millisecond, the
// slowest rates measured on the corpus (a 30 MB Rust binary; text is 5-40x
// faster for xdelta3 and bsdiff) on a busy 2-core machine. A model rather than
// a clock keeps the output independent of load and thread count.
struct CodecCost {
  CodecId id;
  double bytes_per_ms;
};
constexpr CodecCost kCosts[] = {
    {CodecId::kXdelta3, 2400},  // cheapest first: it always runs
    {CodecId::kZstd, 1500},
    {CodecId::kBsdiff, 1500},
};

std::vector<CodecId> CodecsFor(const DiffOptions& o, uint64_t base, uint64_t target) {
  if (o.codec) return {*o.codec};
  std::vector<CodecId> out;
  for (const CodecCost& c : kCosts) {
    double ms = static_cast<double>(base + target) / c.bytes_per_ms;
    // The time budget also bounds bsdiff's memory (~5 bytes per base byte):
    // at the default it never sees more than ~90 MB of input.
    if (out.empty() || ms <= o.time_budget_ms) out.push_back(c.id);
  }
  return out;
}

constexpr uint64_t kTinyPatchMinFile = 1 << 20;
constexpr uint64_t kTinyPatchRatio = 2000;

struct Candidate {
  const Base* base;
  CodecId codec;
  std::string patch;
  bool packed = false;
  uint64_t cost = 0;  // bytes it is expected to add to the delta
};

// A packed patch is compressed again with its pack, so raw pack forms
// (xdelta3 without secondary compression, relcopy) are weighed by their
// compressed size rather than their raw bytes, which would favour codecs that
// compress their own output (zstd, bsdiff) even where the pack does better.
uint64_t PatchCost(const std::string& patch, bool packed) {
  if (!packed) return patch.size();
  auto z = CompressFullBlob(patch, 19);
  return z.ok() ? std::min<uint64_t>(patch.size(), z->size()) : patch.size();
}

// A patch that does not decode to the target is a codec bug; refusing it here
// keeps it out of the image (the reader would reject it later anyway).
absl::Status CheckRoundTrip(const Candidate& c, std::string_view target) {
  auto back = GetCodec(c.codec).Decode(c.base->content, c.patch, target.size());
  if (!back.ok()) return back.status();
  if (*back != target) return absl::InternalError("patch does not reproduce the target");
  return absl::OkStatus();
}

// Encodes with `codec`; in auto mode a failing codec is just not a candidate.
// With packs on, the pack form comes first; a patch too big for a pack is
// encoded again in the standalone form if that differs (xdelta3's DJW).
absl::Status Try(CodecId codec, const Base& base, std::string_view target, const DiffOptions& o,
                 std::optional<Candidate>* best) {
  const DeltaCodec& c = GetCodec(codec);
  bool packed = o.pack_small_blobs;
  auto patch = packed ? c.EncodeForPack(base.content, target) : c.Encode(base.content, target);
  if (patch.ok() && packed && patch->size() > kPackMemberMax) {
    packed = false;
    if (codec == CodecId::kXdelta3 || codec == CodecId::kRelcopy) patch = c.Encode(base.content, target);
  }
  if (!patch.ok()) {
    if (!o.codec) return absl::OkStatus();
    return absl::Status(patch.status().code(), StrCat(CodecName(codec), ": ", patch.status().message()));
  }
  // auto: a relcopy patch no smaller than the file found nothing to copy.
  if (!o.codec && codec == CodecId::kRelcopy && patch->size() >= target.size()) return absl::OkStatus();
  uint64_t cost = PatchCost(*patch, packed);
  if (!*best || cost < (*best)->cost) *best = Candidate{&base, codec, std::move(*patch), packed, cost};
  return absl::OkStatus();
}

// The smallest patch: every base with the first codec, then the other codecs
// on the best base only (bases rarely disagree with codecs about the winner).
absl::StatusOr<std::optional<Candidate>> BestDelta(std::string_view target, const std::vector<Base>& bases,
                                                   const DiffOptions& o) {
  std::optional<Candidate> best;
  if (target.size() < o.min_delta_size || bases.empty()) return best;
  uint64_t base_max = 0;
  for (const Base& b : bases) base_max = std::max<uint64_t>(base_max, b.content.size());
  std::vector<CodecId> codecs = CodecsFor(o, base_max, target.size());
  for (const Base& b : bases)
    if (auto s = Try(codecs[0], b, target, o, &best); !s.ok()) return s;
  if (!best) return best;
  // auto: a big file whose cheap xdelta3 patch is already tiny (at most
  // 1/kTinyPatchRatio of the file) gains at most a few hundred bytes from the
  // slow codecs (zstd at level 19 over the whole base, bsdiff's suffix sort):
  // skip them. A size rule, not a clock, so the output stays deterministic.
  if (!o.codec && target.size() >= kTinyPatchMinFile && best->patch.size() * kTinyPatchRatio <= target.size())
    codecs.resize(1);
  const Base* chosen = best->base;
  for (size_t c = 1; c < codecs.size(); ++c)
    if (auto s = Try(codecs[c], *chosen, target, o, &best); !s.ok()) return s;
  // auto: relcopy exists for packs, where files that got the same edit share
  // its instruction runs. It runs only when the patch will be packed (so the
  // change is small and its scan short; its cost is one suffix sort of the base).
  if (!o.codec && o.pack_small_blobs && best->patch.size() <= kPackMemberMax)
    if (auto s = Try(CodecId::kRelcopy, *chosen, target, o, &best); !s.ok()) return s;
  if (best) {
    if (auto s = CheckRoundTrip(*best, target); !s.ok())
      return absl::InternalError(StrCat(CodecName(best->codec), " round trip failed: ", s.message()));
  }
  return best;
}

BlobResult DeltaResult(Candidate& c) {
  BlobResult r;
  r.recipe = {Recipe::Kind::kDelta, c.codec, c.base->digest, {}};
  r.recipe.packed = c.packed;
  r.rename_base = c.base->renamed;
  r.blob = std::move(c.patch);
  return r;
}

}  // namespace

absl::StatusOr<BlobResult> EncodeFile(std::string_view target, const std::vector<Base>& bases,
                                      const DiffOptions& options, std::optional<std::string> ready_full) {
  auto delta = BestDelta(target, bases, options);
  if (!delta.ok()) return delta.status();
  if (*delta && !ready_full) {
    // A delta below a quarter of even a fast (level 1) compression cannot
    // lose to the slow one: skip the level-19 compression (seconds per MB)
    // that would only confirm it.
    auto quick = CompressFullBlob(target, 1);
    if (!quick.ok()) return quick.status();
    if ((**delta).patch.size() * 4 <= quick->size()) return DeltaResult(**delta);
  }
  std::string full;
  if (ready_full) {
    full = std::move(*ready_full);
  } else {
    auto z = CompressFullBlob(target, options.zstd_level);
    if (!z.ok()) return z.status();
    full = std::move(*z);
  }
  if (*delta && (**delta).patch.size() < full.size()) return DeltaResult(**delta);
  BlobResult r;
  r.recipe = {Recipe::Kind::kFull, CodecId::kZstd, {}, {}};
  if (options.pack_small_blobs && !ready_full && target.size() <= kPackMemberMax) {
    r.recipe.packed = true;  // raw bytes; the pack compresses them with their neighbours
    r.blob = std::string(target);
    return r;
  }
  r.blob = std::move(full);
  return r;
}

uint64_t EncodeMemory(uint64_t base_size, uint64_t target_size) {
  // bsdiff's suffix array (~5 bytes per base byte) dominates; zstd level 19
  // tables are ~100 MiB whatever the input.
  return 5 * base_size + 3 * target_size + (128ull << 20);
}

// ---------------------------------------------------------------- misc

std::vector<Entry> AllEntries(const CdimgImage& img) {
  std::vector<Entry> out;
  out.reserve(img.size());
  for (size_t i = 0; i < img.size(); ++i) out.push_back(img.EntryAt(i));
  return out;
}

absl::Status AtEntry(const absl::Status& s, std::string_view image_path, std::string_view entry_path) {
  return absl::Status(s.code(), StrCat(image_path, ": /", entry_path, ": ", s.message()));
}

absl::StatusOr<DeltaStats> WriteDelta(const std::string& out_path, const CdimgImage& parent,
                                      std::string_view config, const std::vector<Entry>& entries,
                                      std::vector<Recipe> recipes,
                                      const std::map<size_t, SpooledBlob>& blobs, const Spool& spool) {
  auto writer = CdimgWriter::Create(out_path, {.parent = &parent});
  if (!writer.ok()) return writer.status();
  DeltaStats stats;
  // Standalone blobs first, in entry order (std::map), then the packs.
  for (const auto& [i, b] : blobs) {
    stats.rename_bases += b.rename_base && b.recipe.kind == Recipe::Kind::kDelta;
    stats.reencoded += b.reencoded;
    if (b.recipe.packed) continue;
    auto bytes = spool.Get(b.recipe.blob);
    if (!bytes.ok()) return bytes.status();
    auto ref = (*writer)->AppendBlob(*bytes);
    if (!ref.ok()) return ref.status();
    recipes[i] = b.recipe;
    recipes[i].blob = *ref;
  }
  std::string pack;
  uint32_t next_pack = 0;
  DeltaBucket packs;
  auto flush = [&]() -> absl::Status {
    if (pack.empty()) return absl::OkStatus();
    uint64_t before = (*writer)->blob_bytes();
    auto p = (*writer)->AppendPack(pack);
    if (!p.ok()) return p.status();
    packs.blob_bytes += (*writer)->blob_bytes() - before;
    packs.content_bytes += pack.size();
    pack.clear();
    ++next_pack;
    return absl::OkStatus();
  };
  for (const auto& [i, b] : blobs) {
    if (!b.recipe.packed) continue;
    auto bytes = spool.Get(b.recipe.blob);
    if (!bytes.ok()) return bytes.status();
    if (pack.size() + bytes->size() > kPackRawMax)
      if (auto s = flush(); !s.ok()) return s;
    recipes[i] = b.recipe;
    recipes[i].blob = {pack.size(), bytes->size()};
    recipes[i].pack = next_pack;
    pack += *bytes;
    packs.files++;
  }
  // The last pack goes inside the meta frame: a small delta then pays for one
  // zstd frame and one set of entropy tables (docs/format.md, compact meta).
  packs.content_bytes += pack.size();
  if (auto s = (*writer)->Finish(config, entries, recipes, pack); !s.ok()) return s;
  if (auto s = FillStats(out_path, entries, recipes, &parent, &stats); !s.ok()) return s;
  if (packs.files) stats.by_kind["packs"] = packs;
  return stats;
}

absl::Status FillStats(const std::string& path, const std::vector<Entry>& entries,
                       const std::vector<Recipe>& recipes, const CdimgImage* parent, DeltaStats* stats) {
  auto h = CdimgImage::ReadHeader(path);
  if (!h.ok()) return h.status();
  stats->header = *h;
  stats->entries = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    const Recipe& r = recipes[i];
    if (e.type != EntryType::kRegular) continue;
    std::string key;
    switch (r.kind) {
      case Recipe::Kind::kEmpty: key = "empty"; break;
      case Recipe::Kind::kFull: key = r.packed ? "packed full" : "full"; break;
      case Recipe::Kind::kDelta: key = StrCat(r.packed ? "packed delta/" : "delta/", CodecName(r.codec)); break;
      case Recipe::Kind::kBase: {
        std::optional<size_t> j = parent ? parent->Find(e.path) : std::nullopt;
        bool same = j && parent->TypeAt(*j) == EntryType::kRegular && parent->DigestAt(*j) == e.digest;
        key = same ? "unchanged" : "dedup";
        break;
      }
      case Recipe::Kind::kNone: continue;
    }
    DeltaBucket& b = stats->by_kind[key];
    b.files++;
    b.blob_bytes += r.blob.length;
    b.content_bytes += e.size;
  }
  return absl::OkStatus();
}

}  // namespace delta_internal
}  // namespace d4c
