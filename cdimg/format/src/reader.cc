#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "d4c/base/mutex.h"
#include "d4c/base/io.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "d4c/base/zstd.h"
#include "d4c/cdimg.h"
#include "d4c/codec.h"
#include "compact_meta.h"
#include "index_codec.h"
#include "layout.h"
#include "d4c/record.h"

namespace d4c {


const char* RecipeKindName(Recipe::Kind k) {
  switch (k) {
    case Recipe::Kind::kNone: return "none";
    case Recipe::Kind::kEmpty: return "empty";
    case Recipe::Kind::kFull: return "full";
    case Recipe::Kind::kDelta: return "delta";
    case Recipe::Kind::kBase: return "base";
  }
  return "unknown";
}

// Thread-safety: immutable after Open, except the pack cache below
// (pack_mu, never held while reading or decompressing); reads use pread on
// the shared fd, so every const method may be called from several threads.
struct CdimgImage::State {
  std::string path;
  int fd = -1;
  ImageHeader header;
  uint64_t blobs_offset = 0;
  std::string config;
  internal::DecodedIndex index;
  std::shared_ptr<const std::string> inline_pack;  // compact meta: the last pack, raw
  // The last packs read, decompressed, most recent first (packs are small;
  // neighbours are read together, and a chained patch of a composed delta
  // reads its steps from two or three packs per file).
  static constexpr size_t kCachedPacks = 4;
  Mutex pack_mu;
  std::vector<std::pair<uint32_t, std::shared_ptr<const std::string>>> cached_packs ABSL_GUARDED_BY(pack_mu);
  ~State() {
    if (fd >= 0) close(fd);
  }
};

namespace {

absl::Status Bad(std::string_view path, std::string_view what) {
  return absl::DataLossError(StrCat(path, ": not a valid cdimg: ", what));
}

// Checks the lead (magic, version, flags) and parses and checks the tail; the
// sections must tile the file exactly.
absl::StatusOr<ImageHeader> ParseHeader(std::string_view path, std::string_view lead, std::string_view end,
                                        uint64_t file_size) {
  if (lead.size() < internal::kLeadSize || std::memcmp(lead.data(), internal::kMagic, 8) != 0)
    return Bad(path, "bad magic (not a cdimg file)");
  ImageHeader h;
  h.version = static_cast<uint8_t>(lead[internal::kOffVersion]);
  if (h.version != internal::kFormatVersion)
    return absl::UnimplementedError(StrCat(path, ": cdimg format version ", h.version,
                                           " is not supported (this build reads version ",
                                           static_cast<unsigned>(internal::kFormatVersion),
                                           "; convert the image again)"));
  uint8_t flags = static_cast<uint8_t>(lead[internal::kOffFlags]);
  if (flags & ~(internal::kFlagDelta | internal::kFlagCompactMeta | internal::kFlagPlacedPacks |
                internal::kFlagLzmaMeta))
    return Bad(path, "unknown header flags (written by a newer build? update this one)");
  h.is_delta = flags & internal::kFlagDelta;
  h.compact_meta = flags & internal::kFlagCompactMeta;
  h.placed_packs = flags & internal::kFlagPlacedPacks;
  if (h.compact_meta && !h.is_delta) return Bad(path, "compact meta on a full image");
  if (h.placed_packs && !h.compact_meta) return Bad(path, "placed packs without compact meta");
  h.lzma_meta = flags & internal::kFlagLzmaMeta;
  if (h.lzma_meta && !h.compact_meta) return Bad(path, "LZMA meta without compact meta");
  // `end` holds the last bytes of the file; its last byte is the tail length.
  size_t tail_len = end.empty() ? 0 : static_cast<uint8_t>(end.back());
  if (tail_len < internal::kMinTailSize + (h.is_delta ? 32 : 0) || tail_len + 1 > end.size() ||
      internal::kLeadSize + tail_len + 1 > file_size)
    return Bad(path, "bad header tail (truncated file?)");
  std::string_view tail = end.substr(end.size() - 1 - tail_len, tail_len);
  std::string_view body = tail.substr(0, tail_len - internal::kChecksumSize);
  Digest sum = Sha256(std::string(lead.substr(0, internal::kLeadSize)) + std::string(body));
  if (std::memcmp(sum.data(), tail.data() + body.size(), internal::kChecksumSize) != 0)
    return Bad(path, "header checksum mismatch (truncated or corrupt file?)");
  std::memcpy(h.image_id.data(), body.data(), 32);
  size_t pos = 32;
  if (h.is_delta) {
    std::memcpy(h.parent_id.data(), body.data() + 32, 32);
    pos = 64;
  }
  if (!internal::GetVarint(body, &pos, &h.meta_length) || !internal::GetVarint(body, &pos, &h.config_length) ||
      !internal::GetVarint(body, &pos, &h.index_raw_length) || pos != body.size())
    return Bad(path, "malformed header tail");
  h.file_size = file_size;
  h.header_length = internal::kLeadSize + tail_len + 1;
  h.blobs_offset = internal::kLeadSize;
  if (h.meta_length > file_size - h.header_length) return Bad(path, "section out of bounds (truncated file?)");
  h.blobs_length = file_size - h.header_length - h.meta_length;
  if (h.config_length > kMaxConfigBytes) return Bad(path, "config section too large");
  if (h.index_raw_length > kMaxIndexRawBytes || h.meta_length > kMaxIndexRawBytes + kMaxConfigBytes)
    return Bad(path, "index too large");
  return h;
}

absl::StatusOr<ImageHeader> ReadRawHeader(const std::string& path, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < internal::kLeadSize) return Bad(path, "file shorter than the header (truncated?)");
  std::string lead(internal::kLeadSize, '\0');
  if (auto s = PReadAll(fd, lead.data(), lead.size(), 0, path); !s.ok()) return s;
  if (std::memcmp(lead.data(), internal::kMagic, 8) != 0) return Bad(path, "bad magic (not a cdimg file)");
  uint64_t n = std::min<uint64_t>(size - internal::kLeadSize, internal::kMaxTailSize + 1);
  std::string end(n, '\0');
  if (auto s = PReadAll(fd, end.data(), end.size(), size - n, path); !s.ok()) return s;
  return ParseHeader(path, lead, end, size);
}

int OpenReadOnly(const std::string& path) { return open(path.c_str(), O_RDONLY | O_CLOEXEC); }

}  // namespace

absl::StatusOr<ImageHeader> CdimgImage::ReadHeader(const std::string& path) {
  int fd = OpenReadOnly(path);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  auto r = ReadRawHeader(path, fd);
  close(fd);
  if (!r.ok()) return r.status();
  return *r;
}

absl::StatusOr<std::unique_ptr<CdimgImage>> CdimgImage::Open(const std::string& path,
                                                             const CdimgImage* parent) {
  std::unique_ptr<CdimgImage> img(new CdimgImage());
  img->s_ = std::make_unique<State>();
  State& s = *img->s_;
  s.path = path;
  s.fd = OpenReadOnly(path);
  if (s.fd < 0) return ErrnoStatus(errno, "open", path);
  auto raw = ReadRawHeader(path, s.fd);
  if (!raw.ok()) return raw.status();
  s.header = *raw;
  s.blobs_offset = raw->blobs_offset;
  std::string dict;
  if (s.header.is_delta) {
    if (!parent)
      return absl::FailedPreconditionError(StrCat(
          path, ": delta image needs its parent image ", DigestString(s.header.parent_id)));
    if (parent->header().image_id != s.header.parent_id)
      return absl::FailedPreconditionError(StrCat(
          path, ": delta image's parent is ", DigestString(s.header.parent_id), " but the base given is ",
          DigestString(parent->header().image_id), " (", parent->path(), ")"));
    dict = internal::MetaPrefix(*parent, s.header.compact_meta);
  }
  const bool compact = s.header.compact_meta;
  std::string stored(s.header.meta_length, '\0');
  uint64_t meta_at = s.header.blobs_offset + s.header.blobs_length;
  if (auto st = PReadAll(s.fd, stored.data(), stored.size(), meta_at, path); !st.ok()) return st;
  uint64_t meta_size = s.header.config_length + s.header.index_raw_length;
  std::string_view frame = stored;
  if (s.header.lzma_meta) {
    // The content's length, then an lzma patch of it against the prefix.
    size_t pos = 0;
    uint64_t n = 0;
    if (!internal::GetVarint(frame, &pos, &n) || n < meta_size || n > meta_size + kMaxPackRawBytes)
      return Bad(path, "LZMA meta: bad content length");
    meta_size = n;
    frame.remove_prefix(pos);
  } else if (compact) {
    // An inline pack follows the index: the frame records the total.
    auto n = internal::MetaContentSize(frame, meta_size + kMaxPackRawBytes);
    if (!n.ok()) return Bad(path, Msg(n.status().message()));
    if (*n < meta_size) return Bad(path, "config/index frame too short");
    meta_size = *n;
  }
  auto meta = s.header.lzma_meta ? GetCodec(CodecId::kLzma).Decode(dict, frame, meta_size)
                                 : internal::DecompressMeta(frame, dict, meta_size);
  if (!meta.ok()) {
    return Bad(path, StrCat(s.header.lzma_meta ? "config/index (LZMA): " : "", Msg(meta.status().message()),
                            s.header.lzma_meta && s.header.is_delta ? " (wrong parent image?)" : ""));
  }
  if (compact) {
    auto config = internal::UnpackConfigDigests(meta->substr(0, s.header.config_length), kMaxConfigBytes);
    if (!config.ok()) return Bad(path, Msg(config.status().message()));
    s.config = std::move(*config);
  } else {
    s.config = meta->substr(0, s.header.config_length);
  }
  internal::SamePathBase same_path;
  if (compact) same_path = internal::SamePathIn(*parent);
  auto idx = internal::DecodeIndex(meta->substr(s.header.config_length, s.header.index_raw_length),
                                   s.header.blobs_length, s.header.image_id, compact ? &same_path : nullptr,
                                   s.header.placed_packs);
  if (!idx.ok()) return Bad(path, Msg(idx.status().message()));
  s.index = std::move(*idx);
  uint64_t inline_length = 0;
  if (!s.index.packs.empty() && s.index.packs.back().length == 0) inline_length = s.index.packs.back().raw_length;
  uint64_t inline_at = s.header.config_length + s.header.index_raw_length;
  if (meta->size() - inline_at != inline_length) return Bad(path, "inline pack does not fill the meta frame");
  if (inline_length) s.inline_pack = std::make_shared<const std::string>(meta->substr(inline_at));
  return img;
}

CdimgImage::~CdimgImage() = default;

const std::string& CdimgImage::path() const { return s_->path; }
const ImageHeader& CdimgImage::header() const { return s_->header; }
size_t CdimgImage::size() const { return s_->index.record_offsets.size(); }
std::string_view CdimgImage::config() const { return s_->config; }
std::string_view CdimgImage::metadata() const { return s_->index.metadata; }

std::string_view CdimgImage::PathAt(size_t i) const {
  return internal::RecordPath(s_->index.metadata, s_->index.record_offsets[i]);
}

EntryType CdimgImage::TypeAt(size_t i) const {
  return internal::RecordType(s_->index.metadata, s_->index.record_offsets[i]);
}

Entry CdimgImage::EntryAt(size_t i) const {
  // Records were fully validated at Open, so this parse cannot fail.
  auto r = internal::ParseRecord(s_->index.metadata, s_->index.record_offsets[i]);
  return internal::ToEntry(*r);
}

uint64_t CdimgImage::SizeAt(size_t i) const {
  return internal::ParseRecord(s_->index.metadata, s_->index.record_offsets[i])->size;
}

Digest CdimgImage::DigestAt(size_t i) const {
  Digest d{};
  auto r = internal::ParseRecord(s_->index.metadata, s_->index.record_offsets[i]);
  if (r->digest) std::memcpy(d.data(), r->digest, 32);
  return d;
}

Recipe CdimgImage::RecipeAt(size_t i) const {
  const internal::RecipeSlot& slot = s_->index.recipes[i];
  Recipe r;
  r.kind = slot.kind;
  if (slot.kind == Recipe::Kind::kFull || slot.kind == Recipe::Kind::kDelta) {
    r.blob = {slot.offset, slot.length};
    r.packed = slot.packed;
    r.pack = slot.pack;
  }
  if (slot.kind == Recipe::Kind::kDelta) {
    r.codec = slot.codec;
    std::memcpy(r.base.data(), s_->index.BaseDigest(slot.base_ref), 32);
  }
  return r;
}

std::optional<size_t> CdimgImage::Find(std::string_view path) const {
  const auto& offs = s_->index.record_offsets;
  std::string_view meta = s_->index.metadata;
  auto it = std::lower_bound(offs.begin(), offs.end(), path, [&](uint32_t off, std::string_view p) {
    return PathLess(internal::RecordPath(meta, off), p);
  });
  if (it == offs.end() || internal::RecordPath(meta, *it) != path) return std::nullopt;
  return static_cast<size_t>(it - offs.begin());
}

size_t CdimgImage::SubtreeEnd(size_t i) const {
  std::string_view dir = PathAt(i);
  size_t n = size();
  if (dir.empty()) return n;
  size_t lo = i + 1, hi = n;  // first index in [lo, hi) not below dir
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    std::string_view p = PathAt(mid);
    bool below = p.size() > dir.size() && p[dir.size()] == '/' && p.substr(0, dir.size()) == dir;
    if (below) lo = mid + 1; else hi = mid;
  }
  return lo;
}

absl::StatusOr<std::string> CdimgImage::ReadBlob(const BlobRef& ref) const {
  if (ref.offset > s_->header.blobs_length || ref.length > s_->header.blobs_length - ref.offset)
    return absl::OutOfRangeError(StrCat(s_->path, ": blob [", ref.offset, ", +", ref.length,
                                              ") outside the blob section"));
  auto out = AllocateWholeBuffer(ref.length);
  if (!out.ok()) return out.status();
  if (auto st = PReadAll(s_->fd, out->data(), out->size(), s_->blobs_offset + ref.offset, s_->path);
      !st.ok())
    return st;
  return out;
}

size_t CdimgImage::pack_count() const { return s_->index.packs.size(); }

BlobRef CdimgImage::PackBlob(uint32_t pack) const {
  const internal::PackSlot& p = s_->index.packs.at(pack);
  return {p.offset, p.length};
}

uint64_t CdimgImage::PackRawLength(uint32_t pack) const { return s_->index.packs.at(pack).raw_length; }

absl::StatusOr<std::string> CdimgImage::ReadPack(uint32_t pack) const {
  if (pack >= s_->index.packs.size())
    return absl::OutOfRangeError(StrCat(s_->path, ": pack ", pack, " does not exist"));
  return ReadStoredPayload(
      Recipe{Recipe::Kind::kFull, CodecId::kZstd, {}, {0, s_->index.packs[pack].raw_length}, true, pack});
}

absl::StatusOr<std::string> CdimgImage::ReadPayload(const Recipe& r) const {
  auto bytes = ReadStoredPayload(r);
  if (!bytes.ok() || !s_->header.placed_packs || r.kind != Recipe::Kind::kDelta || r.codec != CodecId::kChain)
    return bytes;
  // A chained patch of a placed image may leave steps in packs: copy them in.
  auto steps = ParseChainPatch(*bytes, r.packed);
  if (!steps.ok()) return Annotate(steps.status(), s_->path);
  std::vector<std::string> located(steps->size());
  bool any = false;
  for (size_t k = 0; k < steps->size(); ++k) {
    ChainStep& st = (*steps)[k];
    if (!st.located) continue;
    any = true;
    auto b = ReadStoredPayload(Recipe{Recipe::Kind::kFull, CodecId::kZstd, {}, {st.offset, st.patch_length}, true, st.pack});
    if (!b.ok())
      return absl::DataLossError(StrCat(s_->path, ": chained patch step ", k + 1, ": ", b.status().message()));
    located[k] = std::move(*b);
    st.patch = located[k];
    st.located = false;
  }
  if (!any) return bytes;
  return MakeChainPatch(*steps, r.packed);
}

absl::StatusOr<std::string> CdimgImage::ReadStoredPayload(const Recipe& r) const {
  if (!r.packed) return ReadBlob(r.blob);
  if (r.pack >= s_->index.packs.size())
    return absl::OutOfRangeError(StrCat(s_->path, ": pack ", r.pack, " does not exist"));
  std::shared_ptr<const std::string> raw;
  {
    MutexLock l(&s_->pack_mu);
    auto& cache = s_->cached_packs;
    for (size_t k = 0; k < cache.size(); ++k)
      if (cache[k].first == r.pack) {
        raw = cache[k].second;
        std::rotate(cache.begin(), cache.begin() + k, cache.begin() + k + 1);  // to the front
        break;
      }
  }
  if (!raw && s_->index.packs[r.pack].length == 0) raw = s_->inline_pack;
  if (!raw) {
    const internal::PackSlot& p = s_->index.packs[r.pack];
    auto stored = ReadBlob({p.offset, p.length});
    if (!stored.ok()) return stored.status();
    auto dec = internal::DecompressPack(*stored, p.raw_length);
    if (!dec.ok())
      return absl::DataLossError(StrCat(s_->path, ": pack ", r.pack, ": ", dec.status().message()));
    raw = std::make_shared<const std::string>(std::move(*dec));
    MutexLock l(&s_->pack_mu);
    auto& cache = s_->cached_packs;
    cache.insert(cache.begin(), {r.pack, raw});
    if (cache.size() > State::kCachedPacks) cache.pop_back();
  }
  if (r.blob.offset > raw->size() || r.blob.length > raw->size() - r.blob.offset)
    return absl::OutOfRangeError(StrCat(s_->path, ": member [", r.blob.offset, ", +", r.blob.length,
                                        ") outside pack ", r.pack));
  return raw->substr(r.blob.offset, r.blob.length);
}

}  // namespace d4c
