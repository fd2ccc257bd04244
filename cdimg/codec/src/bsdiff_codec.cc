#include "bsdiff_codec.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <vector>

#include "bsdiff_ctrl.h"
#include "bsdiff_diff.h"
#include "bsdiff_zero_runs.h"
#include "hash64.h"
#include "alt_section.h"
#include "multi_frame.h"
#include "x86_adjust.h"
#include "x86_code.h"
#include "d4c/base/varint.h"
#include "d4c/base/zstd.h"
#include "d4c/base/strcat.h"

namespace d4c::codec_internal {

namespace {

constexpr size_t kHeaderSize = 3 * 4 + 8;
// Set in the ctrl length word: the x86 code form (docs/format.md), whose
// record follows the header. Control streams are therefore under 2 GiB.
constexpr uint32_t kX86Flag = 1u << 31;
constexpr uint8_t kX86FormBranchRip = 1;
// The same, with the base's references moved along the control stream's
// blocks first (x86_adjust.h); the record ends with the target's layout.
constexpr uint8_t kX86FormAdjusted = 2;
// A decoder reads the adjusted form's whole control stream before applying
// it; a real one has far fewer triples (biome's 28 MB binary: ~140 k).
constexpr size_t kMaxAdjustTriples = size_t{1} << 24;

// The three stream slices of a patch, after the header was bounds-checked.
struct Parsed {
  std::string_view ctrl, diff, extra;
  uint64_t hash;
  // The x86 code form: the spans of base and target that were transformed.
  std::optional<X86Span> x86_base, x86_target;
  // The adjusted form, and then the target's layout.
  bool adjusted = false;
  ElfLayout adjust_target;
  // Read from a pack: sections may be in the raw pack form.
  bool packed = false;
};

// The x86 record: form byte, then varint start and size of the base's span,
// then of the target's; the adjusted form then the target's layout.
std::string X86Record(X86Span base, X86Span target, const ElfLayout* adjusted = nullptr) {
  std::string r(1, static_cast<char>(adjusted ? kX86FormAdjusted : kX86FormBranchRip));
  for (uint64_t v : {base.start, base.size, target.start, target.size}) PutVarint(&r, v);
  if (adjusted) PutLayoutRecord(&r, *adjusted);
  return r;
}

absl::StatusOr<Parsed> ParseHeader(std::string_view patch) {
  if (patch.size() < kHeaderSize) return absl::DataLossError("bsdiff patch: truncated header");
  uint64_t lens[3];
  for (int i = 0; i < 3; ++i) lens[i] = GetLE(patch.data() + 4 * i, 4);
  Parsed p;
  size_t pos = kHeaderSize;
  if (lens[0] & kX86Flag) {
    lens[0] &= ~uint64_t{kX86Flag};
    uint8_t form = pos < patch.size() ? static_cast<uint8_t>(patch[pos]) : 0;
    if (form != kX86FormBranchRip && form != kX86FormAdjusted) {
      return absl::DataLossError("bsdiff patch: unknown x86 code form (written by a newer d4c?)");
    }
    ++pos;
    uint64_t v[4];
    for (uint64_t& x : v) {
      if (!GetVarint(patch, &pos, &x)) return absl::DataLossError("bsdiff patch: truncated x86 record");
    }
    p.x86_base = X86Span{v[0], v[1]};
    p.x86_target = X86Span{v[2], v[3]};
    if (form == kX86FormAdjusted) {
      if (!ParseLayoutRecord(patch, &pos, &p.adjust_target))
        return absl::DataLossError("bsdiff patch: bad adjusted x86 record");
      p.adjusted = true;
    }
  }
  uint64_t total = pos;
  for (uint64_t len : lens) total += len;  // u32 values after a short record: cannot overflow
  if (total != patch.size()) {
    return absl::DataLossError(
        StrCat("bsdiff patch: header says ", total, " bytes, patch has ", patch.size()));
  }
  p.hash = GetLE(patch.data() + 12, 8);
  p.ctrl = patch.substr(pos, lens[0]);
  p.diff = patch.substr(pos + lens[0], lens[1]);
  p.extra = patch.substr(pos + lens[0] + lens[1], lens[2]);
  return p;
}

bool SpanWithin(X86Span s, uint64_t size) { return s.start <= size && s.size <= size - s.start; }

// An empty stream is stored as zero bytes rather than an empty zstd frame.
absl::StatusOr<std::string> CompressStream(const std::string& s, int level, int window_log) {
  if (s.empty()) return std::string();
  return ZstdCompressFrame(s, level, window_log);
}

absl::StatusOr<std::string> DecompressStream(std::string_view s, uint64_t max_size) {
  if (s.empty()) return std::string();
  return ZstdDecompressFrame(s, max_size);
}

// The diff section as decoded: the zero runs and literals, never joined (the
// patcher reads them in place: ZeroRunsReader), or, for the other forms, the
// whole stream in `literals`.
struct DiffStream {
  bool split = false;
  std::string runs, literals;
  uint64_t length = 0;  // of the stream they describe
};

// The diff section: nothing for an empty stream, else the zero runs and the
// literals (bsdiff_zero_runs.h) as a multi-frame section. Patches written
// before the split hold one zstd frame of the whole stream there, which
// still decodes.
absl::StatusOr<DiffStream> DecodeDiffSection(std::string_view section, uint64_t max_size, bool raw_ok) {
  DiffStream d;
  if (IsRawParts(section)) {
    if (!raw_ok) return absl::DataLossError("bsdiff patch: diff section in the raw pack form outside a pack");
    auto parts = SplitFrames(section, 2, "diff parts");
    if (!parts.ok()) return parts.status();
    auto length = ZeroRunsLength((*parts)[0], (*parts)[1], max_size);
    if (!length.ok()) return length.status();
    d.split = true;
    d.runs.assign((*parts)[0]);
    d.literals.assign((*parts)[1]);
    d.length = *length;
    return d;
  }
  if (IsAltSection(section) || !IsMultiFrame(section)) {
    auto whole = IsAltSection(section) ? DecompressAltSection(section, max_size) : DecompressStream(section, max_size);
    if (!whole.ok()) return whole.status();
    d.literals = std::move(*whole);
    d.length = d.literals.size();
    return d;
  }
  auto frames = SplitFrames(section, 2, "diff section");
  if (!frames.ok()) return frames.status();
  auto runs = DecompressStream((*frames)[0], MaxRunsSize(max_size));
  if (!runs.ok()) return runs.status();
  auto literals = DecompressStream((*frames)[1], max_size);
  if (!literals.ok()) return literals.status();
  auto length = ZeroRunsLength(*runs, *literals, max_size);
  if (!length.ok()) return length.status();
  d.split = true;
  d.runs = std::move(*runs);
  d.literals = std::move(*literals);
  d.length = *length;
  return d;
}

// out[k] = base[k] + diff[k] for k < n.
void AddBytes(char* out, const char* base, const char* diff, uint64_t n) {
  for (uint64_t k = 0; k < n; ++k) out[k] = static_cast<char>(base[k] + diff[k]);
}

// Rebuilds the target, checking every triple against all buffer bounds.
// The target's parts are rebuilt on several threads by copies resumed at
// the states a checking pass recorded (PlanApply). Not thread-safe; the
// copies write disjoint bytes of `out`.
class Patcher {
 public:
  // Where the patcher is in each stream.
  struct State {
    uint64_t newpos = 0, oldpos = 0, dpos = 0, epos = 0;
    ZeroRunsReader runs;
  };
  Patcher(std::string_view base, const DiffStream& diff, std::string_view extra, std::string* out)
      : base_(base), diff_(&diff), extra_(extra), out_(out), runs_(diff.runs, diff.literals) {}
  // Applies t, or with `write` false only checks it and moves past it.
  absl::Status Apply(const BsdiffTriple& t, bool write = true);
  bool Complete() const {
    return newpos_ == out_->size() && dpos_ == diff_->length && epos_ == extra_.size();
  }
  uint64_t newpos() const { return newpos_; }
  State state() const { return {newpos_, oldpos_, dpos_, epos_, runs_}; }
  void Resume(const State& st) {
    newpos_ = st.newpos, oldpos_ = st.oldpos, dpos_ = st.dpos, epos_ = st.epos;
    runs_ = st.runs;
  }

 private:
  // The next n bytes of the diff stream added to base_ at oldpos_, into out_
  // at newpos_ (bounds checked by the caller); or only skipped.
  absl::Status AddDiff(uint64_t n, bool write);

  std::string_view base_;
  const DiffStream* diff_;
  std::string_view extra_;
  std::string* out_;
  ZeroRunsReader runs_;
  uint64_t newpos_ = 0, oldpos_ = 0, dpos_ = 0, epos_ = 0;
};

absl::Status Patcher::AddDiff(uint64_t n, bool write) {
  char* out = out_->data() + newpos_;
  const char* base = base_.data() + oldpos_;
  if (!diff_->split) {
    if (write) AddBytes(out, base, diff_->literals.data() + dpos_, n);
    return absl::OkStatus();
  }
  for (uint64_t done = 0; done < n;) {
    ZeroRunsReader::Piece p = runs_.Next(n - done);
    if (p.length == 0) return absl::DataLossError("bsdiff patch: zero runs end early");  // checked: cannot happen
    if (!write) {
    } else if (p.data) {
      AddBytes(out + done, base + done, p.data, p.length);
    } else {
      std::memcpy(out + done, base + done, p.length);
    }
    done += p.length;
  }
  return absl::OkStatus();
}

absl::Status Patcher::Apply(const BsdiffTriple& t, bool write) {
  if (t.add > out_->size() - newpos_ || t.add > base_.size() - oldpos_ ||
      t.add > diff_->length - dpos_) {
    return absl::DataLossError("bsdiff patch: add length out of bounds");
  }
  if (auto s = AddDiff(t.add, write); !s.ok()) return s;
  newpos_ += t.add, oldpos_ += t.add, dpos_ += t.add;
  if (t.copy > out_->size() - newpos_ || t.copy > extra_.size() - epos_) {
    return absl::DataLossError("bsdiff patch: copy length out of bounds");
  }
  if (write) std::memcpy(out_->data() + newpos_, extra_.data() + epos_, t.copy);
  newpos_ += t.copy, epos_ += t.copy;
  // Unsigned magnitude: negating INT64_MIN as a signed value would overflow.
  uint64_t mag = t.seek < 0 ? 0 - static_cast<uint64_t>(t.seek) : static_cast<uint64_t>(t.seek);
  if (t.seek < 0 ? mag > oldpos_ : mag > base_.size() - oldpos_) {
    return absl::DataLossError("bsdiff patch: seek out of bounds");
  }
  oldpos_ = t.seek < 0 ? oldpos_ - mag : oldpos_ + mag;
  return absl::OkStatus();
}

// A control stream's triples read into memory, up to the first error
// (`after`: the error that ended the read there, else OK), unless there are
// more than a cap (`over`; the list is then incomplete).
struct Triples {
  std::vector<BsdiffTriple> list;
  absl::Status after;
  bool over = false;
};

Triples ReadTriples(std::string_view section, uint64_t cap, bool raw_ok) {
  Triples out;
  // Room for the cap (up to 64 MiB of address space; touched only as it
  // fills), not grown by doubling: each step is a fresh block faulted in.
  out.list.reserve(std::min<uint64_t>(cap, (uint64_t{64} << 20) / sizeof(BsdiffTriple)));
  CtrlReader ctrl;
  if (out.after = ctrl.Init(section, raw_ok); !out.after.ok()) return out;
  for (;;) {
    auto t = ctrl.Next();
    if (!t.ok()) {
      out.after = t.status();
      return out;
    }
    if (!t->has_value()) return out;
    if (out.list.size() >= cap) {
      out.over = true;
      return out;
    }
    out.list.push_back(**t);
  }
}

// At most this many triples are read into memory to be applied in parts:
// one per 64 target bytes, 24 bytes each (real patches have far fewer:
// biome's 28 MB binary ~140 k); a patch with more is streamed, one part.
uint64_t ListCap(uint64_t target_size) { return target_size / 64 + 4096; }

// Targets from this size are rebuilt in parts of about this many bytes on
// `helpers` (at most kMaxApplyParts): a checking pass over the triples
// (bounds, zero runs skipped, no bytes moved) records the patcher's state
// where each part starts; the parts then write disjoint ranges.
constexpr uint64_t kApplyPartBytes = 2 << 20;
constexpr uint64_t kMaxApplyParts = 16;

// The listed triples checked (bounds and zero runs, as Apply checks them,
// no bytes moved) and the patcher's state where each part of the target
// starts; no parts for targets under two part sizes (one serial pass then).
struct ApplyPlan {
  struct Part {
    size_t first;  // triple
    Patcher::State start;
  };
  std::vector<Part> parts;
  std::optional<Patcher::State> end;  // after the last triple
};

// True if `helpers` may run tasks side by side: without, a part plan would
// only add its checking pass (di3fs reads without helpers).
bool MayRunParts(Helpers& helpers) { return &helpers != &NoHelpers(); }

absl::StatusOr<ApplyPlan> PlanApply(const Triples& triples, const Patcher& start, uint64_t target_size,
                                    Helpers& helpers) {
  ApplyPlan plan;
  uint64_t n = std::min<uint64_t>(kMaxApplyParts, target_size / kApplyPartBytes);
  if (n < 2 || !MayRunParts(helpers)) return plan;
  const std::vector<BsdiffTriple>& list = triples.list;
  Patcher check = start;
  for (size_t k = 0; k < list.size(); ++k) {
    if (plan.parts.empty() || check.newpos() >= target_size / n * plan.parts.size())
      plan.parts.push_back({k, check.state()});
    if (auto s = check.Apply(list[k], false); !s.ok()) return s;
  }
  plan.end = check.state();
  return plan;
}

// Rebuilds the target from the listed triples as `plan` (made with a
// patcher of the same streams, at the same start) says, the parts on
// `helpers`; `patcher` ends after the last triple.
absl::Status ApplyList(const Triples& triples, const ApplyPlan& plan, Patcher& patcher, Helpers& helpers) {
  const std::vector<BsdiffTriple>& list = triples.list;
  if (plan.parts.empty()) {
    for (const BsdiffTriple& t : list)
      if (auto s = patcher.Apply(t); !s.ok()) return s;
  } else {
    std::vector<absl::Status> done(plan.parts.size());
    std::vector<std::function<void()>> tasks;
    for (size_t p = 0; p < plan.parts.size(); ++p) {
      size_t end = p + 1 < plan.parts.size() ? plan.parts[p + 1].first : list.size();
      tasks.push_back([&, p, end] {
        Patcher w = patcher;
        w.Resume(plan.parts[p].start);
        for (size_t k = plan.parts[p].first; k < end && done[p].ok(); ++k) done[p] = w.Apply(list[k]);
      });
    }
    helpers.Run(tasks);
    for (const absl::Status& s : done)
      if (!s.ok()) return s;  // checked by PlanApply: cannot happen
    patcher.Resume(*plan.end);
  }
  if (!triples.after.ok()) return triples.after;
  if (!patcher.Complete()) return absl::DataLossError("bsdiff patch: streams do not cover target");
  return absl::OkStatus();
}

absl::Status RunTriples(CtrlReader& ctrl, Patcher& patcher, uint64_t target_size) {
  // Our encoder emits at most one triple per target byte plus one; more means
  // a hostile stream trying to burn time on empty triples.
  for (uint64_t count = 0;; ++count) {
    auto t = ctrl.Next();
    if (!t.ok()) return t.status();
    if (!t->has_value()) break;
    if (count > target_size) return absl::DataLossError("bsdiff patch: too many ctrl triples");
    if (auto s = patcher.Apply(**t); !s.ok()) return s;
  }
  if (!patcher.Complete()) return absl::DataLossError("bsdiff patch: streams do not cover target");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BsdiffCodec::Encode(std::string_view base,
                                                std::string_view target) const {
  return EncodeParallel(base, target, NoHelpers());
}

absl::StatusOr<std::string> BsdiffCodec::EncodeParallel(std::string_view base, std::string_view target,
                                                        Helpers& helpers) const {
  return EncodeWithin(base, target, helpers, std::numeric_limits<uint64_t>::max());
}

namespace {

// Level 19 never made the streams smaller than this share of their level-1
// size on the corpus (debian v1->v2, 635 files: 0.61 to 1.14), so a patch
// whose level-1 streams are more than twice `limit` cannot come in under it.
// On debian that spares the level-19 pass for 516 of 634 files.
// The bzip2 and LZMA2 forms (alt_section.h) did not go below it either
// (esbuild 0.20.0 -> 0.20.1, where bzip2 wins: 0.75 of the zstd-1 size).
constexpr uint64_t kFinalToQuickFloorInverse = 2;
// Text targets (LooksText) stay closer to their level-1 size: over 1,181
// runs on the corpus (prettier's 23 pairs, debian, debian-python,
// debian-tomcat, typescript's three) the final patch was never below 0.787
// of it, so there a patch whose level-1 streams exceed 4/3 of `limit` (a
// floor of 3/4) cannot come in under it. On prettier that spares the
// compression of about a fifth of bsdiff's runs, where lzma's patch won.
constexpr uint64_t kTextFloorNum = 3;
constexpr uint64_t kTextFloorDen = 4;
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

}  // namespace

namespace {

// The patch from its three sections (header, x86 record, sections).
absl::StatusOr<std::string> AssemblePatch(std::string_view ctrl, std::string_view diff, std::string_view extra,
                                          uint64_t hash, std::string_view x86_record) {
  for (std::string_view s : {ctrl, diff, extra}) {
    if (s.size() > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError("bsdiff: stream over 4 GiB");
    }
  }
  // Bit 31 of the ctrl length marks the x86 form.
  if (ctrl.size() >= kX86Flag) return absl::InvalidArgumentError("bsdiff: control stream over 2 GiB");
  std::string out;
  out.reserve(kHeaderSize + x86_record.size() + ctrl.size() + diff.size() + extra.size());
  PutLE(&out, ctrl.size() | (x86_record.empty() ? 0 : kX86Flag), 4);
  for (std::string_view s : {diff, extra}) PutLE(&out, s.size(), 4);
  PutLE(&out, hash, 8);
  out += x86_record;
  out += ctrl;
  out += diff;
  out += extra;
  return out;
}

}  // namespace

// The streams of a patch before compression, in section order.
struct RawStreams {
  CtrlColumns ctrl;
  ZeroRuns diff;
  const std::string* extra;
  std::vector<const std::string*> All() const {
    return {&ctrl.adds, &ctrl.copies, &ctrl.seeks, &diff.runs, &diff.literals, extra};
  }
};

// One form (plain or x86) of a patch from its computed streams: the
// compression tasks, which may run beside another form's, then Assemble.
// `extra_form` (if set): the extra section is compressed in that form alone
// (0 zstd, else kLzma2Form or kBzip2Form). The adjusted form takes the x86
// form's when that form was compressed first: on the four corpus pairs where
// it runs the same bytes, ~1.4 CPU s less of biome's ~29 (one alternating
// perf count); the diff section's choice does differ between the two forms
// (debian-python +1.9 KB if reused), so the diff is still tried in every
// form. (Where level-1 sizes decide, EncodeBigPair, the x86 form may not be
// compressed at all and the adjusted one then tries every form.)
// Not thread-safe: its tasks write disjoint members, Assemble reads them
// after they have all finished.
class FormEncoder {
 public:
  // `text`: the target looks like text (a tighter floor for ClearlyOver).
  FormEncoder(BsdiffStreams streams, int level, uint64_t hash, std::string x86_record, bool text = false,
              std::optional<char> extra_form = std::nullopt)
      : text_(text),
        streams_(std::move(streams)),
        raw_{SplitCtrl(streams_.ctrl), SplitZeroRuns(streams_.diff), &streams_.extra},
        level_(level),
        hash_(hash),
        x86_record_(std::move(x86_record)),
        extra_form_(extra_form) {}
  FormEncoder(const FormEncoder&) = delete;
  FormEncoder& operator=(const FormEncoder&) = delete;

  // Whether even half the level-1 size of the streams (3/4 for text)
  // exceeds `limit` (the patch cannot come in under it); false when no limit
  // is set.
  bool ClearlyOver(uint64_t limit) const {
    if (limit == kNoLimit) return false;
    if (text_) return Quick() * kTextFloorNum > kTextFloorDen * limit;
    return Quick() > kFinalToQuickFloorInverse * limit;
  }
  // The level-1 size of the streams (0 if a compression failed), computed
  // once. Not thread-safe: call it from one thread before sharing the object.
  uint64_t Quick() const {
    if (!quick_) quick_ = QuickSize();
    return *quick_;
  }
  // Appends the compression tasks: the other forms of the diff and extra
  // sections (alt_section.h), slowest first: bzip2 of the whole diff, then
  // LZMA2 and bzip2 of the extra; then the six zstd frames, biggest first,
  // so that the helpers finish together. LZMA2 of the diff would be smaller
  // still on Go binaries (esbuild: 212,879 instead of bzip2's 226,968 bytes)
  // but costs 4-5 CPU s per 10 MB of diff where bzip2 takes 0.3 s and the
  // whole encode 1.3 s.
  std::vector<std::function<void()>> Tasks();
  absl::StatusOr<std::string> Assemble();
  const BsdiffStreams& streams() const { return streams_; }

 private:
  // A failing level-1 compression counts as no evidence (0 is never over).
  uint64_t QuickSize() const {
    uint64_t quick = 0;
    for (const std::string* s : raw_.All()) {
      auto z = CompressStream(*s, 1, 0);
      if (!z.ok()) return 0;
      quick += z->size();
    }
    return quick;
  }

  struct Alt {
    const std::string* src;
    absl::StatusOr<std::string> (*compress)(std::string_view);
    char form;
    absl::StatusOr<std::string> out = std::string();
  };

  bool text_;
  BsdiffStreams streams_;
  RawStreams raw_;
  int level_;
  uint64_t hash_;
  std::string x86_record_;
  std::optional<char> extra_form_;
  mutable std::optional<uint64_t> quick_;  // QuickSize, once asked for
  std::vector<absl::StatusOr<std::string>> z_;
  std::vector<bool> z_run_;  // z_[i] was compressed
  std::vector<Alt> alts_;
};

std::vector<std::function<void()>> FormEncoder::Tasks() {
  std::vector<const std::string*> in = raw_.All();
  z_.assign(in.size(), std::string());
  std::vector<size_t> order(in.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return in[a]->size() > in[b]->size(); });
  alts_.clear();
  auto wanted = [&](const std::string* src, char form) {
    return !extra_form_ || src == &streams_.diff || *extra_form_ == form;
  };
  for (Alt a : {Alt{&streams_.diff, Bzip2CompressSection, kBzip2Form}, Alt{&streams_.extra, Lzma2CompressSection, kLzma2Form},
                Alt{&streams_.extra, Bzip2CompressSection, kBzip2Form}})
    if (wanted(a.src, a.form)) alts_.push_back(a);
  z_run_.assign(in.size(), true);
  z_run_[5] = wanted(&streams_.extra, 0) || streams_.extra.empty();  // the extra stream's zstd frame
  std::vector<std::function<void()>> tasks;
  for (Alt& a : alts_) {
    if (!a.src->empty()) tasks.push_back([&a] { a.out = a.compress(*a.src); });
  }
  for (size_t i : order) {
    if (!z_run_[i]) continue;
    // The ctrl columns are read back through small windows (bsdiff_ctrl.h).
    int window_log = i < 3 ? kCtrlWindowLog : 0;
    const std::string* src = in[i];
    tasks.push_back([this, i, src, window_log] { z_[i] = CompressStream(*src, level_, window_log); });
  }
  return tasks;
}

absl::StatusOr<std::string> FormEncoder::Assemble() {
  for (const auto& s : z_)
    if (!s.ok()) return s.status();
  for (const Alt& a : alts_)
    if (!a.out.ok()) return a.out.status();
  std::string ctrl = JoinFrames({*z_[0], *z_[1], *z_[2]});
  // Few triples: three frames' headers can outweigh what the columns save.
  if (streams_.ctrl.size() <= kFixedCtrlMaxTriples) {
    auto fixed = CompressStream(FixedCtrl(streams_.ctrl), level_, kCtrlWindowLog);
    if (!fixed.ok()) return fixed.status();
    if (fixed->size() < ctrl.size()) ctrl = std::move(*fixed);
  }
  // Each section in its smallest form; ties keep zstd, which older readers
  // read. A section not compressed with zstd (`extra_form_`) takes its alt form.
  std::optional<std::string> diff, extra;
  if (z_run_[3]) diff = JoinFrames({*z_[3], *z_[4]});
  if (z_run_[5]) extra = std::move(*z_[5]);
  for (Alt& a : alts_) {
    std::optional<std::string>& section = a.src == &streams_.diff ? diff : extra;
    if (!a.out->empty() && (!section || a.out->size() < section->size())) section = std::move(*a.out);
  }
  if (!diff || !extra) return absl::InternalError("bsdiff: a section was compressed in no form");
  return AssemblePatch(ctrl, *diff, *extra, hash_, x86_record_);
}

namespace {

// Copies of base and target to transform in place; ResourceExhausted if
// they do not fit in memory.
absl::Status CopyPair(std::string_view base, std::string_view target, std::string* b, std::string* t) {
  try {
    b->assign(base);
    t->assign(target);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("bsdiff: out of memory");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Finish(FormEncoder& form, Helpers& helpers, uint64_t limit) {
  if (form.ClearlyOver(limit)) return absl::OutOfRangeError("bsdiff: patch would exceed the limit");
  helpers.Run(form.Tasks());
  return form.Assemble();
}

// Two forms' compression tasks as one set, interleaved so that the slowest
// of each start first.
std::vector<std::function<void()>> Interleave(std::vector<std::function<void()>> a,
                                              std::vector<std::function<void()>> b) {
  std::vector<std::function<void()>> all;
  for (size_t k = 0; k < std::max(a.size(), b.size()); ++k) {
    if (k < a.size()) all.push_back(std::move(a[k]));
    if (k < b.size()) all.push_back(std::move(b[k]));
  }
  return all;
}

// Both forms compressed as one set of tasks; each result is that of Finish.
void FinishBoth(FormEncoder& a, FormEncoder& b, Helpers& helpers, uint64_t limit, absl::StatusOr<std::string>* out_a,
                absl::StatusOr<std::string>* out_b) {
  bool run_a = !a.ClearlyOver(limit), run_b = !b.ClearlyOver(limit);
  helpers.Run(Interleave(run_a ? a.Tasks() : std::vector<std::function<void()>>(),
                         run_b ? b.Tasks() : std::vector<std::function<void()>>()));
  auto over = [] { return absl::OutOfRangeError("bsdiff: patch would exceed the limit"); };
  *out_a = run_a ? a.Assemble() : over();
  *out_b = run_b ? b.Assemble() : over();
}

// Level-1 sizes decide between forms of a big pair when they differ by more
// than this (percent), so that only the winner is compressed at level 19
// and in the bzip2 and LZMA2 forms, most of the encode's time after the
// scans. On the corpus (158 x86-64 ELF pairs of debian, debian-python and
// biome, forms plain / x86 / adjusted) the final sizes never ranked two
// forms the other way round at 5% or more apart at level 1 (at 3%: once,
// by 1%); biome's binary: plain 1.107x the x86 form at level 1 (1.126x
// final), the adjusted form 0.909x (0.912x). Closer forms are all
// compressed and the smaller kept, as for small pairs.
constexpr uint64_t kQuickMarginPercent = 5;
bool ClearlySmaller(uint64_t a, uint64_t b) {
  return a > 0 && b > 0 && a * (100 + kQuickMarginPercent) < b * 100;
}

// What the adjusted form is made from: base and target in the x86 form
// (`a` is changed in place at the end), the base's rewritten operands and
// both layouts.
struct AdjustInputs {
  std::string& a;
  std::string_view t;
  const std::vector<X86Operand>& ops;
  X86Span base_span, target_span;
  const ElfLayout& la;
  const ElfLayout& lt;
};

// The x86 base (`in.a`) moved along `map1`, as a copy; `beside` (may be
// empty) runs beside the move.
absl::StatusOr<std::string> MovedBase(const AdjustInputs& in, const MoveMap& map1, Helpers& helpers,
                                      std::function<void()> beside = {}) {
  try {
    std::string moved = in.a;
    if (beside) {
      helpers.Run({[&] { AdjustBase(moved, in.ops, in.base_span, in.la, in.lt, map1, NoHelpers()); }, beside});
    } else {
      AdjustBase(moved, in.ops, in.base_span, in.la, in.lt, map1, helpers);
    }
    return moved;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("bsdiff: out of memory");
  }
}

// The base moved along `map1` (the x86 form's scan) and its suffix index,
// built on `helpers`; `moved` must outlive the batch.
absl::StatusOr<std::unique_ptr<BsdiffBatch>> AdjustedIndex(const AdjustInputs& in, const MoveMap& map1,
                                                           std::string* moved, Helpers& helpers) {
  auto m = MovedBase(in, map1, helpers);
  if (!m.ok()) return m.status();
  *moved = std::move(*m);
  try {
    auto batch = std::make_unique<BsdiffBatch>(std::vector<BsdiffInput>{{*moved, in.t, nullptr, nullptr}});
    batch->Build(helpers);
    return batch;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("bsdiff: out of memory");
  }
}

// The adjusted form ready to compress from a second scan's streams (their
// diff is made here): the scan's blocks, diffed against the x86 base moved
// along them (what a decoder rebuilds from the stored control stream).
absl::StatusOr<std::unique_ptr<FormEncoder>> AdjustedFromScan(const AdjustInputs& in, BsdiffStreams second,
                                                              int level, uint64_t hash, Helpers& helpers,
                                                              std::optional<char> extra_form) {
  auto map2 = MoveMap::FromCtrl(second.ctrl, in.a.size(), in.t.size());
  if (!map2) return absl::InternalError("bsdiff: a scan's blocks leave the files");
  try {
    AdjustBase(in.a, in.ops, in.base_span, in.la, in.lt, *map2, helpers);
    second.diff = BsdiffDiffStream(second.ctrl, in.a, in.t);
    return std::make_unique<FormEncoder>(std::move(second), level, hash,
                                         X86Record(in.base_span, in.target_span, &in.lt),
                                         /*text=*/false, extra_form);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("bsdiff: out of memory");
  }
}

// The adjusted form from the moved base's index: the target scanned
// against it (AdjustedFromScan).
absl::StatusOr<std::unique_ptr<FormEncoder>> AdjustedFromIndex(const AdjustInputs& in, BsdiffBatch& index,
                                                               int level, uint64_t hash, Helpers& helpers,
                                                               std::optional<char> extra_form) {
  auto second = index.Scan(0, helpers);
  if (!second.ok()) return second.status();
  return AdjustedFromScan(in, std::move(*second), level, hash, helpers, extra_form);
}

// The adjusted form of a target over all_forms_max_target, without a second
// suffix sort: the target scanned again in the x86 base's index
// (`x86_index`, kept by its scan, whose searches the rescan replays) against
// `moved` (MovedBase along that scan's blocks, freed here), the alignments
// scored on the moved bytes (BsdiffBatch::Rescan); then AdjustedFromScan.
absl::StatusOr<std::unique_ptr<FormEncoder>> AdjustedFromRescan(const AdjustInputs& in, BsdiffBatch& x86_index,
                                                                std::string moved, int level, uint64_t hash,
                                                                Helpers& helpers, std::optional<char> extra_form) {
  auto second = x86_index.Rescan(0, moved, helpers);
  std::string().swap(moved);
  if (!second.ok()) return second.status();
  return AdjustedFromScan(in, std::move(*second), level, hash, helpers, extra_form);
}

// The adjusted form from scratch (see EncodeAdjusted): the x86 forms made
// and scanned (with `second_index`, `first_map` is taken instead, if
// given), the base moved along that scan's blocks and the target scanned
// again: with `second_index` in the moved base's own index, else in the x86
// base's (AdjustedFromRescan).
absl::StatusOr<std::unique_ptr<FormEncoder>> AdjustedForm(std::string_view base, std::string_view target,
                                                          X86Span base_span, X86Span target_span, int level,
                                                          Helpers& helpers, const MoveMap* first_map,
                                                          std::optional<char> extra_form, bool second_index) {
  auto lt = ParseElfLayout(target);
  if (!lt) return absl::OutOfRangeError("bsdiff: the target has no program headers");
  std::string a, t;
  if (auto s = CopyPair(base, target, &a, &t); !s.ok()) return s;
  std::vector<X86Operand> ops = X86ToAbsoluteOperands(a, base_span, helpers);
  auto la = ParseElfLayout(a);
  if (!la) return absl::OutOfRangeError("bsdiff: the base has no program headers");
  X86ToAbsolute(t, target_span, helpers);
  AdjustInputs in{a, t, ops, base_span, target_span, *la, *lt};
  std::optional<MoveMap> map1;
  if (first_map && second_index) map1 = *first_map;
  BsdiffBatch x86_index({{a, t, nullptr, nullptr}});
  if (!map1) {
    x86_index.Build(helpers);
    auto first = x86_index.Scan(0, helpers, {}, /*keep_index=*/!second_index);
    if (!first.ok()) return first.status();
    map1 = MoveMap::FromCtrl(first->ctrl, a.size(), t.size());
  }
  if (!map1) return absl::InternalError("bsdiff: a scan's blocks leave the files");
  if (!second_index) {
    auto moved = MovedBase(in, *map1, helpers);
    if (!moved.ok()) return moved.status();
    return AdjustedFromRescan(in, x86_index, std::move(*moved), level, Hash64(target), helpers, extra_form);
  }
  std::string moved;
  auto index = AdjustedIndex(in, *map1, &moved, helpers);
  if (!index.ok()) return index.status();
  return AdjustedFromIndex(in, **index, level, Hash64(target), helpers, extra_form);
}

// Of two forms, the smaller patch (ties keep `a`); OutOfRange results count
// as absent, other errors are returned (`a`'s first).
absl::StatusOr<std::string> Smaller(absl::StatusOr<std::string> a, absl::StatusOr<std::string> b) {
  if (!a.ok() && !absl::IsOutOfRange(a.status())) return a;
  if (!b.ok()) return absl::IsOutOfRange(b.status()) ? a : b.status();
  if (a.ok() && a->size() <= b->size()) return a;
  return b;
}

// The plain form within `limit`, then the x86 form within the plain patch's
// size (or `limit` if the plain form gave up), the smaller kept: compressed
// as one set of tasks, the x86 form's result dropped where it was clearly
// over the plain patch's size, as the serial order would have skipped it.
absl::StatusOr<std::string> FinishPlainThenX86(FormEncoder& plain, FormEncoder& x86, Helpers& helpers,
                                               uint64_t limit) {
  absl::StatusOr<std::string> p = absl::OutOfRangeError("bsdiff: patch would exceed the limit"), x = p;
  if (plain.ClearlyOver(limit)) {
    // The plain form gave up: the x86 form runs within `limit` alone.
    x = Finish(x86, helpers, limit);
  } else {
    helpers.Run(Interleave(plain.Tasks(), x86.Tasks()));
    p = plain.Assemble();
    if (!p.ok()) return p;
    if (!x86.ClearlyOver(p->size())) x = x86.Assemble();
  }
  return Smaller(std::move(p), std::move(x));
}

// Copies of a pair (`b`, `t`) as an input that puts them in the x86 form
// beside the suffix sort, collecting the base's rewritten operands in `ops`.
BsdiffInput X86Input(std::string& b, std::string& t, X86Span base_span, X86Span target_span,
                     std::vector<X86Operand>* ops) {
  return {b, t, [&b, base_span, ops] { *ops = X86ToAbsoluteOperands(b, base_span); },
          [&t, target_span] { X86ToAbsolute(t, target_span); }};
}

// Of an x86 form and its adjusted form, by level-1 sizes: the clearly
// smaller compressed alone (the x86 form if the adjusted one then fails other
// than for memory), else both compressed and the smaller kept (ties: the x86
// form).
absl::StatusOr<std::string> FinishX86OrAdjusted(FormEncoder& x86, FormEncoder& adj, Helpers& helpers,
                                                uint64_t limit) {
  helpers.Run({[&] { adj.Quick(); }});
  if (ClearlySmaller(x86.Quick(), adj.Quick())) return Finish(x86, helpers, limit);
  if (ClearlySmaller(adj.Quick(), x86.Quick())) {
    auto r = Finish(adj, helpers, limit);
    if (r.ok() || absl::IsResourceExhausted(r.status())) return r;
    return Finish(x86, helpers, limit);
  }
  absl::StatusOr<std::string> xr = absl::UnknownError("not run"), ar = xr;
  FinishBoth(x86, adj, helpers, limit, &xr, &ar);
  return Smaller(std::move(xr), std::move(ar));
}

// Where the x86 form won by enough to matter, the adjusted form may do
// better still (references moved to where their targets went).
bool AdjustedMayWin(const absl::StatusOr<std::string>& best) {
  return best.ok() && best->size() >= BsdiffCodec::kAdjustMinPatch && (static_cast<uint8_t>((*best)[3]) & 0x80);
}

// The form of a patch's extra section (0: zstd), which the adjusted form
// reuses.
absl::StatusOr<char> ExtraFormOf(std::string_view patch) {
  auto p = ParseHeader(patch);
  if (!p.ok()) return p.status();
  return IsAltSection(p->extra) ? p->extra[0] : char{0};
}

// `best`, or the adjusted form's patch if smaller; running out of memory
// for the adjusted form is an error, any other failure keeps `best`.
absl::StatusOr<std::string> BestOrAdjusted(absl::StatusOr<std::string> best, absl::StatusOr<std::string> adjusted) {
  if (!adjusted.ok()) return absl::IsResourceExhausted(adjusted.status()) ? adjusted.status() : best;
  return adjusted->size() < best->size() ? std::move(*adjusted) : std::move(*best);
}

}  // namespace

absl::StatusOr<std::string> BsdiffCodec::EncodeWithin(std::string_view base, std::string_view target,
                                                      Helpers& helpers, uint64_t limit) const {
  auto base_span = X86_64CodeSpan(base), target_span = X86_64CodeSpan(target);
  if (!base_span || !target_span) return EncodePlain(base, target, helpers, limit);
  if (target.size() > all_forms_max_target_)
    return EncodeX86Forms(base, target, *base_span, *target_span, helpers, limit);
  if (target.size() >= kQuickChoiceMinTarget && base.size() <= side_by_side_max_base_)
    return EncodeBigPair(base, target, *base_span, *target_span, helpers, limit);
  std::optional<MoveMap> x86_map;  // the x86 form's scan, when side by side
  auto best = base.size() <= side_by_side_max_base_
                  ? EncodeBothForms(base, target, *base_span, *target_span, helpers, limit, &x86_map)
                  : EncodeFormsInTurn(base, target, *base_span, *target_span, helpers, limit);
  if (!AdjustedMayWin(best)) return best;
  auto adjusted = EncodeAdjusted(base, target, *base_span, *target_span, helpers, best->size(),
                                 x86_map ? &*x86_map : nullptr, *best);
  return BestOrAdjusted(std::move(best), std::move(adjusted));
}

// Scan the x86 forms, move the base's references along that scan's blocks,
// scan again, then move the original base's references along the second
// scan's own blocks (what a decoder rebuilds from the stored control stream)
// and store the second scan's blocks with the diff against that base.
absl::StatusOr<std::string> BsdiffCodec::EncodeAdjusted(std::string_view base, std::string_view target,
                                                        X86Span base_span, X86Span target_span, Helpers& helpers,
                                                        uint64_t limit, const MoveMap* first_map,
                                                        std::string_view forms_of) const {
  std::optional<char> extra_form;
  if (!forms_of.empty()) {
    auto f = ExtraFormOf(forms_of);
    if (!f.ok()) return f.status();
    extra_form = *f;
  }
  auto form = AdjustedForm(base, target, base_span, target_span, level_, helpers, first_map, extra_form,
                           /*second_index=*/target.size() <= all_forms_max_target_);
  if (!form.ok()) return form.status();
  return Finish(**form, helpers, limit);
}

// A big x86-64 ELF pair (kQuickChoiceMinTarget), side by side: both bases
// sorted at once, the x86 form scanned first, then the plain form scanned
// while the base moved along the x86 scan is sorted beside it (one thread's
// work, the adjusted form's), when the x86 form may be adjusted (within
// `limit`, kAdjustMinPatch or more at level 1). Level-1 sizes then choose
// what is compressed (ClearlySmaller): a plain form clearly smaller alone;
// an x86 form clearly smaller against the adjusted one, the clearly smaller
// of those two alone (each section in every form); forms closer than that
// are all compressed, in the order and within the limits of the small pairs'
// path (EncodeBothForms, then EncodeAdjusted), so the result is the same.
absl::StatusOr<std::string> BsdiffCodec::EncodeBigPair(std::string_view base, std::string_view target,
                                                       X86Span base_span, X86Span target_span, Helpers& helpers,
                                                       uint64_t limit) const {
  std::string b, t;
  if (auto s = CopyPair(base, target, &b, &t); !s.ok()) return s;
  std::vector<X86Operand> ops;
  BsdiffBatch forms({{base, target, nullptr, nullptr},
                     X86Input(b, t, base_span, target_span, &ops)});
  forms.Build(helpers);
  const uint64_t hash = Hash64(target);
  auto x86_streams = forms.Scan(1, helpers);
  std::optional<MoveMap> map1;
  std::unique_ptr<FormEncoder> x86;
  if (x86_streams.ok()) {
    map1 = MoveMap::FromCtrl(x86_streams->ctrl, base.size(), target.size());
    x86 = std::make_unique<FormEncoder>(std::move(*x86_streams), level_, hash, X86Record(base_span, target_span));
  }
  std::optional<ElfLayout> la, lt;
  std::optional<AdjustInputs> adjust;
  std::string moved;
  absl::StatusOr<std::unique_ptr<BsdiffBatch>> adjusted_index = absl::UnknownError("not built");
  auto prepare_adjusted = [&] {
    if (!x86 || !map1 || x86->ClearlyOver(limit) || x86->Quick() < kAdjustMinPatch) return;
    la = ParseElfLayout(b);
    lt = ParseElfLayout(target);
    if (!la || !lt) return;
    adjust.emplace(AdjustInputs{b, t, ops, base_span, target_span, *la, *lt});
    adjusted_index = AdjustedIndex(*adjust, *map1, &moved, NoHelpers());
  };
  auto plain_streams = forms.Scan(0, helpers, {prepare_adjusted});
  if (!plain_streams.ok()) return plain_streams.status();
  FormEncoder plain(std::move(*plain_streams), level_, hash, "");
  if (!x86) {  // as when the x86 form ran after the plain one
    auto p = Finish(plain, helpers, limit);
    if (!p.ok() && !absl::IsOutOfRange(p.status())) return p;
    return x86_streams.status();
  }
  // Out of memory for the adjusted index counts only where it is needed.
  auto no_index = [&]() -> std::optional<absl::Status> {
    if (absl::IsResourceExhausted(adjusted_index.status())) return adjusted_index.status();
    return std::nullopt;
  };
  helpers.Run({[&] { plain.Quick(); }, [&] { x86->Quick(); }});
  if (ClearlySmaller(plain.Quick(), x86->Quick())) return Finish(plain, helpers, limit);
  if (ClearlySmaller(x86->Quick(), plain.Quick())) {
    // As in turn: an x86 form over the limit (the plain one, bigger, is
    // too) or too small to gain from adjusting is the result.
    if (auto e = no_index()) return *e;
    if (!adjusted_index.ok()) return Finish(*x86, helpers, limit);
    auto adj = AdjustedFromIndex(*adjust, **adjusted_index, level_, hash, helpers, std::nullopt);
    if (!adj.ok()) return absl::IsResourceExhausted(adj.status()) ? adj.status() : Finish(*x86, helpers, limit);
    return FinishX86OrAdjusted(*x86, **adj, helpers, limit);
  }
  // Close at level 1: every form, as EncodeBothForms then EncodeAdjusted.
  auto best = FinishPlainThenX86(plain, *x86, helpers, limit);
  if (!AdjustedMayWin(best)) return best;
  auto extra_form = ExtraFormOf(*best);
  if (!extra_form.ok()) return extra_form.status();
  if (auto e = no_index()) return *e;
  absl::StatusOr<std::unique_ptr<FormEncoder>> adj = absl::UnknownError("not made");
  if (adjusted_index.ok()) {
    adj = AdjustedFromIndex(*adjust, **adjusted_index, level_, hash, helpers, *extra_form);
  } else {
    adj = AdjustedForm(base, target, base_span, target_span, level_, helpers, map1 ? &*map1 : nullptr, *extra_form,
                       /*second_index=*/true);
  }
  if (!adj.ok()) return BestOrAdjusted(std::move(best), adj.status());
  uint64_t within = best->size();
  return BestOrAdjusted(std::move(best), Finish(**adj, helpers, within));
}

// A target over all_forms_max_target: the x86 form and the adjusted form
// rescanned in the x86 base's index (AdjustedFromRescan), from one suffix
// sort. The base is moved while the x86 form's level-1 size is measured;
// level-1 sizes then choose as in EncodeBigPair (the clearly smaller alone,
// else both compressed and the smaller kept, ties keeping the x86 form).
absl::StatusOr<std::string> BsdiffCodec::EncodeX86Forms(std::string_view base, std::string_view target,
                                                        X86Span base_span, X86Span target_span, Helpers& helpers,
                                                        uint64_t limit) const {
  std::string b, t;
  if (auto s = CopyPair(base, target, &b, &t); !s.ok()) return s;
  std::vector<X86Operand> ops;
  BsdiffBatch batch({X86Input(b, t, base_span, target_span, &ops)});
  batch.Build(helpers);
  auto streams = batch.Scan(0, helpers, {}, /*keep_index=*/true);
  if (!streams.ok()) return streams.status();
  auto map1 = MoveMap::FromCtrl(streams->ctrl, base.size(), target.size());
  if (!map1) return absl::InternalError("bsdiff: a scan's blocks leave the files");
  const uint64_t hash = Hash64(target);
  FormEncoder x86(std::move(*streams), level_, hash, X86Record(base_span, target_span));
  auto la = ParseElfLayout(b);
  auto lt = ParseElfLayout(target);
  if (!la || !lt) return Finish(x86, helpers, limit);
  AdjustInputs in{b, t, ops, base_span, target_span, *la, *lt};
  auto moved = MovedBase(in, *map1, helpers, [&] { x86.Quick(); });
  // As in EncodeBigPair: an x86 form over the limit or too small to gain
  // from adjusting is the result; out of memory for the adjusted form is an
  // error.
  if (x86.ClearlyOver(limit) || x86.Quick() < kAdjustMinPatch) return Finish(x86, helpers, limit);
  if (!moved.ok()) return moved.status();
  auto adj = AdjustedFromRescan(in, batch, std::move(*moved), level_, hash, helpers, std::nullopt);
  if (!adj.ok()) return adj.status();
  return FinishX86OrAdjusted(x86, **adj, helpers, limit);
}

// The plain form within `limit`, then the x86 form within the plain patch's
// size (or `limit` if the plain form gave up); the smaller is kept, ties keep
// the plain form. One index at a time.
absl::StatusOr<std::string> BsdiffCodec::EncodeFormsInTurn(std::string_view base, std::string_view target,
                                                           X86Span base_span, X86Span target_span,
                                                           Helpers& helpers, uint64_t limit) const {
  auto plain = EncodePlain(base, target, helpers, limit);
  if (!plain.ok() && !absl::IsOutOfRange(plain.status())) return plain;
  auto x86 = EncodeX86(base, target, base_span, target_span, helpers, plain.ok() ? plain->size() : limit);
  return Smaller(std::move(plain), std::move(x86));
}

// An x86-64 ELF pair: the plain form and the x86 code form (the code with
// absolute references); the smaller patch is kept, ties keep the plain form,
// which older readers read. The result is that of encoding the plain form
// within `limit`, then the x86 form within the plain patch's size (or
// `limit` if the plain form gave up): the same bytes, whatever the threads.
// Both forms' diffs are computed side by side (BsdiffComputeMany), and their
// streams compressed as one set of tasks; the x86 form's compression is
// started before the plain patch's size is known and its result dropped if
// it was clearly over that size, as the serial order would have skipped it.
absl::StatusOr<std::string> BsdiffCodec::EncodeBothForms(std::string_view base, std::string_view target,
                                                         X86Span base_span, X86Span target_span,
                                                         Helpers& helpers, uint64_t limit,
                                                         std::optional<MoveMap>* x86_map) const {
  std::string b, t;
  if (auto s = CopyPair(base, target, &b, &t); !s.ok()) return s;
  std::vector<BsdiffInput> inputs = {{base, target, nullptr, nullptr},
                                     {b, t, [&] { X86ToAbsolute(b, base_span); },
                                      [&] { X86ToAbsolute(t, target_span); }}};
  auto streams = BsdiffComputeMany(inputs, helpers);
  b = std::string();
  t = std::string();
  if (!streams[0].ok()) return streams[0].status();
  const uint64_t hash = Hash64(target);
  FormEncoder plain_form(std::move(*streams[0]), level_, hash, "");
  if (!streams[1].ok()) {  // as when the x86 form ran after the plain one
    auto plain = Finish(plain_form, helpers, limit);
    if (!plain.ok() && !absl::IsOutOfRange(plain.status())) return plain;
    return streams[1].status();
  }
  if (x86_map) *x86_map = MoveMap::FromCtrl(streams[1]->ctrl, base.size(), target.size());
  FormEncoder x86_form(std::move(*streams[1]), level_, hash, X86Record(base_span, target_span));
  return FinishPlainThenX86(plain_form, x86_form, helpers, limit);
}

absl::StatusOr<std::string> BsdiffCodec::EncodePlain(std::string_view base, std::string_view target,
                                                     Helpers& helpers, uint64_t limit) const {
  return EncodeStreams(base, target, helpers, limit, Hash64(target), "");
}

absl::StatusOr<std::string> BsdiffCodec::EncodeX86(std::string_view base, std::string_view target,
                                                   X86Span base_span, X86Span target_span, Helpers& helpers,
                                                   uint64_t limit) const {
  std::string b(base), t(target);
  X86ToAbsolute(b, base_span, helpers);
  X86ToAbsolute(t, target_span, helpers);
  return EncodeStreams(b, t, helpers, limit, Hash64(target), X86Record(base_span, target_span));
}

namespace {

// The raw pack form of the plain form's streams (bsdiff_codec.h).
absl::StatusOr<std::string> RawPatch(const BsdiffStreams& streams, uint64_t hash) {
  CtrlColumns ctrl = SplitCtrl(streams.ctrl);
  ZeroRuns diff = SplitZeroRuns(streams.diff);
  std::string extra;
  if (!streams.extra.empty()) extra = kRawPartsForm + streams.extra;
  return AssemblePatch(JoinFrames({ctrl.adds, ctrl.copies, ctrl.seeks}, kRawPartsForm),
                       JoinFrames({diff.runs, diff.literals}, kRawPartsForm), extra, hash, "");
}

}  // namespace

absl::StatusOr<std::string> BsdiffCodec::EncodeRawForPack(std::string_view base, std::string_view target,
                                                          Helpers& helpers) const {
  auto streams = BsdiffCompute(base, target, helpers);
  if (!streams.ok()) return streams.status();
  return RawPatch(*streams, Hash64(target));
}

absl::StatusOr<std::string> BsdiffCodec::EncodeWithinAndRaw(std::string_view base, std::string_view target,
                                                            Helpers& helpers, uint64_t limit,
                                                            std::string* raw) const {
  raw->clear();
  if (X86_64CodeSpan(base) && X86_64CodeSpan(target)) return EncodeWithin(base, target, helpers, limit);
  return EncodeStreams(base, target, helpers, limit, Hash64(target), "", raw);
}

absl::StatusOr<std::string> BsdiffCodec::EncodeStreams(std::string_view base, std::string_view target,
                                                       Helpers& helpers, uint64_t limit, uint64_t hash,
                                                       std::string_view x86_record, std::string* raw) const {
  auto streams = BsdiffCompute(base, target, helpers);
  if (!streams.ok()) return streams.status();
  if (raw) {
    auto r = RawPatch(*streams, hash);
    if (!r.ok()) return r.status();
    *raw = std::move(*r);
  }
  FormEncoder form(std::move(*streams), level_, hash, std::string(x86_record), LooksText(target));
  return Finish(form, helpers, limit);
}

namespace {

// A patch's decoded streams: what the target is rebuilt from, besides the base.
struct Streams {
  Parsed parsed;
  DiffStream diff;
  std::string extra;
  Triples triples;
};

// How many triples are read into memory: the adjusted form needs all of
// them for its map (at most kMaxAdjustTriples, else the patch is refused);
// the other forms at most ListCap (else they are streamed). Never more than
// one per target byte plus one, as RunTriples allows.
uint64_t TripleCap(const Parsed& p, uint64_t target_size) {
  uint64_t per_target = target_size == std::numeric_limits<uint64_t>::max() ? target_size : target_size + 1;
  return std::min<uint64_t>(per_target, p.adjusted ? kMaxAdjustTriples : ListCap(target_size));
}

absl::StatusOr<std::string> DecodeExtraSection(std::string_view section, uint64_t max_size, bool raw_ok) {
  if (IsRawParts(section)) {
    if (!raw_ok) return absl::DataLossError("bsdiff patch: extra section in the raw pack form outside a pack");
    if (section.size() - 1 > max_size) return absl::DataLossError("bsdiff patch: extra section over the target size");
    return std::string(section.substr(1));
  }
  return IsAltSection(section) ? DecompressAltSection(section, max_size) : DecompressStream(section, max_size);
}

// The diff and the extra section, each bounded by the target size (together
// they must make exactly that, which Keep checks), and the control triples.
struct Sections {
  absl::StatusOr<DiffStream> diff = absl::UnknownError("not decoded");
  absl::StatusOr<std::string> extra = absl::UnknownError("not decoded");
  Triples triples;

  // Tasks for Helpers::Run, the slower first (alt sections decode at tens of
  // MB/s, zstd frames at GB/s).
  std::vector<std::function<void()>> Tasks(const Parsed& p, uint64_t target_size) {
    std::function<void()> d = [this, &p, target_size] { diff = DecodeDiffSection(p.diff, target_size, p.packed); };
    std::function<void()> e = [this, &p, target_size] { extra = DecodeExtraSection(p.extra, target_size, p.packed); };
    std::function<void()> c = [this, &p, target_size] {
      triples = ReadTriples(p.ctrl, TripleCap(p, target_size), p.packed);
    };
    if (IsAltSection(p.extra) && !IsAltSection(p.diff)) return {e, d, c};
    return {d, e, c};
  }
  // Moves the decoded sections into `st`; the diff's error first.
  absl::Status Keep(Streams& st, uint64_t target_size) {
    if (!diff.ok()) return diff.status();
    if (!extra.ok()) return extra.status();
    if (diff->length + extra->size() != target_size) {
      return absl::DataLossError("bsdiff patch: diff and extra do not add up to the target size");
    }
    st.diff = std::move(*diff);
    st.extra = std::move(*extra);
    st.triples = std::move(triples);
    return absl::OkStatus();
  }
};

absl::Status CheckSpans(const Parsed& p, uint64_t base_size, uint64_t target_size) {
  if (p.x86_base && (!SpanWithin(*p.x86_base, base_size) || !SpanWithin(*p.x86_target, target_size))) {
    return absl::DataLossError("bsdiff patch: x86 code span outside the base or the target");
  }
  return absl::OkStatus();
}

// The target from `base` (already in the x86 form if the patch is) and the
// decoded streams.
// `out`: a buffer of target_size bytes (AllocateBuffer), or its error.
// `plan` (may be null): PlanApply's, already made for this base and `out`.
absl::StatusOr<std::string> ApplyStreams(std::string_view base, const Streams& st, uint64_t target_size,
                                         Helpers& helpers, absl::StatusOr<std::string> out,
                                         const ApplyPlan* plan = nullptr) {
  if (!st.triples.over) {
    if (st.triples.list.empty() && !st.triples.after.ok()) return st.triples.after;  // before the buffer's error
    if (!out.ok()) return out.status();
    Patcher patcher(base, st.diff, st.extra, &*out);
    absl::StatusOr<ApplyPlan> own;
    if (!plan) {
      own = PlanApply(st.triples, patcher, target_size, helpers);
      if (!own.ok()) return own.status();
      plan = &*own;
    }
    if (auto s = ApplyList(st.triples, *plan, patcher, helpers); !s.ok()) return s;
  } else {
    CtrlReader ctrl;
    if (auto s = ctrl.Init(st.parsed.ctrl, st.parsed.packed); !s.ok()) return s;
    if (!out.ok()) return out.status();
    Patcher patcher(base, st.diff, st.extra, &*out);
    if (auto s = RunTriples(ctrl, patcher, target_size); !s.ok()) return s;
  }
  if (st.parsed.x86_target) X86ToRelative(*out, *st.parsed.x86_target, helpers);
  if (Hash64(*out) != st.parsed.hash) {
    return absl::DataLossError("bsdiff patch: checksum mismatch (wrong base or corrupt patch)");
  }
  return out;
}

// The adjusted form: `base_abs` (the base in the x86 form, `ops` its
// rewritten operands) with its references moved along the map of the
// patch's own control stream, as the encoder moved them.
absl::Status AdjustForPatch(std::string& base_abs, const std::vector<X86Operand>& ops, const Parsed& p,
                            const Triples& triples, uint64_t target_size, Helpers& helpers = NoHelpers()) {
  auto la = ParseElfLayout(base_abs);
  if (!la) {
    return absl::DataLossError(
        "bsdiff patch: adjusted x86 form, but the base has no ELF program headers (wrong base or corrupt patch)");
  }
  if (!triples.after.ok()) return triples.after;
  if (triples.over) return absl::DataLossError("bsdiff patch: too many ctrl triples for the adjusted x86 form");
  auto map = MoveMap::FromCtrl(triples.list, base_abs.size(), target_size);
  if (!map) return absl::DataLossError("bsdiff patch: ctrl triples outside the base or the target");
  AdjustBase(base_abs, ops, *p.x86_base, *la, p.adjust_target, *map, helpers);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BsdiffCodec::Decode(std::string_view base, std::string_view patch,
                                                uint64_t target_size) const {
  return DecodeIn(base, patch, target_size, false);
}

absl::StatusOr<std::string> BsdiffCodec::DecodeFromPack(std::string_view base, std::string_view patch,
                                                        uint64_t target_size) const {
  return DecodeIn(base, patch, target_size, true);
}

absl::StatusOr<std::string> BsdiffCodec::DecodeIn(std::string_view base, std::string_view patch,
                                                  uint64_t target_size, bool packed) const {
  Streams st;
  auto parsed = ParseHeader(patch);
  if (!parsed.ok()) return parsed.status();
  st.parsed = *parsed;
  st.parsed.packed = packed;
  Sections sections;
  NoHelpers().Run(sections.Tasks(st.parsed, target_size));
  if (auto s = sections.Keep(st, target_size); !s.ok()) return s;
  if (auto s = CheckSpans(st.parsed, base.size(), target_size); !s.ok()) return s;
  std::string x86_base;
  if (st.parsed.x86_base) {
    x86_base.assign(base);
    if (st.parsed.adjusted) {
      auto ops = X86ToAbsoluteOperands(x86_base, *st.parsed.x86_base);
      if (auto s = AdjustForPatch(x86_base, ops, st.parsed, st.triples, target_size); !s.ok()) return s;
    } else {
      X86ToAbsolute(x86_base, *st.parsed.x86_base);
    }
    base = x86_base;
  }
  return ApplyStreams(base, st, target_size, NoHelpers(), AllocateWholeBuffer(target_size));
}

absl::StatusOr<std::string> BsdiffCodec::DecodeWith(const BaseSource& base, std::string_view patch,
                                                    uint64_t target_size, bool packed,
                                                    Helpers& helpers) const {
  Streams st;
  auto parsed = ParseHeader(patch);
  if (!parsed.ok()) {
    // The base's error comes first, as when it is read before the patch.
    if (auto b = base(); !b.ok()) return b.status();
    return parsed.status();
  }
  st.parsed = *parsed;
  st.parsed.packed = packed;
  // The base is made (read; the chain checks what is built on it) and put
  // in the x86 form in place, while the sections and the control triples
  // decode beside it.
  absl::StatusOr<std::string> b = absl::UnknownError("not run");
  std::vector<X86Operand> ops;  // the adjusted form's
  Sections sections;
  std::vector<std::function<void()>> tasks = {[&] {
    b = base();
    if (b.ok() && st.parsed.x86_base && SpanWithin(*st.parsed.x86_base, b->size())) {
      if (st.parsed.adjusted) ops = X86ToAbsoluteOperands(*b, *st.parsed.x86_base, helpers);
      else X86ToAbsolute(*b, *st.parsed.x86_base, helpers);
    }
  }};
  for (auto& t : sections.Tasks(st.parsed, target_size)) tasks.push_back(std::move(t));
  // The output buffer too: filling 28 MB of fresh pages costs ~10 ms.
  absl::StatusOr<std::string> out = absl::UnknownError("not allocated");
  tasks.push_back([&] { out = AllocateWholeBuffer(target_size); });
  helpers.Run(tasks);
  if (!b.ok()) return b.status();
  if (auto s = sections.Keep(st, target_size); !s.ok()) return s;
  if (auto s = CheckSpans(st.parsed, b->size(), target_size); !s.ok()) return s;
  if (st.parsed.adjusted && !st.triples.over && out.ok() && MayRunParts(helpers)) {
    // The base's references moved while the triples are checked beside
    // (the check reads no base bytes); the adjustment's errors first.
    absl::Status adjusted;
    absl::StatusOr<ApplyPlan> plan = absl::UnknownError("not planned");
    Patcher start(*b, st.diff, st.extra, &*out);
    helpers.Run({[&] { adjusted = AdjustForPatch(*b, ops, st.parsed, st.triples, target_size, helpers); },
                 [&] { plan = PlanApply(st.triples, start, target_size, helpers); }});
    if (!adjusted.ok()) return adjusted;  // the triples' read error among them
    if (!plan.ok()) return plan.status();
    return ApplyStreams(*b, st, target_size, helpers, std::move(out), &*plan);
  }
  if (st.parsed.adjusted)
    if (auto s = AdjustForPatch(*b, ops, st.parsed, st.triples, target_size, helpers); !s.ok()) return s;
  return ApplyStreams(*b, st, target_size, helpers, std::move(out));
}

}  // namespace d4c::codec_internal
