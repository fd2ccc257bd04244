// Shared machinery of diff / patch / merge: spool, job runner, per-file
// encoding (driving the codecs along the `auto` policy of codec_policy.h),
// stats.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <exception>
#include <new>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>
#include <utility>

#include "d4c/convert.h"
#include "d4c/base/io.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "d4c/base/zstd.h"
#include "codec_policy.h"
#include "delta_internal.h"
#include "delta_stream.h"
#include "thread_pool.h"

namespace d4c {

absl::StatusOr<std::optional<CodecId>> ParseCodecChoice(std::string_view name) {
  if (name == "auto") return std::optional<CodecId>();
  auto id = ParseCodecName(name);
  if (!id.ok())
    return absl::InvalidArgumentError(StrCat("unknown codec '", name, "' (valid: auto, zstd, xdelta3, bsdiff, relcopy, gzip, lzma)"));
  return std::optional<CodecId>(*id);
}

namespace delta_internal {

// ---------------------------------------------------------------- spool

absl::StatusOr<std::unique_ptr<Spool>> Spool::Create(const std::string& out_path) {
  absl::StatusOr<int> fd = OpenTempFile(DirectoryOf(out_path));
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<Spool>(new Spool(*fd));
}

Spool::~Spool() { close(fd_); }

absl::StatusOr<BlobRef> Spool::Put(std::string_view bytes) {
  BlobRef ref = Reserve(bytes.size());
  if (absl::Status st = WriteAt(ref.offset, bytes); !st.ok()) return st;
  return ref;
}

BlobRef Spool::Reserve(uint64_t length) {
  MutexLock l(&mu_);
  BlobRef ref{end_, length};
  end_ += length;
  return ref;
}

absl::Status Spool::WriteAt(uint64_t offset, std::string_view bytes) {
  return PWriteAll(fd_, bytes, offset, "delta spool");
}

absl::StatusOr<std::string> Spool::Get(const BlobRef& ref) const {
  std::string out(ref.length, '\0');
  if (absl::Status st = PReadAll(fd_, out.data(), out.size(), ref.offset, "delta spool"); !st.ok()) return st;
  return out;
}

// ---------------------------------------------------------------- jobs

namespace {

// One Helpers::Run call: its tasks, the next one nobody has claimed yet, and
// how many have finished. `next`, `done` and `thrown` are guarded by
// RunState::mu.
struct TaskGroup {
  const std::vector<std::function<void()>>* tasks = nullptr;
  size_t next = 0;
  size_t done = 0;
  // The first exception a task threw (std::bad_alloc), thrown again on the
  // Run's caller once every claimed task finished: an exception must not
  // end the process from a pool thread (the snapshotter compacts in-process).
  std::exception_ptr thrown;
};

// Runs one task of `g`, keeping what it throws. Called without RunState::mu.
std::exception_ptr RunTask(const std::function<void()>& task) {
  try {
    task();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

// State shared between the dispatcher and the workers of one RunJobs call.
// Thread-safety: everything is guarded by `mu`, which is never held while a
// job or a task runs; `cv` is signalled whenever a job, a task or a helper
// finishes, a group is added, or borrowed threads are released.
struct RunState {
  Mutex mu;
  CondVar cv;
  uint64_t inflight ABSL_GUARDED_BY(mu) = 0;
  uint64_t done ABSL_GUARDED_BY(mu) = 0;
  uint64_t total ABSL_GUARDED_BY(mu) = 0;
  size_t width ABSL_GUARDED_BY(mu) = 0;         // pool threads
  size_t running ABSL_GUARDED_BY(mu) = 0;       // of them busy: jobs, helpers, borrowed
  size_t jobs_running ABSL_GUARDED_BY(mu) = 0;
  size_t helpers_idle ABSL_GUARDED_BY(mu) = 0;  // helpers submitted that have not claimed a task yet
  std::deque<TaskGroup*> groups ABSL_GUARDED_BY(mu);  // with unclaimed tasks, oldest first
  std::map<size_t, absl::Status> errors ABSL_GUARDED_BY(mu);  // by entry: the lowest is reported
  std::map<size_t, SpooledBlob> out ABSL_GUARDED_BY(mu);

  size_t Unclaimed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    size_t n = 0;
    for (const TaskGroup* g : groups) n += g->tasks->size() - g->next;
    return n;
  }
  // The next unclaimed task (of the oldest group), or null.
  const std::function<void()>* Claim(TaskGroup** group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (groups.empty()) return nullptr;
    TaskGroup* g = groups.front();
    const std::function<void()>* t = &(*g->tasks)[g->next++];
    if (g->next == g->tasks->size()) groups.pop_front();
    *group = g;
    return t;
  }
};

// Lends a job the pool's idle threads: its tasks are claimed by helpers the
// dispatcher starts on free slots, and by the job's own thread, which thus
// never waits for a task that nobody has started. Thread-safety: one object
// serves every job of a RunJobs call, called from their threads at once;
// synchronized by RunState's lock.
class PoolHelpers final : public Helpers {
 public:
  explicit PoolHelpers(RunState& st) : st_(st) {}

  void Run(const std::vector<std::function<void()>>& tasks) override {
    if (tasks.empty()) return;
    TaskGroup g;
    g.tasks = &tasks;
    st_.mu.Lock();
    st_.groups.push_back(&g);
    st_.cv.SignalAll();
    while (g.next < tasks.size()) {
      size_t k = g.next++;
      if (g.next == tasks.size()) st_.groups.erase(std::find(st_.groups.begin(), st_.groups.end(), &g));
      st_.mu.Unlock();
      std::exception_ptr e = RunTask(tasks[k]);
      st_.mu.Lock();
      if (e && !g.thrown) g.thrown = e;
      ++g.done;
    }
    while (g.done != tasks.size()) st_.cv.Wait(&st_.mu);
    std::exception_ptr thrown = g.thrown;
    st_.mu.Unlock();
    if (thrown) std::rethrow_exception(thrown);
  }

  int Borrow(int max) override {
    MutexLock l(&st_.mu);
    int n = static_cast<int>(std::min<size_t>(std::max(max, 0), st_.width - st_.running));
    st_.running += n;
    return n;
  }

  void Release(int n) override {
    MutexLock l(&st_.mu);
    st_.running -= n;
    st_.cv.SignalAll();
  }

 private:
  RunState& st_;
};

std::string JobName(const BlobJob& job, const RunOptions& o) {
  if (o.entries && job.entry < o.entries->size()) return StrCat("/", (*o.entries)[job.entry].path);
  return StrCat("entry ", job.entry);
}

void RunOne(const BlobJob& job, Spool& spool, Helpers& helpers, const RunOptions& o, RunState& st) {
  absl::StatusOr<BlobResult> r = absl::UnknownError("not run");
  try {
    r = job.run(helpers);
  } catch (const std::bad_alloc&) {
    r = absl::ResourceExhaustedError(StrCat(JobName(job, o), ": out of memory (std::bad_alloc) while making its blob; ",
                                            "free memory or use fewer threads (--threadNum)"));
  } catch (const std::exception& e) {
    r = absl::InternalError(StrCat(JobName(job, o), ": ", e.what(), " while making its blob"));
  }
  absl::StatusOr<BlobRef> ref = !r.ok() ? r.status() : r->spooled ? *r->spooled : spool.Put(r->blob);
  std::optional<SpooledAlternate> alt, alt_relcopy;
  if (ref.ok()) {  // r is then ok too
    for (auto [from, to] : {std::pair{&r->alt, &alt}, std::pair{&r->alt_relcopy, &alt_relcopy}}) {
      if (!ref.ok() || !*from) continue;
      auto a = spool.Put((*from)->blob);
      if (a.ok()) *to = SpooledAlternate{(*from)->codec, *a, (*from)->base};
      else ref = a.status();
    }
  }
  MutexLock l(&st.mu);
  if (!ref.ok()) {
    st.errors.emplace(job.entry, ref.status());
  } else {
    SpooledBlob s{r->recipe, alt, alt_relcopy, r->rename_base, r->reencoded};
    s.recipe.blob = *ref;
    st.out.emplace(job.entry, s);
  }
  st.inflight -= job.memory;
  --st.running;
  --st.jobs_running;
  st.done += job.size;
  if (o.progress) o.progress(st.done, st.total);  // under mu: never concurrently (delta.h)
  st.cv.SignalAll();
}

// Runs claimed tasks of any group until none is left, on a pool thread.
void RunHelper(RunState& st) {
  st.mu.Lock();
  --st.helpers_idle;
  TaskGroup* g = nullptr;
  while (const std::function<void()>* t = st.Claim(&g)) {
    st.mu.Unlock();
    std::exception_ptr e = RunTask(*t);
    st.mu.Lock();
    if (e && !g->thrown) g->thrown = e;
    ++g->done;
    st.cv.SignalAll();
  }
  --st.running;
  st.cv.SignalAll();
  st.mu.Unlock();
}

}  // namespace

absl::StatusOr<std::map<size_t, SpooledBlob>> RunJobs(std::vector<BlobJob> jobs, Spool& spool,
                                                      const RunOptions& o) {
  // Largest first keeps the long jobs from ending up alone at the tail; the
  // small ones after them, in entry order when asked.
  std::sort(jobs.begin(), jobs.end(), [&o](const BlobJob& a, const BlobJob& b) {
    bool a_small = a.size < o.entry_order_below, b_small = b.size < o.entry_order_below;
    if (a_small != b_small) return b_small;
    if (a_small || a.size == b.size) return a.entry < b.entry;
    return a.size > b.size;
  });
  RunState st;
  PoolHelpers helpers(st);
  {
    internal::ThreadPool pool(o.threads);
    size_t next = 0;
    st.mu.Lock();
    for (const BlobJob& j : jobs) st.total += j.size;
    st.width = pool.size();
    // Free slots go to helpers first (they speed up the biggest job running),
    // then to the next job; the loop ends when no job is left to start or
    // run, or at the first failure.
    auto helper_wanted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
      return st.running < st.width && st.Unclaimed() > st.helpers_idle;
    };
    bool cancelled = false;  // o.cancelled returned true: start no job
    auto job_ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
      return !cancelled && next < jobs.size() && st.running < st.width &&
             (st.jobs_running == 0 || st.inflight + jobs[next].memory <= o.memory_budget);
    };
    auto finished = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
      if (!cancelled && next < jobs.size() && o.cancelled && o.cancelled()) cancelled = true;
      return !st.errors.empty() || ((next == jobs.size() || cancelled) && st.jobs_running == 0);
    };
    for (;;) {
      while (!finished() && !helper_wanted() && !job_ready()) st.cv.Wait(&st.mu);
      if (finished()) break;
      if (helper_wanted()) {
        ++st.running;
        ++st.helpers_idle;
        pool.Submit([&st] { RunHelper(st); });
        continue;
      }
      if (!job_ready()) continue;  // cancelled just now
      ++st.running;
      const BlobJob& job = jobs[next++];
      st.inflight += job.memory;
      ++st.jobs_running;
      pool.Submit([&job, &spool, &helpers, &o, &st] { RunOne(job, spool, helpers, o, st); });
    }
    st.mu.Unlock();
  }  // the pool joins here: every submitted job and helper has finished
  MutexLock l(&st.mu);
  if (!st.errors.empty()) return st.errors.begin()->second;
  if (st.out.size() != jobs.size()) return absl::CancelledError("cancelled before every blob was made");
  return std::move(st.out);
}

// ---------------------------------------------------------------- encoding

namespace {

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
absl::Status CheckRoundTrip(const Candidate& c, std::string_view target, Helpers& helpers) {
  // DecodeWith decodes a big patch's sections on idle threads (the serial
  // tail of a big binary's job); the base is copied, since it may be changed in place.
  auto back = GetCodec(c.codec).DecodeWith(
      [&]() -> absl::StatusOr<std::string> {
        auto copy = AllocateWholeBuffer(c.base->content.size());
        if (copy.ok()) copy->replace(0, copy->size(), c.base->content);
        return copy;
      },
      c.patch, target.size(),
      c.packed, helpers);
  if (!back.ok()) return back.status();
  if (*back != target) return absl::InternalError("patch does not reproduce the target");
  return absl::OkStatus();
}

// The pack form if packs are on and it fits a member, else the standalone
// form; only codecs marked two_forms (xdelta3, relcopy, gzip) have two.
// `standalone_first` (xdelta3, gzip): the pack form is tried only
// when the standalone one is near the member limit. That picks the same form:
// the pack form is the same VCDIFF without secondary compression (used only
// where it saves) and checksums, so never smaller than the standalone form
// minus a few bytes per 8 MiB window. relcopy's standalone form wraps its
// pack form: that is made first, and wrapped only if it does not fit (the
// same choice from one match instead of two; the standalone encodes were 6%
// of a prettier diff's CPU, the net saving ~2%).
constexpr uint64_t kFormSlack = 4 << 10;

// `limit`: the cost of the best patch so far; a one-form codec may give up
// once it is sure to exceed it (EncodeWithin).
absl::StatusOr<std::string> EncodeForm(const DeltaCodec& c, std::string_view base, std::string_view target,
                                       bool pack, bool standalone_first, uint64_t limit, Helpers& helpers,
                                       bool* packed, std::string* raw_form = nullptr) {
  *packed = false;
  if (!TraitsOf(c.id()).two_forms) {
    auto patch = raw_form ? c.EncodeWithinAndRaw(base, target, helpers, limit, raw_form)
                          : c.EncodeWithin(base, target, helpers, limit);
    *packed = pack && patch.ok() && patch->size() <= kPackMemberMax;
    return patch;
  }
  if (!pack) return c.Encode(base, target);
  bool wraps = TraitsOf(c.id()).standalone_wraps_pack;
  if (standalone_first && !wraps) {
    auto alone = c.Encode(base, target);
    if (!alone.ok() || alone->size() > kPackMemberMax + kFormSlack) return alone;
    auto member = c.EncodeForPack(base, target);
    if (!member.ok() || member->size() > kPackMemberMax) return alone;
    *packed = true;
    return member;
  }
  auto member = c.EncodeForPack(base, target);
  if (member.ok() && member->size() <= kPackMemberMax) {
    *packed = true;
    return member;
  }
  if (!member.ok()) return member;
  return wraps ? c.StandaloneFromPack(target, *member) : c.Encode(base, target);
}

// Encodes with `codec`; in auto mode a failing codec is just not a candidate.
// A packed relcopy patch is also kept in `raw` (the smallest), the
// PackAlternate of whatever wins.
absl::Status Try(CodecId codec, const Base& base, std::string_view target, const DiffOptions& o,
                 const Plan& plan, Helpers& helpers, std::optional<Candidate>* best,
                 std::optional<Candidate>* raw, std::optional<Candidate>* raw_bsdiff = nullptr) {
  bool packed = false;
  uint64_t limit = *best ? (*best)->cost : std::numeric_limits<uint64_t>::max();
  // bsdiff against the base by name also gives its raw pack form, the
  // alternate BestDelta would otherwise diff again for.
  std::string raw_form;
  bool want_raw = raw_bsdiff && codec == CodecId::kBsdiff && o.pack_small_blobs && !o.codec;
  auto patch = EncodeForm(GetCodec(codec), base.content, target, o.pack_small_blobs, plan.standalone_first,
                          limit, helpers, &packed, want_raw ? &raw_form : nullptr);
  if (!raw_form.empty() && raw_form.size() <= kPackRawMax / 2)
    *raw_bsdiff = Candidate{&base, CodecId::kBsdiff, std::move(raw_form), true, 0};
  if (!patch.ok()) {
    // auto: a failing codec is no candidate; a fixed codec that does not
    // apply to the file (gzip on a file it cannot rebuild) leaves it whole.
    if (!o.codec || patch.status().code() == absl::StatusCode::kFailedPrecondition) return absl::OkStatus();
    return Annotate(patch.status(), CodecName(codec));
  }
  if (!KeepCandidate(o, codec, patch->size(), target.size())) return absl::OkStatus();
  uint64_t cost = PatchCost(*patch, packed);
  bool is_raw = codec == CodecId::kRelcopy && packed && !o.codec;
  if (is_raw && (!*raw || cost < (*raw)->cost)) *raw = Candidate{&base, codec, *patch, packed, cost};
  if (!*best || cost < (*best)->cost) *best = Candidate{&base, codec, std::move(*patch), packed, cost};
  return absl::OkStatus();
}

// A winner against another base than bases[0] (B's twin, A's sibling) gets
// bsdiff's raw form against bases[0] only if its patch is at least
// 1/kTwinRawMinShare of the fast patch against bases[0]. Below that, on
// prettier's 23 pairs, no such form was worth its pair and weighing it
// misled ChooseAlternates' first step: without them 3.0.0->3.0.1 150,298 ->
// 148,483 B, 3.2.4->3.2.5 11,650 -> 11,558, no pair larger (at 1/8 one
// grew by 1,379 B); all such forms together were 7-8% of the diff CPU, the
// ones skipped ~2%.
constexpr uint64_t kTwinRawMinShare = 16;

// bsdiff's raw pack form of `target` against `base`, when bsdiff's time fits
// and the form is at most half a pack (it must share one with its twin).
absl::StatusOr<std::optional<Candidate>> RawBsdiff(const Base& base, std::string_view target, const DiffOptions& o,
                                                   Helpers& helpers) {
  std::optional<Candidate> out;
  if (!BsdiffFits(o, base.content.size(), target.size())) return out;
  auto patch = GetCodec(CodecId::kBsdiff).EncodeRawForPack(base.content, target, helpers);
  if (!patch.ok()) return absl::IsResourceExhausted(patch.status()) ? patch.status() : absl::OkStatus();
  if (patch->size() > kPackRawMax / 2) return out;
  // Its cost is weighed with the pack's other members (ChooseAlternates), not here.
  out = Candidate{&base, CodecId::kBsdiff, std::move(*patch), true, 0};
  return out;
}

// The smallest patch: every base with the first codec, then the other codecs
// on the best base only (bases rarely disagree with codecs about the winner).
absl::StatusOr<std::optional<Candidate>> BestDelta(std::string_view target, const std::vector<Base>& bases,
                                                   const DiffOptions& o, Helpers& helpers,
                                                   std::optional<Candidate>* alt,
                                                   std::optional<Candidate>* alt_relcopy) {
  std::optional<Candidate> best, raw, raw_bsdiff;
  if (target.size() < o.min_delta_size || bases.empty()) return best;
  auto raw_of = [&](const Base* b) { return b == &bases[0] ? &raw_bsdiff : nullptr; };
  Plan plan = PlanCodecs(target, bases, o);
  // The first codec runs on every base, except on text with several bases:
  // there a fast zstd patch picks the base (level 19's patches of prettier's
  // twins cost 0.3-0.5 s each, the fast ones 10 ms), and the first codec
  // runs on that one.
  std::vector<const Base*> first_bases;
  uint64_t own_fast = 0;  // the fast patch against bases[0], where measured
  if (plan.text && bases.size() > 1) {
    const Base* pick = &bases[0];
    uint64_t least = FastPatchSize(bases[0].content, target);
    own_fast = least;
    for (size_t k = 1; k < bases.size(); ++k)
      if (uint64_t n = FastPatchSize(bases[k].content, target); n < least) least = n, pick = &bases[k];
    first_bases.push_back(pick);
  } else {
    for (const Base& b : bases) first_bases.push_back(&b);
  }
  for (const Base* b : first_bases)
    if (auto s = Try(plan.codecs[0], *b, target, o, plan, helpers, &best, &raw, raw_of(b)); !s.ok()) return s;
  if (!best && plan.codecs.size() > 1 && plan.codecs[0] == CodecId::kGzip) {
    // A zip archive the gzip codec cannot rebuild: the plan without it.
    plan.codecs.erase(plan.codecs.begin());
    for (const Base* b : first_bases)
      if (auto s = Try(plan.codecs[0], *b, target, o, plan, helpers, &best, &raw); !s.ok()) return s;
  }
  if (!best) return best;
  if (SkipRestAfterFirst(o, target.size(), best->patch.size())) plan.codecs.resize(1);
  const Base* chosen = best->base;
  // auto: relcopy runs on the chosen base as soon as the patch is known to
  // be packed; its cost then bounds the slow codecs (EncodeWithin).
  bool relcopy_tried = plan.codecs[0] == CodecId::kRelcopy;
  auto maybe_relcopy = [&]() -> absl::Status {
    if (!RelcopyNext(o, relcopy_tried, best->patch.size(), chosen->content.size(), target.size()))
      return absl::OkStatus();
    relcopy_tried = true;
    return Try(CodecId::kRelcopy, *chosen, target, o, plan, helpers, &best, &raw);
  };
  if (auto s = maybe_relcopy(); !s.ok()) return s;
  for (size_t c = 1; c < plan.codecs.size(); ++c)
    if (auto s = Try(plan.codecs[c], *chosen, target, o, plan, helpers, &best, &raw, raw_of(chosen)); !s.ok())
      return s;
  if (auto s = maybe_relcopy(); !s.ok()) return s;
  if (GzipNext(o, plan, target))
    if (auto s = Try(CodecId::kGzip, *chosen, target, o, plan, helpers, &best, &raw); !s.ok()) return s;
  if (best) {
    if (auto s = CheckRoundTrip(*best, target, helpers); !s.ok())
      return absl::InternalError(StrCat(CodecName(best->codec), " round trip failed: ", s.message()));
    if (best->packed && !o.codec) {
      // bsdiff's raw form against the base by name, if it fits beside its
      // twin in a pack; else relcopy's (as a winner in another codec).
      // It comes with bsdiff's patch against bases[0] where that ran; it is
      // made on its own only for a winner against another base (B's twin,
      // A's sibling), the case it is for: elsewhere (near-identical files
      // the tiny-patch rule spared bsdiff) it cost prettier 8% of diff time
      // for no byte. Nor where the winner is small beside the fast patch
      // against bases[0] (kTwinRawMinShare): the raw form pays only as a
      // pair with its twin's, which costs about one such own patch against
      // the two primaries (the twin's own and this one).
      std::optional<Candidate> shared = std::move(raw_bsdiff);
      bool worth = own_fast == 0 || best->patch.size() * kTwinRawMinShare >= own_fast;
      if (!shared && best->base != &bases[0] && worth) {
        auto a = RawBsdiff(bases[0], target, o, helpers);
        if (!a.ok()) return a.status();
        shared = std::move(*a);
      }
      std::optional<Candidate> second;
      if (raw && raw->base == best->base && best->codec != raw->codec) second = std::move(raw);
      if (!shared) std::swap(shared, second);
      for (auto [c, to] : {std::pair{&shared, alt}, std::pair{&second, alt_relcopy}}) {
        if (!*c) continue;
        if (auto s = CheckRoundTrip(**c, target, helpers); !s.ok())
          return absl::InternalError(StrCat(CodecName((*c)->codec), " raw form round trip failed: ", s.message()));
        *to = std::move(*c);
      }
    }
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
                                      const DiffOptions& options, std::optional<std::string> ready_full,
                                      Helpers& helpers) {
  std::optional<Candidate> alt, alt_relcopy;
  auto delta = BestDelta(target, bases, options, helpers, &alt, &alt_relcopy);
  if (!delta.ok()) return delta.status();
  auto result = [&]() {
    BlobResult r = DeltaResult(**delta);
    if (alt) r.alt = PackAlternate{alt->codec, std::move(alt->patch), alt->base->digest};
    if (alt_relcopy)
      r.alt_relcopy = PackAlternate{alt_relcopy->codec, std::move(alt_relcopy->patch), alt_relcopy->base->digest};
    return r;
  };
  if (*delta && !ready_full) {
    // A delta below a quarter of even a fast (level 1) compression cannot
    // lose to the slow one: skip the level-19 compression (seconds per MB)
    // that would only confirm it.
    auto quick = CompressFullBlob(target, 1);
    if (!quick.ok()) return quick.status();
    if ((**delta).patch.size() * 4 <= quick->size()) return result();
  }
  std::string full;
  if (ready_full) {
    full = std::move(*ready_full);
  } else {
    auto z = CompressFullBlob(target, options.zstd_level);
    if (!z.ok()) return z.status();
    full = std::move(*z);
  }
  if (*delta && (**delta).patch.size() < full.size()) return result();
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
  // bsdiff's suffix array and its inverse (4 + 4 bytes per base byte), its
  // prefix table (at most 2) and the base itself dominate; its segments'
  // streams are joined into one copy of the target's size; zstd level 19
  // tables for its six streams (three ctrl columns, zero runs, literals,
  // extra), sized to inputs that are a tenth of the target or less.
  return 11 * base_size + 4 * target_size + (256ull << 20);
}

// ---------------------------------------------------------------- misc

std::vector<Entry> AllEntries(const CdimgImage& img) {
  std::vector<Entry> out;
  out.reserve(img.size());
  for (size_t i = 0; i < img.size(); ++i) out.push_back(img.EntryAt(i));
  return out;
}

absl::Status AtEntry(const absl::Status& s, std::string_view image_path, std::string_view entry_path) {
  return Annotate(s, StrCat(image_path, ": /", entry_path));
}

void ChooseAlternates(std::string_view lead, std::vector<PackMember>& members, uint64_t max_raw, Helpers& helpers) {
  // A choice per member: 0 its primary, 1 its alternate, 2 the second one.
  using Choice = std::vector<uint8_t>;
  const size_t n = members.size();
  auto form = [&](size_t k, uint8_t c) -> const std::string& {
    return c == 2 ? members[k].alt_relcopy : c == 1 ? members[k].alt : members[k].bytes;
  };
  constexpr uint64_t kOver = std::numeric_limits<uint64_t>::max();
  auto size_at = [](std::string_view bytes, int level) -> uint64_t {
    auto z = CdimgWriter::CompressPack(bytes, level);
    return z.ok() ? z->size() : kOver;
  };
  auto cost = [&](const Choice& use, int level) -> uint64_t {
    std::string pack(lead);
    for (size_t k = 0; k < n; ++k) pack += form(k, use[k]);
    return pack.size() > max_raw ? kOver : size_at(pack, level);
  };
  // 1. From every alternate of a kind, members take their primary back one
  // at a time, in order, where the pack at the fast level shrinks: a pair of
  // files with one edit gains only when both take the raw form, so flips
  // from every primary would never find it (taking one alone costs more),
  // while from every alternate taking one back loses the pair's shared bytes
  // and is refused. Two kinds: the alternates (bsdiff's raw form where
  // there is one), and relcopy's forms alone, as before bsdiff's (which may
  // still pack smaller where an edit is a version string in many files).
  auto greedy = [&](auto option) {
    Choice use(n);
    for (size_t k = 0; k < n; ++k) use[k] = option(k);
    uint64_t best = cost(use, kAlternateChoiceLevel);
    for (size_t k = 0; k < n; ++k) {
      if (!use[k]) continue;
      uint8_t c = std::exchange(use[k], 0);
      uint64_t now = cost(use, kAlternateChoiceLevel);
      // Over the limit (best is the maximum), every step back is taken: the
      // primaries fit.
      if (now < best || best == kOver) best = now;
      else use[k] = c;
    }
    return use;
  };
  auto first = [&](size_t k) -> uint8_t { return members[k].blob->alt ? 1 : 0; };
  auto relcopy = [&](size_t k) -> uint8_t {
    if (members[k].blob->alt_relcopy) return 2;
    return members[k].blob->alt && members[k].blob->alt->codec == CodecId::kRelcopy ? 1 : 0;
  };
  bool any_relcopy_second = false;
  for (const PackMember& m : members) any_relcopy_second |= m.blob->alt_relcopy.has_value();
  Choice with_first(n), with_relcopy(n);
  std::vector<std::function<void()>> tasks = {[&] { with_first = greedy(first); }};
  if (any_relcopy_second) tasks.push_back([&] { with_relcopy = greedy(relcopy); });
  // 2. The fast level misjudges big raw forms, which only the slow one
  // compresses as well as the primaries (prettier's typescript plugin, two
  // 40 KB raw bsdiff forms: 29,223 B at level 3, 26,715 at 19, against
  // 27,834 for the primaries). So neighbours whose alternates share most of
  // their bytes (together under 3/4 of apart, at the fast level) are weighed
  // as a pair at the pack's level, both alternates against both primaries.
  std::vector<size_t> pairs;  // k: members k and k + 1
  for (size_t k = 0; k + 1 < n; ++k)
    if (members[k].blob->alt && members[k + 1].blob->alt) pairs.push_back(k);
  std::vector<int> pair_take(pairs.size(), -1);  // -1: not weighed
  for (size_t q = 0; q < pairs.size(); ++q) {
    tasks.push_back([&, q] {
      size_t k = pairs[q];
      const std::string& a = members[k].alt;
      const std::string& b = members[k + 1].alt;
      std::string both = a + b;
      uint64_t apart = size_at(a, kAlternateChoiceLevel) + size_at(b, kAlternateChoiceLevel);
      uint64_t together = size_at(both, kAlternateChoiceLevel);
      if (together * 4 > apart * 3) return;
      // The slow level packed such forms at most ~10% smaller than the fast
      // one (the typescript plugin's: 8.6%): a pair over 5/4 of its primaries'
      // bytes at the fast level is left to the first step's choice.
      uint64_t primaries = members[k].bytes.size() + members[k + 1].bytes.size();
      if (together * 4 > primaries * 5) return;
      pair_take[q] = size_at(both, kPackLevel) < size_at(members[k].bytes + members[k + 1].bytes, kPackLevel);
    });
  }
  helpers.Run(tasks);
  Choice paired = with_first, pairs_only(n);
  for (size_t q = 0; q < pairs.size(); ++q)
    if (pair_take[q] >= 0) paired[pairs[q]] = paired[pairs[q] + 1] = pair_take[q] == 1 ? 1 : 0;
  for (size_t q = 0; q < pairs.size(); ++q)
    if (pair_take[q] == 1) pairs_only[pairs[q]] = pairs_only[pairs[q] + 1] = 1;
  // 3. Weighed at the level the pack is written at, side by side: the
  // smallest of every primary and the four choices (ties keep the earlier;
  // the fast level alone misjudged by a few hundred bytes, prettier
  // 3.5.3->3.6.0: +271 B without this). The fourth is the pairs weighed in
  // step 2 with every other member's primary: the first step's level-3
  // choices beside them can mislead (prettier's 23 pairs: -3,886 B with it,
  // six pairs smaller, 3.0.2->3.0.3 +2 B, from the pack weighed alone
  // where the meta frame holds it).
  std::vector<Choice> candidates = {Choice(n)};
  for (const Choice* c : {&paired, &with_first, &with_relcopy, &pairs_only})
    if (std::find(candidates.begin(), candidates.end(), *c) == candidates.end()) candidates.push_back(*c);
  std::vector<uint64_t> sizes(candidates.size());
  tasks.clear();
  for (size_t c = 0; c < candidates.size(); ++c)
    tasks.push_back([&, c] { sizes[c] = cost(candidates[c], kPackLevel); });
  helpers.Run(tasks);
  size_t pick = 0;
  for (size_t c = 1; c < candidates.size(); ++c)
    if (sizes[c] < sizes[pick]) pick = c;
  for (size_t k = 0; k < n; ++k) {
    members[k].use_alt = candidates[pick][k] == 1;
    members[k].use_relcopy = candidates[pick][k] == 2;
  }
}

absl::StatusOr<DeltaStats> WriteDelta(const std::string& out_path, const CdimgImage& parent,
                                      std::string_view config, const std::vector<Entry>& entries,
                                      std::vector<Recipe> recipes,
                                      const std::map<size_t, SpooledBlob>& blobs, const Spool& spool,
                                      int threads, const PlacedPacks* placed, int index_level) {
  const int workers = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // The writer's meta forms and ChooseAlternates' weighings, never at once.
  SpawningHelpers helpers(workers - 1);
  auto writer = CdimgWriter::Create(out_path, {.parent = &parent,
                                               .index_zstd_level = index_level,
                                               .placed_packs = placed != nullptr,
                                               .helpers = &helpers});
  if (!writer.ok()) return writer.status();
  DeltaStats stats;
  // Standalone blobs first, in entry order (std::map), then the packs.
  for (const auto& [i, b] : blobs) {
    stats.rename_bases += b.rename_base && b.recipe.kind == Recipe::Kind::kDelta;
    stats.reencoded += b.reencoded;
    if (b.recipe.packed) continue;
    // In pieces: a big file's blob is never held whole. Appended back to
    // back, the pieces make one blob.
    std::optional<BlobRef> ref;
    absl::Status st = CopyInPieces(
        b.recipe.blob, [&](const BlobRef& r) { return spool.Get(r); },
        [&](std::string_view piece) -> absl::Status {
          auto r = (*writer)->AppendBlob(piece);
          if (!r.ok()) return r.status();
          if (!ref) ref = *r;
          else if (r->offset != ref->offset + ref->length)
            return absl::InternalError("delta writer: blob pieces are not contiguous");
          else ref->length += r->length;
          return absl::OkStatus();
        });
    if (!st.ok()) return st;
    recipes[i] = b.recipe;
    recipes[i].blob = ref.value_or(BlobRef{(*writer)->blob_bytes(), 0});
  }
  // Packs are planned in entry order and compressed by `threads` workers a
  // window at a time (at most kPackWindow packs in memory), then appended in
  // order: the same bytes as one after another, in a fraction of the time
  // when a delta has many packs (merge --compose of a big update).
  std::string pack;
  uint32_t next_pack = 0;
  DeltaBucket packs;
  struct PlannedPack {
    std::string raw;     // members to compress, or empty for a copied pack
    std::string stored;  // the stored frame (copied, or compressed from raw)
    uint64_t raw_length = 0;
    std::string source;  // the image a copied pack comes from, for errors
    absl::Status status;
  };
  const size_t kPackWindow = 2 * static_cast<size_t>(workers);
  std::vector<PlannedPack> window;
  auto drain = [&]() -> absl::Status {
    std::vector<size_t> todo;
    for (size_t w = 0; w < window.size(); ++w)
      if (!window[w].raw.empty()) todo.push_back(w);
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t t; (t = next.fetch_add(1)) < todo.size();) {
        PlannedPack& pp = window[todo[t]];
        auto c = CdimgWriter::CompressPack(pp.raw);
        if (c.ok()) pp.stored = std::move(*c);
        else pp.status = c.status();
      }
    };
    {
      std::vector<std::thread> helpers;
      for (int t = 1; t < workers && static_cast<size_t>(t) < todo.size(); ++t) helpers.emplace_back(work);
      work();
      for (auto& t : helpers) t.join();
    }
    for (PlannedPack& pp : window) {
      if (!pp.status.ok()) return pp.status;
      auto p = (*writer)->AppendStoredPack(pp.stored, pp.raw_length);
      if (!p.ok()) return pp.source.empty() ? p.status() : Annotate(p.status(), pp.source);
      packs.blob_bytes += pp.stored.size();
      packs.content_bytes += pp.raw_length;
    }
    window.clear();
    return absl::OkStatus();
  };
  auto plan = [&](PlannedPack pp) -> absl::Status {
    window.push_back(std::move(pp));
    ++next_pack;
    return window.size() >= kPackWindow ? drain() : absl::OkStatus();
  };
  auto flush = [&]() -> absl::Status {
    if (pack.empty()) return absl::OkStatus();
    PlannedPack pp;
    pp.raw_length = pack.size();
    pp.raw = std::move(pack);
    pack.clear();
    return plan(std::move(pp));
  };
  if (placed) {
    // Placed packs: the copied ones first, as they are stored; the inline
    // ones (no stored frame) start the first new pack, whatever joins them.
    for (const CopiedPack& c : placed->stored) {
      PlannedPack pp;
      pp.raw_length = c.img->PackRawLength(c.pack);
      pp.source = c.img->path();
      auto stored = c.img->ReadBlob(c.img->PackBlob(c.pack));
      if (!stored.ok()) return stored.status();
      pp.stored = std::move(*stored);
      if (auto s = plan(std::move(pp)); !s.ok()) return s;
    }
    for (const CopiedPack& c : placed->lead) {
      auto raw = c.img->ReadPack(c.pack);
      if (!raw.ok()) return Annotate(raw.status(), c.img->path());
      pack += *raw;
    }
  }
  // Members join a pack in entry order while they fit (as before there were
  // alternates: a delta without any is the same bytes); then each member
  // with a PackAlternate takes the form that compresses smaller with the
  // others, within the pack limit (ChooseAlternates).
  std::vector<PackMember> group;
  uint64_t group_bytes = 0;
  auto place = [&]() -> absl::Status {
    if (group.empty()) return absl::OkStatus();
    ChooseAlternates(pack, group, kPackRawMax, helpers);
    for (PackMember& m : group) {
      size_t i = m.entry;
      recipes[i] = m.blob->recipe;
      const std::optional<SpooledAlternate>& a = m.use_relcopy ? m.blob->alt_relcopy : m.blob->alt;
      if (m.use_relcopy || m.use_alt) {
        recipes[i].codec = a->codec;
        recipes[i].base = a->base;
      }
      const std::string& bytes = m.use_relcopy ? m.alt_relcopy : m.use_alt ? m.alt : m.bytes;
      recipes[i].blob = {pack.size(), bytes.size()};
      recipes[i].pack = next_pack;
      pack += bytes;
      packs.files++;
    }
    group.clear();
    group_bytes = 0;
    return absl::OkStatus();
  };
  for (const auto& [i, b] : blobs) {
    if (!b.recipe.packed) continue;
    PackMember m;
    m.entry = i;
    m.blob = &b;
    auto bytes = spool.Get(b.recipe.blob);
    if (!bytes.ok()) return bytes.status();
    m.bytes = std::move(*bytes);
    for (auto [from, to] : {std::pair{&b.alt, &m.alt}, std::pair{&b.alt_relcopy, &m.alt_relcopy}}) {
      if (!*from) continue;
      auto alt = spool.Get((*from)->blob);
      if (!alt.ok()) return alt.status();
      *to = std::move(*alt);
    }
    if (pack.size() + group_bytes + m.bytes.size() > kPackRawMax) {
      if (auto s = place(); !s.ok()) return s;
      if (auto s = flush(); !s.ok()) return s;
    }
    group_bytes += m.bytes.size();
    group.push_back(std::move(m));
  }
  if (auto s = place(); !s.ok()) return s;
  if (auto s = drain(); !s.ok()) return s;
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
