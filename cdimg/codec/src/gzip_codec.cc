#include "gzip_codec.h"

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <vector>

#include "d4c/base/strcat.h"
#include "d4c/base/varint.h"
#include "d4c/base/zstd.h"
#include "d4c/deflate.h"

namespace d4c::codec_internal {

namespace {

constexpr uint8_t kStandalone = 1, kPack = 2;
// The zip forms: a zip archive's deflated members inflated in place.
constexpr uint8_t kZipStandalone = 3, kZipPack = 4;
constexpr uint8_t kEngineZlib = 1, kEngineGnu = 2;
// Inner codecs tried, by inflated base + target size: zstd never won above
// 4 MiB (codec_policy.cc), bsdiff costs ~9 bytes of memory per base byte.
constexpr uint64_t kZstdMax = 4 << 20;
constexpr uint64_t kBsdiffMax = 64 << 20;
// GNU gzip recompresses the whole file per guess: above this, only the level
// the header suggests and the default are tried.
constexpr uint64_t kFewGnuGuesses = 1 << 20;

absl::Status Bad(std::string_view what) { return absl::DataLossError(StrCat("gzip patch: ", what)); }
absl::Status NotApplicable(std::string_view what) {
  return absl::FailedPreconditionError(StrCat("gzip codec not applicable: ", what));
}

struct Recipe {
  uint8_t engine = 0;
  uint8_t level = 0;
  uint8_t mem_level = 0;
};

// The levels to try, the one the header's XFL suggests first (2: the
// slowest, level 9; 4: the fastest, level 1; else the default, 6).
std::vector<int> Levels(uint8_t xfl) {
  int first = xfl == 2 ? 9 : xfl == 4 ? 1 : 6;
  std::vector<int> out{first};
  for (int l : {6, 9, 1, 5, 7, 8, 4, 3, 2})
    if (l != first) out.push_back(l);
  return out;
}

absl::StatusOr<std::string> Deflate(const Recipe& r, std::string_view raw, uint64_t max_out) {
  if (r.engine == kEngineZlib) return deflate::Zlib(raw, {r.level, r.mem_level}, max_out);
  if (r.engine == kEngineGnu) {
    if (r.mem_level != 0) return Bad("GNU gzip recipe with a memLevel");
    auto s = deflate::GnuGzip(raw, r.level);
    if (s.ok() && s->size() > max_out) return Bad("recompressed stream too long");
    return s;
  }
  return Bad(StrCat("unknown deflate engine ", r.engine));
}

// A recipe that rebuilds `g.stream` exactly, verified by compressing.
std::optional<Recipe> FindRecipe(const deflate::GzipFile& g) {
  uint8_t flags = static_cast<uint8_t>(g.header[3]);
  bool no_mtime = g.header[4] == 0 && g.header[5] == 0 && g.header[6] == 0 && g.header[7] == 0;
  uint8_t xfl = static_cast<uint8_t>(g.header[8]);
  std::vector<int> levels = Levels(xfl);
  auto gnu = [&]() -> std::optional<Recipe> {
    size_t tries = g.raw.size() > kFewGnuGuesses ? 2 : levels.size();
    for (size_t i = 0; i < tries; ++i) {
      auto s = deflate::GnuGzip(g.raw, levels[i]);
      if (!s.ok()) return std::nullopt;  // not available: no other level will be
      if (*s == g.stream) return Recipe{kEngineGnu, static_cast<uint8_t>(levels[i]), 0};
    }
    return std::nullopt;
  };
  auto zlib = [&]() -> std::optional<Recipe> {
    for (int mem : {8, 9})
      for (int l : levels)
        if (deflate::ZlibReproduces(g.raw, {l, mem}, g.stream))
          return Recipe{kEngineZlib, static_cast<uint8_t>(l), static_cast<uint8_t>(mem)};
    return std::nullopt;
  };
  // `gzip -n` (no name, no mtime: Debian's packaging) is most likely GNU gzip.
  bool gnu_first = !(flags & 8) && no_mtime;
  if (gnu_first) {
    if (auto r = gnu()) return r;
    return zlib();
  }
  if (auto r = zlib()) return r;
  return gnu();
}

// The smallest inner patch: (codec, patch). Pack-form patches are weighed by
// what the pack's zstd frame will make of them, as diff's auto does.
// xdelta3 runs only where zstd does not, as in diff's auto with packs: on
// debian-tomcat's 223 inner patches (jars and changelogs) it won 4, by 224
// bytes in all, for ~5% of the pair's diff time. `zstd` false (zip
// archives): zstd 19 does not run either. On the jars it won where bsdiff or
// relcopy came within a few bytes (debian-tomcat: +566 B of 729,009 without
// it) and took ~20% of the pair's diff time, which then stayed above
// xdelta3's on the whole tar (1.03x); on gzip'd changelogs it wins often.
absl::StatusOr<std::pair<CodecId, std::string>> BestInner(std::string_view base, std::string_view raw, bool pack,
                                                          bool zstd = true) {
  std::vector<CodecId> ids;
  uint64_t in = base.size() + raw.size();
  if (zstd && in <= kZstdMax) ids.push_back(CodecId::kZstd);
  if (in <= kBsdiffMax) ids.push_back(CodecId::kBsdiff);
  if (in > kZstdMax) ids.push_back(CodecId::kXdelta3);
  if (pack) ids.push_back(CodecId::kRelcopy);
  std::optional<std::pair<CodecId, std::string>> best;
  uint64_t best_cost = 0;
  absl::Status last = absl::InternalError("no inner codec");
  for (CodecId id : ids) {
    const DeltaCodec& c = GetCodec(id);
    auto p = pack ? c.EncodeForPack(base, raw) : c.Encode(base, raw);
    if (!p.ok()) {
      last = p.status();
      continue;
    }
    uint64_t cost = p->size();
    if (pack && (id == CodecId::kXdelta3 || id == CodecId::kRelcopy)) {
      auto z = ZstdCompressFrame(*p, 19, 0);
      if (z.ok() && z->size() < cost) cost = z->size();
    }
    if (!best || cost < best_cost) {
      best.emplace(id, std::move(*p));
      best_cost = cost;
    }
  }
  if (!best) return last;
  return std::move(*best);
}

// The zlib recipe that reproduces the archive's largest deflated member
// (the most telling one; a jar's members are all made alike), or none.
std::optional<deflate::ZlibParams> ZipRecipe(std::string_view target,
                                             const std::vector<deflate::ZipMember>& members) {
  auto by_size = [](const deflate::ZipMember& a, const deflate::ZipMember& b) { return a.stored < b.stored; };
  auto largest = std::max_element(members.begin(), members.end(), by_size);
  std::string_view stream = target.substr(largest->offset, largest->stored);
  if (largest->raw > deflate::MaxInflated(largest->stored)) return std::nullopt;
  auto raw = deflate::InflateExact(stream, largest->raw);
  if (!raw.ok()) return std::nullopt;
  for (int mem : {8, 9})
    for (int l : Levels(0))
      if (deflate::ZlibReproduces(*raw, {l, mem}, stream)) return deflate::ZlibParams{l, mem};
  return std::nullopt;
}

// The base archive's inflated members by content, for base kind 2: a target
// member with the content of one of them (the first in file order with that
// content) takes that member's deflate stream as it is, instead of
// compressing it again. An update leaves most members of a jar as they were:
// debian-tomcat's 10.1.55 -> 10.1.60 jars keep 1,632 of 3,592 (39% of the
// inflated bytes).
class BaseStreams {
 public:
  BaseStreams(std::string_view base, std::string_view expanded,
              const std::vector<deflate::ExpandedZipMember>& members) {
    by_content_.reserve(members.size());
    for (const deflate::ExpandedZipMember& m : members)
      by_content_.emplace(expanded.substr(m.at, m.member.raw), base.substr(m.member.offset, m.member.stored));
  }
  // The stream of the base's member with this content, if it has one.
  std::optional<std::string_view> Find(std::string_view content) const {
    auto it = by_content_.find(content);
    if (it == by_content_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::unordered_map<std::string_view, std::string_view> by_content_;
};

// A zip target's expanded form and its member table (format.md).
struct ExpandedZip {
  std::string expanded, table;
  uint64_t count = 0;
  uint64_t reused = 0;  // of them, members that take a base member's stream
};

// Expands the members `recipe` reproduces; with `reuse`, also those that take
// a base member's stream. None when a member has a base member's content but
// not its stream (the base was compressed otherwise): then base kind 2 cannot
// describe the target.
std::optional<ExpandedZip> ExpandTarget(std::string_view target, const std::vector<deflate::ZipMember>& members,
                                        const deflate::ZlibParams& recipe, const BaseStreams* reuse) {
  ExpandedZip x;
  uint64_t pos = 0;
  for (const deflate::ZipMember& m : members) {
    if (m.raw > deflate::MaxInflated(m.stored) || x.expanded.size() + (m.offset - pos) + m.raw > deflate::kMaxRaw)
      continue;
    std::string_view stream = target.substr(m.offset, m.stored);
    auto raw = deflate::InflateExact(stream, m.raw);
    if (!raw.ok()) continue;
    if (auto same = reuse ? reuse->Find(*raw) : std::nullopt) {
      if (*same != stream) return std::nullopt;
      ++x.reused;
    } else if (!deflate::ZlibReproduces(*raw, recipe, stream)) {
      continue;
    }
    PutVarint(&x.table, m.offset - pos);
    PutVarint(&x.table, m.stored);
    PutVarint(&x.table, m.raw);
    x.expanded.append(target.substr(pos, m.offset - pos));
    x.expanded += *raw;
    pos = m.offset + m.stored;
    ++x.count;
  }
  x.expanded.append(target.substr(pos));
  return x;
}

absl::StatusOr<std::string> EncodeZip(std::string_view base, std::string_view target, bool pack) {
  auto members = deflate::DeflatedZipMembers(target);
  if (!members.ok()) return NotApplicable(Msg(members.status().message()));
  if (members->empty()) return NotApplicable("the zip archive has no deflated member");
  std::optional<deflate::ZlibParams> recipe = ZipRecipe(target, *members);
  if (!recipe) return NotApplicable("no zlib recipe reproduces the archive's largest member");
  std::optional<std::string> base_expanded;
  std::vector<deflate::ExpandedZipMember> base_members;
  if (deflate::LooksZip(base)) {
    auto e = deflate::ExpandZip(base, deflate::kMaxRaw, &base_members);
    if (e.ok()) base_expanded = std::move(*e);
  }
  std::optional<ExpandedZip> x;
  uint8_t base_kind = base_expanded ? 1 : 0;
  if (base_expanded && !base_members.empty()) {
    BaseStreams streams(base, *base_expanded, base_members);
    x = ExpandTarget(target, *members, *recipe, &streams);
    // Nothing reused: every member went through the recipe, as kind 1 has it.
    if (x) base_kind = x->reused > 0 ? 2 : 1;
  }
  if (!x) x = ExpandTarget(target, *members, *recipe, nullptr);
  if (x->count == 0) return NotApplicable("the recipe reproduces none of the archive's members");
  auto inner = BestInner(base_expanded ? std::string_view(*base_expanded) : base, x->expanded, pack, false);
  if (!inner.ok()) return inner.status();
  std::string out;
  out.push_back(static_cast<char>(pack ? kZipPack : kZipStandalone));
  out.push_back(static_cast<char>(base_kind));
  PutVarint(&out, x->expanded.size());
  out.push_back(static_cast<char>(recipe->level));
  out.push_back(static_cast<char>(recipe->mem_level));
  PutVarint(&out, x->count);
  out += x->table;
  out.push_back(static_cast<char>(inner->first));
  out += inner->second;
  return out;
}

// `pos` is past the form byte.
absl::StatusOr<std::string> DecodeZip(std::string_view base, std::string_view patch, size_t pos,
                                      uint64_t target_size, bool pack) {
  auto byte = [&](uint8_t* v) {
    if (pos >= patch.size()) return false;
    *v = static_cast<uint8_t>(patch[pos++]);
    return true;
  };
  uint8_t base_kind = 0, level = 0, mem_level = 0;
  uint64_t expanded_size = 0, count = 0;
  if (!byte(&base_kind) || base_kind > 2) return Bad("bad base kind");
  if (!GetVarint(patch, &pos, &expanded_size)) return Bad("truncated header");
  if (expanded_size > deflate::kMaxRaw || expanded_size > deflate::MaxInflated(target_size))
    return Bad("expanded size out of range");
  if (!byte(&level) || !byte(&mem_level)) return Bad("truncated header");
  if (level < 1 || level > 9 || mem_level < 1 || mem_level > 9) return Bad("zlib recipe out of range");
  if (!GetVarint(patch, &pos, &count) || count == 0 || count > patch.size() - pos)
    return Bad("bad member count");
  struct Member {
    uint64_t gap, stored, raw;
  };
  std::vector<Member> members;
  members.reserve(count);
  uint64_t in = 0, out_size = 0;  // bytes of the expanded target and of the target they account for
  for (uint64_t k = 0; k < count; ++k) {
    Member m{};
    if (!GetVarint(patch, &pos, &m.gap) || !GetVarint(patch, &pos, &m.stored) || !GetVarint(patch, &pos, &m.raw))
      return Bad("truncated member table");
    if (m.gap > target_size - out_size || m.stored > target_size - out_size - m.gap)
      return Bad("member table exceeds the target size");
    if (m.gap > expanded_size - in || m.raw > expanded_size - in - m.gap || m.raw > deflate::MaxInflated(m.stored))
      return Bad("member table exceeds the expanded size");
    in += m.gap + m.raw;
    out_size += m.gap + m.stored;
    members.push_back(m);
  }
  if (expanded_size - in != target_size - out_size) return Bad("expanded and target sizes disagree");
  uint8_t inner_id = 0;
  if (!byte(&inner_id) || inner_id < 1 || inner_id > 4) return Bad("unknown inner codec id");
  std::string base_expanded;
  std::vector<deflate::ExpandedZipMember> base_members;
  if (base_kind >= 1) {
    auto e = deflate::ExpandZip(base, deflate::kMaxRaw, base_kind == 2 ? &base_members : nullptr);
    if (!e.ok()) return Bad(StrCat("base: ", Msg(e.status().message()), " (wrong base?)"));
    base_expanded = std::move(*e);
  }
  const DeltaCodec& inner = GetCodec(static_cast<CodecId>(inner_id));
  auto expanded = inner.DecodeForm(base_kind >= 1 ? std::string_view(base_expanded) : base, patch.substr(pos),
                                   expanded_size, pack);
  if (!expanded.ok()) return Bad(StrCat("inner ", CodecName(inner.id()), ": ", Msg(expanded.status().message())));
  if (expanded->size() != expanded_size) return Bad("inner patch gave the wrong expanded size");
  std::optional<BaseStreams> reuse;
  if (base_kind == 2) reuse.emplace(base, base_expanded, base_members);
  else base_expanded = std::string();  // free before the output grows
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  const deflate::ZlibParams recipe{level, mem_level};
  std::string_view e = *expanded;
  uint64_t from = 0, to = 0;
  for (const Member& m : members) {
    std::copy_n(e.data() + from, m.gap, out->data() + to);
    from += m.gap;
    to += m.gap;
    std::string_view content = e.substr(from, m.raw);
    if (auto same = reuse ? reuse->Find(content) : std::nullopt) {
      if (same->size() != m.stored) return Bad("a reused member's stream size differs from the archive's");
      std::copy(same->begin(), same->end(), out->data() + to);
    } else {
      auto stream = deflate::Zlib(content, recipe, m.stored);
      if (!stream.ok()) return Bad(StrCat("recompressing a member: ", Msg(stream.status().message())));
      if (stream->size() != m.stored) return Bad("a recompressed member's size differs from the archive's");
      std::copy(stream->begin(), stream->end(), out->data() + to);
    }
    from += m.raw;
    to += m.stored;
  }
  std::copy_n(e.data() + from, e.size() - from, out->data() + to);
  return out;
}

}  // namespace

absl::StatusOr<std::string> GzipCodec::EncodeForm(std::string_view base, std::string_view target, bool pack) const {
  if (deflate::LooksZip(target)) return EncodeZip(base, target, pack);
  if (!deflate::LooksGzip(target)) return NotApplicable("the target is neither a gzip file nor a zip archive");
  auto t = deflate::SplitGzip(target, deflate::kMaxRaw);
  if (!t.ok()) return NotApplicable(Msg(t.status().message()));
  std::optional<Recipe> recipe = FindRecipe(*t);
  if (!recipe) return NotApplicable("no known compressor reproduces the target's deflate stream");
  std::optional<deflate::GzipFile> b;
  if (deflate::LooksGzip(base)) {
    auto s = deflate::SplitGzip(base, deflate::kMaxRaw);
    if (s.ok()) b = std::move(*s);
  }
  std::string_view inner_base = b ? std::string_view(b->raw) : base;
  auto inner = BestInner(inner_base, t->raw, pack);
  if (!inner.ok()) return inner.status();
  std::string out;
  out.push_back(static_cast<char>(pack ? kPack : kStandalone));
  out.push_back(static_cast<char>(b ? 1 : 0));
  if (b) PutVarint(&out, b->raw.size());
  PutVarint(&out, t->raw.size());
  out.push_back(static_cast<char>(recipe->engine));
  out.push_back(static_cast<char>(recipe->level));
  out.push_back(static_cast<char>(recipe->mem_level));
  PutVarint(&out, t->header.size());
  out += t->header;
  out.push_back(static_cast<char>(inner->first));
  out += inner->second;
  return out;
}

absl::StatusOr<std::string> GzipCodec::DecodeForm(std::string_view base, std::string_view patch,
                                                  uint64_t target_size, bool pack) const {
  size_t pos = 0;
  auto byte = [&](uint8_t* v) {
    if (pos >= patch.size()) return false;
    *v = static_cast<uint8_t>(patch[pos++]);
    return true;
  };
  uint8_t form = 0, base_kind = 0;
  if (!byte(&form)) return Bad("empty patch");
  if (form == (pack ? kZipPack : kZipStandalone)) return DecodeZip(base, patch, pos, target_size, pack);
  if (form != (pack ? kPack : kStandalone))
    return Bad(pack ? "not a pack-form patch (form byte)" : "not a standalone patch (form byte)");
  if (!byte(&base_kind) || base_kind > 1) return Bad("bad base kind");
  std::string base_raw;
  if (base_kind == 1) {
    uint64_t n = 0;
    if (!GetVarint(patch, &pos, &n)) return Bad("truncated header");
    if (n > deflate::kMaxRaw || n > deflate::MaxInflated(base.size())) return Bad("base inflated size out of range");
    auto hlen = deflate::GzipHeaderLength(base);
    if (!hlen.ok() || base.size() - *hlen < 8) return Bad("the base is not a gzip file (wrong base?)");
    auto r = deflate::InflateExact(base.substr(*hlen, base.size() - *hlen - 8), n);
    if (!r.ok()) return Bad(StrCat("base: ", Msg(r.status().message()), " (wrong base?)"));
    base_raw = std::move(*r);
  }
  uint64_t raw_size = 0;
  if (!GetVarint(patch, &pos, &raw_size)) return Bad("truncated header");
  if (raw_size > deflate::kMaxRaw || raw_size > deflate::MaxInflated(target_size))
    return Bad("inflated size out of range");
  Recipe r;
  if (!byte(&r.engine) || !byte(&r.level) || !byte(&r.mem_level)) return Bad("truncated header");
  if (r.level < 1 || r.level > 9) return Bad("level out of range");
  uint64_t hlen = 0;
  if (!GetVarint(patch, &pos, &hlen) || hlen > patch.size() - pos) return Bad("truncated gzip header");
  std::string_view header = patch.substr(pos, hlen);
  pos += hlen;
  auto parsed = deflate::GzipHeaderLength(header);
  if (!parsed.ok() || *parsed != hlen) return Bad("invalid gzip header");
  if (target_size < hlen + 8) return Bad("target too small for its gzip header");
  uint8_t inner_id = 0;
  if (!byte(&inner_id) || inner_id < 1 || inner_id > 4) return Bad("unknown inner codec id");
  const DeltaCodec& inner = GetCodec(static_cast<CodecId>(inner_id));
  auto raw = inner.DecodeForm(base_kind == 1 ? std::string_view(base_raw) : base, patch.substr(pos), raw_size, pack);
  if (!raw.ok()) return Bad(StrCat("inner ", CodecName(inner.id()), ": ", Msg(raw.status().message())));
  base_raw = std::string();  // free before the output grows
  auto stream = Deflate(r, *raw, target_size - hlen - 8);
  if (!stream.ok()) return Bad(StrCat("recompressing: ", Msg(stream.status().message())));
  if (stream->size() != target_size - hlen - 8) return Bad("recompressed size differs from the target's");
  auto out = AllocateWholeBuffer(target_size);
  if (!out.ok()) return out.status();
  char* p = out->data();
  std::copy(header.begin(), header.end(), p);
  std::copy(stream->begin(), stream->end(), p + hlen);
  std::string trailer;
  PutLE(&trailer, deflate::Crc32(*raw), 4);
  PutLE(&trailer, static_cast<uint32_t>(raw->size()), 4);
  std::copy(trailer.begin(), trailer.end(), p + hlen + stream->size());
  return out;
}

}  // namespace d4c::codec_internal
