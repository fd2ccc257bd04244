#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "d4c/strcat.h"
#include "d4c/cdimg.h"
#include "format/index_codec.h"
#include "format/io.h"
#include "format/layout.h"
#include "model/metadata.h"

namespace d4c {

using internal::GetU32;
using internal::GetU64;

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

struct CdimgImage::State {
  std::string path;
  int fd = -1;
  ImageHeader header;
  uint64_t blobs_offset = 0;
  std::string config;
  internal::DecodedIndex index;
  ~State() {
    if (fd >= 0) close(fd);
  }
};

namespace {

struct RawHeader {
  ImageHeader h;
  uint64_t config_offset = 0, index_offset = 0, blobs_offset = 0;
  Digest meta_digest{};
};

absl::Status Bad(std::string_view path, std::string_view what) {
  return absl::DataLossError(StrCat(path, ": not a valid cdimg: ", what));
}

bool RangeOk(uint64_t off, uint64_t len, uint64_t file_size) {
  return off <= file_size && len <= file_size - off;
}

absl::StatusOr<RawHeader> ParseHeader(std::string_view path, std::string_view b, uint64_t file_size) {
  if (b.size() < internal::kHeaderSize || std::memcmp(b.data(), internal::kMagic, 8) != 0)
    return Bad(path, "bad magic (not a cdimg file)");
  Digest want;
  std::memcpy(want.data(), b.data() + internal::kOffHeaderDigest, 32);
  if (Sha256(b.substr(0, internal::kOffHeaderDigest)) != want) return Bad(path, "header checksum mismatch");
  RawHeader r;
  r.h.version = GetU32(b.data() + internal::kOffVersion);
  if (r.h.version != internal::kFormatVersion)
    return absl::UnimplementedError(StrCat(path, ": cdimg format version ", r.h.version,
                                                 " is not supported (this build reads version ",
                                                 internal::kFormatVersion, ")"));
  uint32_t flags = GetU32(b.data() + internal::kOffFlags);
  if (flags & ~internal::kFlagDelta) return Bad(path, "unknown header flags");
  r.h.is_delta = flags & internal::kFlagDelta;
  std::memcpy(r.h.image_id.data(), b.data() + internal::kOffImageId, 32);
  std::memcpy(r.h.parent_id.data(), b.data() + internal::kOffParentId, 32);
  std::memcpy(r.meta_digest.data(), b.data() + internal::kOffMetaDigest, 32);
  r.config_offset = GetU64(b.data() + internal::kOffConfigOffset);
  r.h.config_length = GetU64(b.data() + internal::kOffConfigLength);
  r.index_offset = GetU64(b.data() + internal::kOffIndexOffset);
  r.h.index_length = GetU64(b.data() + internal::kOffIndexLength);
  r.h.index_raw_length = GetU64(b.data() + internal::kOffIndexRawLength);
  r.blobs_offset = GetU64(b.data() + internal::kOffBlobsOffset);
  r.h.blobs_length = GetU64(b.data() + internal::kOffBlobsLength);
  r.h.file_size = file_size;
  if (!RangeOk(r.config_offset, r.h.config_length, file_size) ||
      !RangeOk(r.index_offset, r.h.index_length, file_size) ||
      !RangeOk(r.blobs_offset, r.h.blobs_length, file_size) || r.blobs_offset < internal::kHeaderSize ||
      r.config_offset + r.h.config_length != r.index_offset)
    return Bad(path, "section out of bounds (truncated file?)");
  if (r.h.config_length > kMaxConfigBytes) return Bad(path, "config section too large");
  if (r.h.index_raw_length > kMaxIndexRawBytes || r.h.index_length > kMaxIndexRawBytes)
    return Bad(path, "index too large");
  return r;
}

absl::StatusOr<RawHeader> ReadRawHeader(const std::string& path, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return internal::ErrnoStatus(errno, "stat", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < internal::kHeaderSize) return Bad(path, "file shorter than the header (truncated?)");
  std::string buf(internal::kHeaderSize, '\0');
  if (auto s = internal::PReadAll(fd, buf.data(), buf.size(), 0, path); !s.ok()) return s;
  return ParseHeader(path, buf, size);
}

int OpenReadOnly(const std::string& path) { return open(path.c_str(), O_RDONLY | O_CLOEXEC); }

}  // namespace

absl::StatusOr<ImageHeader> CdimgImage::ReadHeader(const std::string& path) {
  int fd = OpenReadOnly(path);
  if (fd < 0) return internal::ErrnoStatus(errno, "open", path);
  auto r = ReadRawHeader(path, fd);
  close(fd);
  if (!r.ok()) return r.status();
  return r->h;
}

absl::StatusOr<std::unique_ptr<CdimgImage>> CdimgImage::Open(const std::string& path,
                                                             const CdimgImage* parent) {
  std::unique_ptr<CdimgImage> img(new CdimgImage());
  img->s_ = std::make_unique<State>();
  State& s = *img->s_;
  s.path = path;
  s.fd = OpenReadOnly(path);
  if (s.fd < 0) return internal::ErrnoStatus(errno, "open", path);
  auto raw = ReadRawHeader(path, s.fd);
  if (!raw.ok()) return raw.status();
  s.header = raw->h;
  s.blobs_offset = raw->blobs_offset;
  std::string_view dict;
  if (s.header.is_delta) {
    if (!parent)
      return absl::FailedPreconditionError(StrCat(
          path, ": delta image needs its parent image ", DigestString(s.header.parent_id)));
    if (parent->header().image_id != s.header.parent_id)
      return absl::FailedPreconditionError(StrCat(
          path, ": delta image's parent is ", DigestString(s.header.parent_id), " but the base given is ",
          DigestString(parent->header().image_id), " (", parent->path(), ")"));
    dict = parent->metadata();
  }
  std::string meta(s.header.config_length + s.header.index_length, '\0');
  if (auto st = internal::PReadAll(s.fd, meta.data(), meta.size(), raw->config_offset, path); !st.ok()) return st;
  if (Sha256(meta) != raw->meta_digest) return Bad(path, "config/index checksum mismatch");
  s.config = meta.substr(0, s.header.config_length);
  auto idx_raw = internal::DecompressIndex(std::string_view(meta).substr(s.header.config_length), dict,
                                           s.header.index_raw_length);
  if (!idx_raw.ok()) return Bad(path, Msg(idx_raw.status().message()));
  auto idx = internal::DecodeIndex(std::move(*idx_raw), s.header.blobs_length, s.header.image_id);
  if (!idx.ok()) return Bad(path, Msg(idx.status().message()));
  s.index = std::move(*idx);
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
  if (slot.kind == Recipe::Kind::kFull || slot.kind == Recipe::Kind::kDelta) r.blob = {slot.offset, slot.length};
  if (slot.kind == Recipe::Kind::kDelta) {
    r.codec = slot.codec;
    std::memcpy(r.base.data(), s_->index.bases.data() + 32 * static_cast<size_t>(slot.base_ref), 32);
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
  std::string out(ref.length, '\0');
  if (auto st = internal::PReadAll(s_->fd, out.data(), out.size(), s_->blobs_offset + ref.offset, s_->path);
      !st.ok())
    return st;
  return out;
}

}  // namespace d4c
