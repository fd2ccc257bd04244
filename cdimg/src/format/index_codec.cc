#include "format/index_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "d4c/strcat.h"
#include "format/layout.h"
#include "model/metadata.h"

namespace d4c::internal {
namespace {

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view buf, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= buf.size()) return false;
    uint8_t b = static_cast<uint8_t>(buf[(*pos)++]);
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

bool HasBlob(Recipe::Kind k) { return k == Recipe::Kind::kFull || k == Recipe::Kind::kDelta; }

absl::Status CheckRecipeKind(std::string_view path, EntryType type, uint64_t size, const Recipe& r) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("entry \"", path, "\": ", why));
  };
  if (type != EntryType::kRegular) {
    return r.kind == Recipe::Kind::kNone ? absl::OkStatus() : bad("recipe on a non-regular entry");
  }
  if (size == 0) return r.kind == Recipe::Kind::kEmpty ? absl::OkStatus() : bad("empty file needs the empty recipe");
  if (r.kind == Recipe::Kind::kNone || r.kind == Recipe::Kind::kEmpty) return bad("regular file without content recipe");
  if (HasBlob(r.kind) && r.blob.length == 0) return bad("blob recipe with zero length");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EncodedIndex> EncodeIndex(const std::vector<Entry>& entries,
                                         const std::vector<Recipe>& recipes,
                                         uint64_t blob_section_length) {
  if (auto s = ValidateTree(entries); !s.ok()) return s;
  if (recipes.size() != entries.size())
    return absl::InvalidArgumentError("recipe count differs from entry count");
  if (entries.size() > kMaxEntries) return absl::InvalidArgumentError("too many entries");
  std::string meta;
  for (const Entry& e : entries) AppendRecord(e, &meta);

  std::string kinds, lengths, base_refs, bases;
  std::map<Digest, uint32_t> base_ids;
  uint64_t next_offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Recipe& r = recipes[i];
    if (auto s = CheckRecipeKind(entries[i].path, entries[i].type, entries[i].size, r); !s.ok()) return s;
    uint8_t codec = r.kind == Recipe::Kind::kDelta ? static_cast<uint8_t>(r.codec) : 0;
    kinds.push_back(static_cast<char>(static_cast<uint8_t>(r.kind) | codec << 4));
    if (!HasBlob(r.kind)) continue;
    if (r.blob.offset != next_offset)
      return absl::InvalidArgumentError(StrCat("entry \"", entries[i].path,
                                                     "\": blobs must be appended in entry order"));
    next_offset += r.blob.length;
    PutVarint(&lengths, r.blob.length);
    if (r.kind != Recipe::Kind::kDelta) continue;
    auto [it, added] = base_ids.emplace(r.base, static_cast<uint32_t>(base_ids.size()));
    if (added) bases.append(reinterpret_cast<const char*>(r.base.data()), 32);
    PutVarint(&base_refs, it->second);
  }
  if (next_offset != blob_section_length)
    return absl::InvalidArgumentError(StrCat("recipes cover ", next_offset,
                                                   " blob bytes but the blob section has ",
                                                   blob_section_length));
  EncodedIndex out;
  out.image_id = Sha256(meta);
  PutU64(&out.bytes, meta.size());
  PutU32(&out.bytes, static_cast<uint32_t>(entries.size()));
  PutU32(&out.bytes, static_cast<uint32_t>(base_ids.size()));
  out.bytes += meta;
  out.bytes += kinds;
  out.bytes += lengths;
  out.bytes += base_refs;
  out.bytes += bases;
  return out;
}

absl::StatusOr<std::string> CompressIndex(std::string_view raw, std::string_view dict, int level) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  if (!cctx) return absl::ResourceExhaustedError("zstd: out of memory");
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  if (!dict.empty()) {
    // The parent's metadata as prefix: unchanged records become long matches.
    int wlog = 10;
    while (wlog < 30 && (1ull << wlog) < dict.size() + raw.size()) ++wlog;
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, wlog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableLongDistanceMatching, 1);
    ZSTD_CCtx_refPrefix(cctx, dict.data(), dict.size());
  }
  size_t n = ZSTD_compress2(cctx, out.data(), out.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) return absl::InternalError(StrCat("zstd: ", ZSTD_getErrorName(n)));
  out.resize(n);
  return out;
}

absl::StatusOr<std::string> DecompressIndex(std::string_view stored, std::string_view dict,
                                            uint64_t raw_length) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (!dctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 31);
  if (!dict.empty()) ZSTD_DCtx_refPrefix(dctx, dict.data(), dict.size());
  std::string out(raw_length, '\0');
  size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), stored.data(), stored.size());
  ZSTD_freeDCtx(dctx);
  if (ZSTD_isError(n))
    return absl::DataLossError(StrCat("index does not decompress: ", ZSTD_getErrorName(n),
                                            dict.empty() ? "" : " (wrong parent image?)"));
  if (n != raw_length) return absl::DataLossError("index decompresses to the wrong size");
  return out;
}

namespace {

absl::Status Corrupt(std::string_view what) { return absl::DataLossError(StrCat("index: ", what)); }

// Walks all records: bounds, path rules, order, parents are directories.
absl::Status DecodeRecords(DecodedIndex* idx, uint32_t count) {
  std::string_view meta = idx->metadata;
  idx->record_offsets.reserve(count);
  std::vector<std::string_view> dirs;
  size_t pos = 0;
  std::string_view prev;
  for (uint32_t i = 0; i < count; ++i) {
    auto r = ParseRecord(meta, pos);
    if (!r.ok()) return r.status();
    if (auto s = ValidatePath(r->path); !s.ok()) return Corrupt(Msg(s.message()));
    if (i == 0 && (!r->path.empty() || r->type != EntryType::kDirectory))
      return Corrupt("first entry is not the root directory");
    if (i > 0) {
      if (ComparePaths(prev, r->path) >= 0) return Corrupt(StrCat("entries out of order at \"", r->path, "\""));
      std::string_view parent = ParentPath(r->path);
      while (!dirs.empty() && dirs.back() != parent) dirs.pop_back();
      if (dirs.empty()) return Corrupt(StrCat("\"", r->path, "\" has no parent directory"));
    }
    if (r->type == EntryType::kDirectory) dirs.push_back(r->path);
    if (r->type == EntryType::kRegular && r->size == 0 && std::memcmp(r->digest, EmptyDigest().data(), 32) != 0)
      return Corrupt(StrCat("\"", r->path, "\": empty file with non-empty digest"));
    prev = r->path;
    idx->record_offsets.push_back(static_cast<uint32_t>(pos));
    pos += r->record_bytes;
  }
  if (pos != meta.size()) return Corrupt("trailing bytes after the last record");
  return absl::OkStatus();
}

absl::Status DecodeRecipes(DecodedIndex* idx, std::string_view rest, uint32_t base_count,
                           uint64_t blob_section_length) {
  size_t n = idx->record_offsets.size();
  if (rest.size() < n) return Corrupt("recipe kinds truncated");
  idx->recipes.resize(n);
  size_t pos = n;
  uint64_t offset = 0;
  for (size_t i = 0; i < n; ++i) {
    uint8_t b = static_cast<uint8_t>(rest[i]);
    RecipeSlot& slot = idx->recipes[i];
    if ((b & 15) > 4) return Corrupt("unknown recipe kind");
    slot.kind = static_cast<Recipe::Kind>(b & 15);
    if (!HasBlob(slot.kind)) continue;
    uint64_t len;
    if (!GetVarint(rest, &pos, &len) || len == 0 || len > blob_section_length - offset)
      return Corrupt("blob length out of bounds");
    slot.offset = offset;
    slot.length = len;
    offset += len;
  }
  if (offset != blob_section_length) return Corrupt("blob lengths do not add up to the blob section");
  for (size_t i = 0; i < n; ++i) {
    RecipeSlot& slot = idx->recipes[i];
    if (slot.kind != Recipe::Kind::kDelta) continue;
    uint8_t codec = static_cast<uint8_t>(rest[i]) >> 4;
    if (codec < 1 || codec > 3) return Corrupt("unknown codec id");
    slot.codec = static_cast<CodecId>(codec);
    uint64_t ref;
    if (!GetVarint(rest, &pos, &ref) || ref >= base_count) return Corrupt("base reference out of bounds");
    slot.base_ref = static_cast<uint32_t>(ref);
  }
  if (rest.size() - pos != static_cast<uint64_t>(base_count) * 32) return Corrupt("base table size mismatch");
  idx->bases = rest.substr(pos);
  return absl::OkStatus();
}

// Recipe kinds must fit entry types; hardlinks must name a file-like primary.
absl::Status CheckConsistency(const DecodedIndex& idx) {
  for (size_t i = 0; i < idx.recipes.size(); ++i) {
    auto r = ParseRecord(idx.metadata, idx.record_offsets[i]);
    Recipe rec;
    rec.kind = idx.recipes[i].kind;
    rec.blob.length = idx.recipes[i].length;
    if (auto s = CheckRecipeKind(r->path, r->type, r->size, rec); !s.ok()) return Corrupt(Msg(s.message()));
    if (r->type != EntryType::kHardlink) continue;
    auto it = std::lower_bound(idx.record_offsets.begin(), idx.record_offsets.end(), r->link_target,
                               [&](uint32_t off, std::string_view p) {
                                 return PathLess(RecordPath(idx.metadata, off), p);
                               });
    if (it == idx.record_offsets.end() || RecordPath(idx.metadata, *it) != r->link_target)
      return Corrupt(StrCat("hardlink \"", r->path, "\" names a missing entry"));
    EntryType t = RecordType(idx.metadata, *it);
    if (t == EntryType::kHardlink || t == EntryType::kDirectory)
      return Corrupt(StrCat("hardlink \"", r->path, "\" names a ", EntryTypeName(t)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedIndex> DecodeIndex(std::string raw, uint64_t blob_section_length,
                                         const Digest& image_id) {
  DecodedIndex idx;
  idx.raw = std::move(raw);
  std::string_view v = idx.raw;
  if (v.size() < kIndexPrefixSize) return Corrupt("too short");
  uint64_t meta_len = GetU64(v.data());
  uint32_t count = GetU32(v.data() + 8);
  uint32_t base_count = GetU32(v.data() + 12);
  if (meta_len > v.size() - kIndexPrefixSize) return Corrupt("metadata length out of bounds");
  if (count == 0 || count > kMaxEntries) return Corrupt("entry count out of range");
  idx.metadata = v.substr(kIndexPrefixSize, meta_len);
  if (Sha256(idx.metadata) != image_id) return Corrupt("metadata does not match the image id");
  if (auto s = DecodeRecords(&idx, count); !s.ok()) return s;
  std::string_view rest = v.substr(kIndexPrefixSize + meta_len);
  if (base_count > rest.size() / 32) return Corrupt("base count out of range");
  if (auto s = DecodeRecipes(&idx, rest, base_count, blob_section_length); !s.ok()) return s;
  if (auto s = CheckConsistency(idx); !s.ok()) return s;
  return idx;
}

}  // namespace d4c::internal
