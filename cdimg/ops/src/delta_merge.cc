// merge: D1 = A→B and D2 = B→C -> D = A→C.
//
// Per file of C (first of its content): content A has -> base; else the blob
// that produced it is copied when it still decodes in the merged delta (a
// full blob, or a delta whose base A has or an earlier file of C carries, as
// for a twin: Twins), from D2 first, else from D1 (file unchanged since B).
// Only files whose D2 delta needs B's version (changed twice) are re-encoded
// against A (and C's twin, if any), and keep the smaller of delta and full.
// Every copied blob is decoded and checked against its digest first.
//
// ComposeDeltas: the same result without any file content of A (its index
// only), in an image with placed packs (docs/format.md). Per file of C:
// content A has -> base; else the chain of blobs that produces it is
// followed down D2 then D1 to a full blob or to a base the merged delta
// resolves (A's content, or C's carried by an earlier entry): one blob ->
// copied as it is; several -> one chained patch (codec 6) of their patches.
// A full blob at the bottom (new in B, changed again) is the chain's first
// step and the entry names A's smallest file as its base (reading it costs
// nothing): a standalone zstd frame as a zstd patch that uses no prefix, a
// packed member as a stored step. Every pack of D1 and D2 that a kept
// member or a step lies in is copied as stored; members and packed steps
// stay where they are (the chain names their place: located steps), so only
// small new packs (chain headers, D1's and D2's inline packs) are
// compressed. Full members kept are checked against their digests, pack by
// pack, each pack decompressed once.
#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "delta_internal.h"
#include "thread_pool.h"

namespace d4c {

using namespace delta_internal;  // this file implements part of it

namespace {

absl::Status CheckHeaders(const CdimgImage& a, const std::string& d1, const std::string& d2) {
  auto h1 = CdimgImage::ReadHeader(d1);
  if (!h1.ok()) return h1.status();
  auto h2 = CdimgImage::ReadHeader(d2);
  if (!h2.ok()) return h2.status();
  if (!h1->is_delta) return absl::InvalidArgumentError(StrCat(d1, ": is a full image, not a delta"));
  if (!h2->is_delta) return absl::InvalidArgumentError(StrCat(d2, ": is a full image, not a delta"));
  if (h1->parent_id != a.header().image_id)
    return absl::FailedPreconditionError(StrCat(d1, ": wrong base: this delta applies to image ",
                                                DigestString(h1->parent_id), ", but ", a.path(), " is image ",
                                                DigestString(a.header().image_id)));
  if (h2->parent_id != h1->image_id)
    return absl::FailedPreconditionError(StrCat(d2, ": applies to image ", DigestString(h2->parent_id), ", but ",
                                                d1, " produces image ", DigestString(h1->image_id),
                                                " (is the order of the deltas right?)"));
  return absl::OkStatus();
}

// Content digest -> an entry of `img` carrying a blob for it.
using BlobIndex = std::unordered_map<Digest, size_t, DigestHash>;
BlobIndex IndexBlobs(const CdimgImage& img) {
  BlobIndex out;
  for (size_t i = 0; i < img.size(); ++i) {
    Recipe::Kind k = img.RecipeAt(i).kind;
    if (k == Recipe::Kind::kFull || k == Recipe::Kind::kDelta) out.emplace(img.DigestAt(i), i);
  }
  return out;
}

struct MergeContext {
  const ImageChain& a_chain;  // ends in A
  const ImageChain& chain;    // A's chain + D1 + D2: top is C
  const CdimgImage& d1;
  const CdimgImage& d2;
  const OldTree& old;
  BlobIndex blobs1, blobs2;
  const DiffOptions& options;
  const Twins* twins = nullptr;  // of C's entries
  // C's content -> its first entry, which carries it in the merged delta
  // unless A has it.
  std::unordered_map<Digest, size_t, DigestHash> first_in_c;
};

// A delta base that the merged delta resolves, written at C's entry i: a
// content of A, or one of C carried by an entry before i (the writer rule of
// docs/format.md, "Resolving content": no cycles).
bool BaseResolves(const MergeContext& m, const Digest& base, size_t i) {
  if (m.old.Has(base)) return true;
  auto it = m.first_in_c.find(base);
  return it != m.first_in_c.end() && it->second < i;
}

// A blob of `img` entry j whose base is A's content or C's (DecodesInMerge),
// checked.
absl::StatusOr<BlobResult> CopyBlob(const MergeContext& m, const CdimgImage& img, size_t j) {
  Recipe r = img.RecipeAt(j);
  auto blob = img.ReadPayload(r);  // packed: the member, kept packed in the output
  if (!blob.ok()) return delta_internal::AtEntry(blob.status(), img.path(), img.PathAt(j));
  absl::StatusOr<std::string> content;
  if (r.kind == Recipe::Kind::kFull) {
    content = r.packed ? *blob : DecompressFullBlob(*blob, img.SizeAt(j));
  } else {
    auto base = m.old.Has(r.base) ? m.a_chain.ReadByDigest(r.base) : m.chain.ReadByDigest(r.base);
    if (!base.ok()) return delta_internal::AtEntry(base.status(), img.path(), img.PathAt(j));
    content = GetCodec(r.codec).DecodeForm(*base, *blob, img.SizeAt(j), r.packed);
  }
  if (!content.ok()) return delta_internal::AtEntry(content.status(), img.path(), img.PathAt(j));
  if (Sha256(*content) != img.DigestAt(j))
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(j),
                                      ": rebuilt content does not match its sha256 (corrupt image)"));
  BlobResult out;
  out.recipe = r;
  out.blob = std::move(*blob);
  return out;
}

// Bases in A for re-encoding C's entry i: the file at the same path (or a
// rename), and the A file D1 diffed this file's B version against.
std::vector<size_t> BasesInA(const MergeContext& m, size_t i) {
  std::vector<size_t> out;
  const CdimgImage& c = m.d2;
  if (auto j = m.old.BaseFor(c.PathAt(i), c.SizeAt(i))) out.push_back(*j);
  Recipe r2 = c.RecipeAt(i);
  if (r2.kind != Recipe::Kind::kDelta) return out;
  auto it = m.blobs1.find(r2.base);
  if (it == m.blobs1.end()) return out;
  Recipe r1 = m.d1.RecipeAt(it->second);
  if (r1.kind != Recipe::Kind::kDelta) return out;
  std::optional<size_t> j = m.old.Find(r1.base);
  if (j && (out.empty() || m.old.image().DigestAt(out[0]) != r1.base)) out.push_back(*j);
  return out;
}

// Builds C's entry i anew against A. `ready_full` is D2's full blob if it has one.
absl::StatusOr<BlobResult> Reencode(const MergeContext& m, size_t i, std::optional<std::string> ready_full,
                                    Helpers& helpers) {
  const CdimgImage& c = m.d2;
  auto target = m.chain.ReadFile(i);
  if (!target.ok()) return target.status();
  std::vector<Base> bases;
  for (size_t j : BasesInA(m, i)) {
    auto content = m.a_chain.ReadFile(j);
    if (!content.ok()) return content.status();
    bases.push_back({m.old.image().DigestAt(j), std::move(*content), m.old.image().PathAt(j) != c.PathAt(i)});
  }
  // A's twin of the path, as diff offers it (OldTree::SiblingFor).
  if (std::optional<size_t> s = m.old.SiblingFor(c.PathAt(i), c.SizeAt(i));
      s && !bases.empty() && target->size() >= m.options.min_delta_size &&
      std::none_of(bases.begin(), bases.end(), [&](const Base& b) { return b.digest == m.old.image().DigestAt(*s); })) {
    auto content = m.a_chain.ReadFile(*s);
    if (!content.ok()) return content.status();
    OfferSibling(&bases, m.old.image().DigestAt(*s), std::move(*content), *target);
  }
  if (std::optional<size_t> twin = m.twins->For(i); twin && target->size() >= m.options.min_delta_size) {
    auto content = m.chain.ReadFile(*twin);
    if (!content.ok()) return content.status();
    OfferTwin(&bases, c.DigestAt(*twin), std::move(*content), *target);
  }
  auto r = delta_internal::EncodeFile(*target, bases, m.options, std::move(ready_full), helpers);
  if (!r.ok()) return delta_internal::AtEntry(r.status(), c.path(), c.PathAt(i));
  r->reencoded = true;
  return r;
}

// True if a blob of D1 or D2 decodes as it is in the merged delta at C's entry i.
bool DecodesInMerge(const MergeContext& m, const Recipe& r, size_t i) {
  return r.kind == Recipe::Kind::kFull || (r.kind == Recipe::Kind::kDelta && BaseResolves(m, r.base, i));
}

// One file of C that A does not have.
absl::StatusOr<BlobResult> MergeOne(const MergeContext& m, size_t i, Helpers& helpers) {
  Digest d = m.d2.DigestAt(i);
  if (auto it = m.blobs2.find(d); it != m.blobs2.end()) {
    Recipe r2 = m.d2.RecipeAt(it->second);
    if (r2.kind == Recipe::Kind::kFull) {
      // New since B; A may still hold a good base (e.g. a file that B lacked).
      if (!m.old.BaseFor(m.d2.PathAt(i), m.d2.SizeAt(i))) return CopyBlob(m, m.d2, it->second);
      auto copied = CopyBlob(m, m.d2, it->second);
      if (!copied.ok()) return copied.status();
      // A packed member is raw content, not a ready zstd frame.
      auto r = Reencode(m, i, copied->recipe.packed ? std::nullopt : std::optional<std::string>(std::move(copied->blob)),
                        helpers);
      if (r.ok() && r->recipe.kind == Recipe::Kind::kFull) r->reencoded = false;  // D2's blob kept
      return r;
    }
    if (DecodesInMerge(m, r2, i)) return CopyBlob(m, m.d2, it->second);
    return Reencode(m, i, std::nullopt, helpers);  // changed in both deltas
  }
  if (auto it = m.blobs1.find(d); it != m.blobs1.end() && DecodesInMerge(m, m.d1.RecipeAt(it->second), i))
    return CopyBlob(m, m.d1, it->second);  // changed A→B only
  return Reencode(m, i, std::nullopt, helpers);
}

uint64_t MergeMemory(const MergeContext& m, size_t i) {
  uint64_t base = 0;
  if (auto j = m.old.BaseFor(m.d2.PathAt(i), m.d2.SizeAt(i))) base = m.old.image().SizeAt(*j);
  if (auto t = m.twins->For(i)) base = std::max(base, m.d2.SizeAt(*t));
  return delta_internal::EncodeMemory(2 * base, m.d2.SizeAt(i));
}

std::vector<BlobJob> PlanMerge(const MergeContext& m, const std::vector<Entry>& entries,
                               std::vector<Recipe>* recipes) {
  std::vector<BlobJob> jobs;
  std::unordered_set<Digest, DigestHash> seen;
  recipes->assign(entries.size(), Recipe{});
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular) continue;
    Recipe& r = (*recipes)[i];
    if (e.size == 0) r.kind = Recipe::Kind::kEmpty;
    else if (!seen.insert(e.digest).second || m.old.Has(e.digest)) r.kind = Recipe::Kind::kBase;
    else jobs.push_back({i, e.size, MergeMemory(m, i), [&m, i](Helpers& h) { return MergeOne(m, i, h); }});
  }
  return jobs;
}

std::vector<std::string> ChainPaths(const ImageChain& chain) {
  std::vector<std::string> out;
  for (size_t l = 0; l < chain.depth(); ++l) out.push_back(chain.image(l).path());
  return out;
}

// ---------------------------------------------------------------- compose

// The packs of D1 and D2 that the merged delta copies, and where their
// bytes are there: D1's stored packs, then D2's, as stored, numbered in
// that order; then D1's and D2's inline packs (which have no stored frame),
// back to back at the start of the first pack the merged delta forms, the
// one after them (for a small delta, its inline pack: one frame for all).
// Thread-safety: filled by one thread (Use, Assign), then read-only.
class CopiedPacks {
 public:
  struct Place {
    uint32_t pack = 0;   // in the merged delta
    uint64_t shift = 0;  // added to offsets inside the source pack
  };
  void Use(const CdimgImage* img, uint32_t pack) { used_.insert({img, pack}); }
  void Assign(const CdimgImage& d1, const CdimgImage& d2) {
    for (const CdimgImage* img : {&d1, &d2})
      for (uint32_t p = 0; p < img->pack_count(); ++p)
        if (img->PackBlob(p).length > 0 && used_.count({img, p})) {
          place_[{img, p}] = {static_cast<uint32_t>(layout_.stored.size()), 0};
          layout_.stored.push_back({img, p});
        }
    uint64_t lead = 0;
    for (const CdimgImage* img : {&d1, &d2})
      for (uint32_t p = 0; p < img->pack_count(); ++p)
        if (img->PackBlob(p).length == 0 && used_.count({img, p})) {
          place_[{img, p}] = {static_cast<uint32_t>(layout_.stored.size()), lead};
          layout_.lead.push_back({img, p});
          lead += img->PackRawLength(p);
        }
  }
  // Where pack `pack` of `img` is in the merged delta (nullopt: a pack not
  // marked by Use).
  std::optional<Place> Map(const CdimgImage* img, uint32_t pack) const {
    auto it = place_.find({img, pack});
    return it == place_.end() ? std::nullopt : std::optional<Place>(it->second);
  }
  const delta_internal::PlacedPacks& layout() const { return layout_; }

 private:
  std::set<std::pair<const CdimgImage*, uint32_t>> used_;
  std::map<std::pair<const CdimgImage*, uint32_t>, Place> place_;
  delta_internal::PlacedPacks layout_;
};

struct ComposeContext {
  const CdimgImage& a;
  const CdimgImage& d1;
  const CdimgImage& d2;
  const OldTree& old;
  BlobIndex blobs1, blobs2;
  const DiffOptions& options;
  std::optional<size_t> smallest;  // A's smallest non-empty regular file
  const CopiedPacks* packs = nullptr;
  // C's content -> its first entry, which carries it unless A has it.
  std::unordered_map<Digest, size_t, DigestHash> first_in_c;
};

std::optional<size_t> SmallestFile(const CdimgImage& a) {
  std::optional<size_t> best;
  for (size_t i = 0; i < a.size(); ++i)
    if (a.TypeAt(i) == EntryType::kRegular && a.SizeAt(i) > 0 && (!best || a.SizeAt(i) < a.SizeAt(*best))) best = i;
  return best;
}

struct Link {
  const CdimgImage* img;
  size_t entry;
  Recipe recipe;
};

// A packed patch of D1 or D2 that the merged delta leaves in its copied pack
// (a chained one is read: its steps may name packs of its own image).
bool Located(const Link& l) {
  return l.recipe.kind == Recipe::Kind::kDelta && l.recipe.packed && l.recipe.codec != CodecId::kChain;
}

// How C's content `d` is produced: deltas (nearest the base first) on top
// of either a base the merged delta resolves (`on_base`: A's content, or
// C's carried by an earlier entry of C, as for a twin) or a full blob.
struct Resolution {
  bool on_base = false;
  Digest base{};
  std::optional<Link> full;
  std::vector<Link> deltas;
};

// Without a file of A to name as the base of a chain, a full blob with
// patches on top is rebuilt (ComposeOne): its steps are read, not located.
bool Rebuilds(const ComposeContext& m, const Resolution& res) { return res.full && !m.smallest; }

absl::StatusOr<Resolution> Resolve(const ComposeContext& m, Digest d, size_t entry) {
  std::string_view path = m.d2.PathAt(entry);
  Resolution res;
  bool in_d2 = true;  // a blob of D2 may rest on D2, D1 or A; one of D1 on D1 or A
  for (size_t depth = 0;; ++depth) {
    if (depth > kMaxChainSteps)
      return absl::DataLossError(StrCat(m.d2.path(), ": /", path, ": more than ", kMaxChainSteps,
                                        " delta blobs on top of each other (corrupt or cyclic deltas)"));
    // C's own content at an earlier entry: that entry carries it (the
    // writer rule of docs/format.md), so it is a base like A's.
    auto carried = m.first_in_c.find(d);
    if (m.old.Has(d) || (carried != m.first_in_c.end() && carried->second < entry)) {
      res.on_base = true;
      res.base = d;
      break;
    }
    const CdimgImage* img = nullptr;
    size_t j = 0;
    if (auto it = m.blobs2.find(d); in_d2 && it != m.blobs2.end()) {
      img = &m.d2;
      j = it->second;
    } else if (auto it1 = m.blobs1.find(d); it1 != m.blobs1.end()) {
      img = &m.d1;
      j = it1->second;
      in_d2 = false;
    } else {
      return absl::DataLossError(StrCat(m.d2.path(), ": /", path, ": content ", DigestString(d),
                                        " is neither in the base image ", m.a.path(), " nor stored in ",
                                        m.d1.path(), " or ", m.d2.path(), " (corrupt or mismatched deltas)"));
    }
    Recipe r = img->RecipeAt(j);
    if (r.kind == Recipe::Kind::kFull) {
      res.full = Link{img, j, r};
      break;
    }
    res.deltas.push_back(Link{img, j, r});
    d = r.base;
  }
  std::reverse(res.deltas.begin(), res.deltas.end());
  return res;
}

// A full blob, checked against its digest (a packed member is raw content).
absl::StatusOr<std::string> ReadFull(const Link& l, std::string* blob) {
  const CdimgImage& img = *l.img;
  auto payload = img.ReadPayload(l.recipe);
  if (!payload.ok()) return AtEntry(payload.status(), img.path(), img.PathAt(l.entry));
  auto content = l.recipe.packed ? *payload : DecompressFullBlob(*payload, img.SizeAt(l.entry));
  if (!content.ok()) return AtEntry(content.status(), img.path(), img.PathAt(l.entry));
  if (Sha256(*content) != img.DigestAt(l.entry))
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(l.entry),
                                      ": content does not match its sha256 (corrupt image)"));
  if (blob) *blob = std::move(*payload);
  return content;
}

absl::StatusOr<BlobResult> ComposeOne(const ComposeContext& m, size_t i) {
  std::string_view path = m.d2.PathAt(i);
  auto res = Resolve(m, m.d2.DigestAt(i), i);
  if (!res.ok()) return res.status();
  BlobResult out;
  if (res->full && res->deltas.empty()) {  // stored whole: copied after its check
    auto content = ReadFull(*res->full, &out.blob);
    if (!content.ok()) return content.status();
    out.recipe = res->full->recipe;
    return out;
  }
  const bool rebuild = Rebuilds(m, *res);
  // The steps, with their forms and output sizes; chained ones flattened. A
  // packed patch of D1 or D2 stays in its pack (copied as it is stored) and
  // the step names its place; other steps' bytes are held here.
  std::vector<std::string> held;
  held.reserve(res->deltas.size() + 1);  // `steps` keep views into it
  std::vector<ChainStep> steps;
  auto add = [&](const Link& l) -> absl::Status {
    if (!rebuild && Located(l)) {
      ChainStep st{l.recipe.codec, true, l.img->SizeAt(l.entry), {}, l.recipe.blob.length};
      st.located = true;
      CopiedPacks::Place to = *m.packs->Map(l.img, l.recipe.pack);  // marked by UsePacks
      st.pack = to.pack;
      st.offset = l.recipe.blob.offset + to.shift;
      steps.push_back(st);
      return absl::OkStatus();
    }
    // A chained patch's steps that lie in packs stay there (rebuilding
    // reads them copied in).
    auto p = rebuild ? l.img->ReadPayload(l.recipe) : l.img->ReadStoredPayload(l.recipe);
    if (!p.ok()) return AtEntry(p.status(), l.img->path(), l.img->PathAt(l.entry));
    std::string_view v = held.emplace_back(std::move(*p));
    if (l.recipe.codec != CodecId::kChain) {
      steps.push_back({l.recipe.codec, l.recipe.packed, l.img->SizeAt(l.entry), v, v.size()});
      return absl::OkStatus();
    }
    auto inner = ParseChainPatch(v, l.recipe.packed);
    if (!inner.ok()) return AtEntry(inner.status(), l.img->path(), l.img->PathAt(l.entry));
    if (inner->back().out_size != l.img->SizeAt(l.entry))
      return AtEntry(absl::DataLossError("chained patch: last step's size is not the file's"), l.img->path(),
                     l.img->PathAt(l.entry));
    if (inner->front().stored) steps.clear();  // it ignores what came before
    for (ChainStep& st : *inner) {
      if (!st.located) continue;
      std::optional<CopiedPacks::Place> to = m.packs->Map(l.img, st.pack);  // UsePacks marked them, if placed
      if (!to)
        return AtEntry(absl::DataLossError(StrCat("chained patch: a step in pack ", st.pack,
                                                  ", but the image has no placed packs")),
                       l.img->path(), l.img->PathAt(l.entry));
      st.pack = to->pack;
      st.offset += to->shift;
    }
    steps.insert(steps.end(), inner->begin(), inner->end());
    return absl::OkStatus();
  };
  Digest chain_base = res->base;
  if (res->full && !rebuild) {
    // The full blob is step 1 and the entry names A's smallest file as its
    // base, whose content no step uses. A packed member (raw content) is a
    // stored step left in its pack. A standalone blob (one zstd frame with
    // its content size) is a zstd patch that uses no byte of its base:
    // checked here by decoding it against zeros of the base's size (the
    // window the decoder allows depends on the sizes only) and comparing
    // with its digest.
    const Link& f = *res->full;
    if (f.recipe.packed) {
      ChainStep st{CodecId::kZstd, false, f.img->SizeAt(f.entry), {}, f.recipe.blob.length};
      st.stored = st.located = true;
      CopiedPacks::Place to = *m.packs->Map(f.img, f.recipe.pack);  // marked when planned
      st.pack = to.pack;
      st.offset = f.recipe.blob.offset + to.shift;
      steps.push_back(st);
    } else {
      auto blob = f.img->ReadPayload(f.recipe);
      if (!blob.ok()) return AtEntry(blob.status(), f.img->path(), f.img->PathAt(f.entry));
      std::string zeros(m.a.SizeAt(*m.smallest), '\0');
      auto content = GetCodec(CodecId::kZstd).Decode(zeros, *blob, f.img->SizeAt(f.entry));
      if (!content.ok()) return AtEntry(content.status(), f.img->path(), f.img->PathAt(f.entry));
      if (Sha256(*content) != f.img->DigestAt(f.entry))
        return absl::DataLossError(StrCat(f.img->path(), ": /", f.img->PathAt(f.entry),
                                          ": content does not match its sha256 (corrupt image)"));
      std::string_view v = held.emplace_back(std::move(*blob));
      steps.push_back({CodecId::kZstd, false, f.img->SizeAt(f.entry), v, v.size()});
    }
    chain_base = m.a.DigestAt(*m.smallest);
    res->on_base = true;
  }
  for (const Link& l : res->deltas)
    if (auto s = add(l); !s.ok()) return s;
  if (res->on_base) {
    if (steps.size() == 1 && !steps[0].located && res->deltas.size() == 1) {  // decodes against A as it is
      out.recipe = res->deltas[0].recipe;
      out.blob = std::move(held[0]);
      return out;
    }
    if (steps.size() > kMaxChainSteps)
      return absl::FailedPreconditionError(
          StrCat(m.d2.path(), ": /", path, ": would need a chained patch of ", steps.size(), " steps (at most ",
                 kMaxChainSteps, "); merge with A's content instead (without --compose)"));
    uint64_t bytes = 0;
    bool any_packed = false;
    for (const ChainStep& s : steps) bytes += s.patch.size() + 12, any_packed |= s.packed && !s.located;
    // Raw pack-form steps keep a pack's compression as long as the member
    // fits a pack. Other steps are compressed already: only a chain of a few
    // bytes (steps left in packs) is packed, with its neighbours; compressing
    // the others again gains nothing (debian: a 64 KiB limit cost 0.1 s of
    // level-19 compression and 1.5 KB more).
    bool packed = m.options.pack_small_blobs &&
                  (bytes <= kComposeChainPackMax || (any_packed && bytes <= kPackRawMax));
    out.recipe = Recipe{Recipe::Kind::kDelta, CodecId::kChain, chain_base, {}};
    out.recipe.packed = packed;
    out.blob = MakeChainPatch(steps, packed);
    return out;
  }
  // A full blob with patches on top and no file in A to name as a chain's
  // base: rebuild C's content and store it whole.
  auto cur = ReadFull(*res->full, nullptr);
  if (!cur.ok()) return cur.status();
  for (size_t k = 0; k < steps.size(); ++k) {
    if (steps[k].stored) {
      *cur = std::string(steps[k].patch);
      continue;
    }
    auto next = GetCodec(steps[k].codec).DecodeForm(*cur, steps[k].patch, steps[k].out_size, steps[k].packed);
    if (!next.ok()) {
      const Link& l = res->deltas.back();
      return AtEntry(next.status(), l.img->path(), l.img->PathAt(l.entry));
    }
    *cur = std::move(*next);
  }
  if (Sha256(*cur) != m.d2.DigestAt(i))
    return absl::DataLossError(StrCat(m.d2.path(), ": /", path,
                                      ": rebuilt content does not match its sha256 (corrupt delta)"));
  out.reencoded = true;
  out.recipe = Recipe{Recipe::Kind::kFull, CodecId::kZstd, {}, {}};
  if (m.options.pack_small_blobs && cur->size() <= kPackMemberMax) {
    out.recipe.packed = true;
    out.blob = std::move(*cur);
    return out;
  }
  auto z = CompressFullBlob(*cur, m.options.zstd_level);
  if (!z.ok()) return AtEntry(z.status(), m.d2.path(), path);
  out.blob = std::move(*z);
  return out;
}

// The entry of D1 or D2 whose packed member C's content `res` is as it is
// (a packed full member, or a packed patch against A's content), if any.
std::optional<Link> CopiedMember(const Resolution& res) {
  if (res.full && res.deltas.empty() && res.full->recipe.packed) return res.full;
  if (res.on_base && !res.full && res.deltas.size() == 1 && Located(res.deltas[0])) return res.deltas[0];
  return std::nullopt;
}

// Marks the packs of D1 or D2 that link `l`'s steps lie in: its own member,
// or the steps a chained patch of a merged delta left in packs.
absl::Status UsePacks(const Link& l, CopiedPacks* packs) {
  if (Located(l)) packs->Use(l.img, l.recipe.pack);
  if (l.recipe.codec != CodecId::kChain || !l.img->header().placed_packs) return absl::OkStatus();
  auto p = l.img->ReadStoredPayload(l.recipe);
  if (!p.ok()) return AtEntry(p.status(), l.img->path(), l.img->PathAt(l.entry));
  auto steps = ParseChainPatch(*p, l.recipe.packed);
  if (!steps.ok()) return AtEntry(steps.status(), l.img->path(), l.img->PathAt(l.entry));
  for (const ChainStep& st : *steps) {
    if (!st.located) continue;
    if (st.pack >= l.img->pack_count())
      return AtEntry(absl::DataLossError(StrCat("chained patch: a step in pack ", st.pack, " of ",
                                                l.img->pack_count())),
                     l.img->path(), l.img->PathAt(l.entry));
    packs->Use(l.img, st.pack);
  }
  return absl::OkStatus();
}

// A copied member's content and the output entry it is for.
struct MemberCopy {
  size_t entry;
  Link link;
};

// Checks the members of one pack of D1 or D2 that the merged delta keeps
// where they are (the pack decompressed once, not once per member): each in
// bounds, each full member against its digest.
absl::Status CheckMembers(const CdimgImage& img, uint32_t pack, const std::vector<MemberCopy>& copies) {
  auto raw = img.ReadPack(pack);
  if (!raw.ok()) return Annotate(raw.status(), img.path());
  for (const MemberCopy& c : copies) {
    const Recipe& r = c.link.recipe;
    if (r.blob.offset > raw->size() || r.blob.length > raw->size() - r.blob.offset)
      return AtEntry(absl::OutOfRangeError(StrCat("member [", r.blob.offset, ", +", r.blob.length,
                                                  ") lies outside its pack")),
                     img.path(), img.PathAt(c.link.entry));
    std::string_view member = std::string_view(*raw).substr(r.blob.offset, r.blob.length);
    if (r.kind == Recipe::Kind::kFull && Sha256(member) != img.DigestAt(c.link.entry))
      return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(c.link.entry),
                                        ": content does not match its sha256 (corrupt image)"));
  }
  return absl::OkStatus();
}

using MembersByPack = std::map<std::pair<const CdimgImage*, uint32_t>, std::vector<MemberCopy>>;

// CheckMembers for every pack, on `threads` threads (0: one per CPU); the
// first failure in pack order.
absl::Status CheckAllMembers(const MembersByPack& members, int threads) {
  std::vector<const MembersByPack::value_type*> packs;
  for (const auto& m : members) packs.push_back(&m);
  return internal::ParallelFor(packs.size(), threads, [&packs](size_t k) {
    const CdimgImage* img = packs[k]->first.first;
    uint32_t p = packs[k]->first.second;
    try {
      return CheckMembers(*img, p, packs[k]->second);
    } catch (const std::exception& e) {  // bad_alloc: never out of a pool thread
      return absl::ResourceExhaustedError(
          StrCat(img->path(), ": pack ", p, ": ", e.what(), " while checking it; free memory or use fewer threads"));
    }
  });
}

// The meta frame (config, index, inline pack) of a composed delta whose
// index is big is written at level 16 instead of 19: debian v1 ->
// debian-python v1 -> v2 (an 860 KB index): 0.15 s instead of 0.32 s of the
// whole merge's ~0.5 s, for ~1 KB of 15.3 MB (docs/benchmarks.md). A small
// one costs little time at 19, and there the bytes matter most.
int ComposeMetaLevel(const CdimgImage& d2) {
  return d2.header().index_raw_length >= (256u << 10) ? 16 : CdimgWriter::Options{}.index_zstd_level;
}

}  // namespace

absl::StatusOr<DeltaStats> ComposeDeltas(const ImageChain& base_chain, const std::string& d1_path,
                                         const std::string& d2_path, const std::string& out_path,
                                         const DiffOptions& options) {
  const CdimgImage& a = base_chain.top();
  if (auto s = CheckHeaders(a, d1_path, d2_path); !s.ok()) return s;
  // Opening D1 and D2 needs A's and B's index (their meta is compressed
  // against the parent's): A's chain is read for its index only.
  auto d1 = CdimgImage::Open(d1_path, &a);
  if (!d1.ok()) return d1.status();
  auto d2 = CdimgImage::Open(d2_path, d1->get());
  if (!d2.ok()) return d2.status();
  OldTree old(a);
  std::vector<Entry> entries = delta_internal::AllEntries(**d2);
  ComposeContext m{a, **d1, **d2, old, IndexBlobs(**d1), IndexBlobs(**d2), options, SmallestFile(a), nullptr, {}};
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].type == EntryType::kRegular && entries[i].size > 0) m.first_in_c.emplace(entries[i].digest, i);
  std::vector<Recipe> recipes(entries.size());
  std::vector<BlobJob> jobs;
  // Packed members C keeps as they are, by source pack: they stay where they
  // are in the copied packs, each full member checked once its pack is read.
  MembersByPack members;
  CopiedPacks packs;
  m.packs = &packs;
  std::unordered_set<Digest, DigestHash> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular) continue;
    Recipe& r = recipes[i];
    if (e.size == 0) {
      r.kind = Recipe::Kind::kEmpty;
    } else if (!seen.insert(e.digest).second || old.Has(e.digest)) {
      r.kind = Recipe::Kind::kBase;
    } else {
      auto res = Resolve(m, e.digest, i);
      if (!res.ok()) return res.status();
      if (auto l = CopiedMember(*res)) {
        members[{l->img, l->recipe.pack}].push_back({i, *l});
        packs.Use(l->img, l->recipe.pack);
        continue;
      }
      // The packs ComposeOne's steps will name (see there).
      if (!Rebuilds(m, *res)) {
        if (res->full && res->full->recipe.packed) packs.Use(res->full->img, res->full->recipe.pack);
        for (const Link& l : res->deltas)
          if (auto s = UsePacks(l, &packs); !s.ok()) return s;
      }
      jobs.push_back({i, e.size, 3 * e.size + (64ull << 20), [&m, i](Helpers&) { return ComposeOne(m, i); }});
    }
  }
  packs.Assign(m.d1, m.d2);
  if (auto s = CheckAllMembers(members, options.threads); !s.ok()) return s;
  for (const auto& [pack, copies] : members) {
    for (const MemberCopy& c : copies) {
      CopiedPacks::Place to = *packs.Map(pack.first, pack.second);
      recipes[c.entry] = c.link.recipe;
      recipes[c.entry].pack = to.pack;
      recipes[c.entry].blob.offset += to.shift;
    }
  }
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool,
                                       RunOptionsOf(options, &entries));
  if (!blobs.ok()) return blobs.status();
  return delta_internal::WriteDelta(out_path, a, m.d2.config(), entries, std::move(recipes), *blobs, **spool,
                                    options.threads, &packs.layout(), ComposeMetaLevel(m.d2));
}

absl::StatusOr<DeltaStats> MergeDeltas(const ImageChain& base_chain, const std::string& d1_path,
                                       const std::string& d2_path, const std::string& out_path,
                                       const DiffOptions& options) {
  const CdimgImage& a = base_chain.top();
  if (auto s = CheckHeaders(a, d1_path, d2_path); !s.ok()) return s;
  std::vector<std::string> paths = ChainPaths(base_chain);
  paths.push_back(d1_path);
  auto chain = ImageChain::Open(d2_path, paths);
  if (!chain.ok()) return chain.status();
  const ImageChain& c = **chain;
  OldTree old(a);
  MergeContext m{base_chain, c, c.image(c.depth() - 2), c.top(), old, {}, {}, options, nullptr, {}};
  m.blobs1 = IndexBlobs(m.d1);
  m.blobs2 = IndexBlobs(m.d2);
  std::vector<Entry> entries = delta_internal::AllEntries(c.top());
  Twins twins(entries, old);
  m.twins = &twins;
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].type == EntryType::kRegular && entries[i].size > 0) m.first_in_c.emplace(entries[i].digest, i);
  std::vector<Recipe> recipes;
  std::vector<BlobJob> jobs = PlanMerge(m, entries, &recipes);
  auto spool = delta_internal::Spool::Create(out_path);
  if (!spool.ok()) return spool.status();
  auto blobs = delta_internal::RunJobs(std::move(jobs), **spool,
                                       RunOptionsOf(options, &entries));
  if (!blobs.ok()) return blobs.status();
  return delta_internal::WriteDelta(out_path, a, c.top().config(), entries, std::move(recipes), *blobs, **spool,
                                    options.threads);
}

}  // namespace d4c
