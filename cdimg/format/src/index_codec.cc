#include "index_codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_format / ZSTD_d_format (magicless frames)
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "d4c/base/zstd.h"
#include "d4c/base/strcat.h"
#include "layout.h"
#include "d4c/record.h"

namespace d4c::internal {

namespace {

constexpr uint8_t kPackedBit = 0x80;

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
  if (r.kind == Recipe::Kind::kFull && r.packed && r.blob.length != size)
    return bad("packed full content of the wrong size");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EncodedIndex> EncodeIndex(const std::vector<Entry>& entries,
                                         const std::vector<Recipe>& recipes,
                                         uint64_t blob_section_length,
                                         const std::vector<uint64_t>& pack_lengths,
                                         const SamePathBase* compact,
                                         const std::vector<uint64_t>* placed_raw) {
  if (auto s = ValidateTree(entries); !s.ok()) return s;
  if (placed_raw && (!compact || placed_raw->size() != pack_lengths.size()))
    return absl::InvalidArgumentError("placed packs need a delta image and one size per pack");
  if (recipes.size() != entries.size())
    return absl::InvalidArgumentError("recipe count differs from entry count");
  if (entries.size() > kMaxEntries) return absl::InvalidArgumentError("too many entries");
  std::string meta;
  for (const Entry& e : entries) AppendRecord(e, &meta);

  std::string kinds, lengths, base_refs, bases, placements;
  std::map<Digest, uint32_t> base_ids;
  uint64_t next_offset = 0;
  std::vector<uint64_t> members(pack_lengths.size(), 0), pack_raw(pack_lengths.size(), 0);
  uint32_t cur_pack = 0;
  std::optional<std::pair<uint32_t, uint64_t>> placed_end;  // pack and end of the last placed member
  for (size_t i = 0; i < entries.size(); ++i) {
    const Recipe& r = recipes[i];
    if (auto s = CheckRecipeKind(entries[i].path, entries[i].type, entries[i].size, r); !s.ok()) return s;
    uint8_t codec = r.kind == Recipe::Kind::kDelta ? static_cast<uint8_t>(r.codec) : 0;
    bool packed = HasBlob(r.kind) && r.packed;
    kinds.push_back(static_cast<char>(static_cast<uint8_t>(r.kind) | codec << 4 | (packed ? kPackedBit : 0)));
    if (!HasBlob(r.kind)) continue;
    auto bad_order = [&] {
      return absl::InvalidArgumentError(StrCat("entry \"", entries[i].path,
                                               "\": blobs and pack members must be appended in entry order"));
    };
    if (packed && placed_raw) {
      // anywhere inside its pack: 0 = right after the previous packed entry's member
      if (r.pack >= pack_lengths.size() || r.blob.offset > (*placed_raw)[r.pack] ||
          r.blob.length > (*placed_raw)[r.pack] - r.blob.offset)
        return absl::InvalidArgumentError(StrCat("entry \"", entries[i].path, "\": member [", r.blob.offset,
                                                 ", +", r.blob.length, ") outside pack ", r.pack));
      if (placed_end && placed_end->first == r.pack && placed_end->second == r.blob.offset) {
        PutVarint(&placements, 0);
      } else {
        PutVarint(&placements, uint64_t{r.pack} + 1);
        PutVarint(&placements, r.blob.offset);
      }
      placed_end = {r.pack, r.blob.offset + r.blob.length};
      members[r.pack]++;
    } else if (packed) {
      // members fill pack 0, then pack 1, ... in entry order, back to back
      if (r.pack >= pack_lengths.size() || r.pack < cur_pack) return bad_order();
      cur_pack = r.pack;
      if (r.blob.offset != pack_raw[r.pack]) return bad_order();
      pack_raw[r.pack] += r.blob.length;
      members[r.pack]++;
    } else {
      if (r.blob.offset != next_offset) return bad_order();
      next_offset += r.blob.length;
    }
    PutVarint(&lengths, r.blob.length);
    if (r.kind != Recipe::Kind::kDelta) continue;
    if (compact && (*compact)(entries[i].path) == r.base) {
      PutVarint(&base_refs, 0);
      continue;
    }
    auto [it, added] = base_ids.emplace(r.base, static_cast<uint32_t>(base_ids.size()));
    if (added) bases.append(reinterpret_cast<const char*>(r.base.data()), 32);
    PutVarint(&base_refs, it->second + (compact ? 1 : 0));
  }
  std::string pack_table;
  for (size_t p = 0; p < pack_lengths.size(); ++p) {
    bool inline_pack = compact && pack_lengths[p] == 0 && p + 1 == pack_lengths.size();
    uint64_t raw = placed_raw ? (*placed_raw)[p] : pack_raw[p];
    // Placed packs may hold no entry's member (only chained patches' steps).
    if ((members[p] == 0 && !placed_raw) || raw == 0 || (pack_lengths[p] == 0 && !inline_pack) ||
        raw > kMaxPackRawBytes)
      return absl::InvalidArgumentError(StrCat("pack ", p, " is empty or too large"));
    next_offset += pack_lengths[p];
    PutVarint(&pack_table, pack_lengths[p]);
    PutVarint(&pack_table, placed_raw ? raw : members[p]);
  }
  if (next_offset != blob_section_length)
    return absl::InvalidArgumentError(StrCat("recipes and packs cover ", next_offset,
                                                   " blob bytes but the blob section has ",
                                                   blob_section_length));
  EncodedIndex out;
  out.image_id = Sha256(meta);
  PutVarint(&out.bytes, meta.size());
  PutVarint(&out.bytes, entries.size());
  PutVarint(&out.bytes, base_ids.size());
  PutVarint(&out.bytes, pack_lengths.size());
  out.bytes += meta;
  out.bytes += kinds;
  out.bytes += lengths;
  out.bytes += base_refs;
  out.bytes += placements;
  out.bytes += bases;
  out.bytes += pack_table;
  return out;
}

absl::StatusOr<std::string> CompressPack(std::string_view raw, int level) {
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_format, ZSTD_f_zstd1_magicless);
  return ZstdCompressWith(cctx.get(), raw);
}

absl::Status CheckPackHeader(std::string_view stored, uint64_t raw_length) {
  ZSTD_frameHeader fh;
  if (ZSTD_getFrameHeader_advanced(&fh, stored.data(), stored.size(), ZSTD_f_zstd1_magicless) != 0 ||
      fh.frameContentSize != raw_length)
    return absl::DataLossError("pack: bad frame header");
  return absl::OkStatus();
}

absl::StatusOr<std::string> DecompressPack(std::string_view stored, uint64_t raw_length) {
  // Exactly one frame recording exactly raw_length bytes (bounded by the index).
  if (auto s = CheckPackHeader(stored, raw_length); !s.ok()) return s;
  ZstdDCtxPtr dctx = NewZstdDCtx();
  if (!dctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_format, ZSTD_f_zstd1_magicless);
  std::string out(raw_length, '\0');
  size_t n = ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(), stored.data(), stored.size());
  if (ZSTD_isError(n)) return absl::DataLossError(StrCat("pack: zstd: ", ZSTD_getErrorName(n)));
  if (n != raw_length) return absl::DataLossError("pack decompresses to the wrong size");
  return out;
}

absl::StatusOr<std::string> CompressMeta(std::string_view raw, std::string_view dict, int level) {
  ZstdCCtxPtr cctx = NewZstdCCtx();
  if (!cctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  // No magic (the cdimg lead identifies the file), a content checksum (it
  // covers the config and the recipe columns, which the image id does not).
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_format, ZSTD_f_zstd1_magicless);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  if (!dict.empty()) {
    // The parent's config and metadata as prefix: unchanged parts become long matches.
    int wlog = 10;
    while (wlog < 30 && (1ull << wlog) < dict.size() + raw.size()) ++wlog;
    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_windowLog, wlog);
    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_enableLongDistanceMatching, 1);
    ZSTD_CCtx_refPrefix(cctx.get(), dict.data(), dict.size());
  }
  return ZstdCompressWith(cctx.get(), raw);
}

absl::StatusOr<std::string> DecompressMeta(std::string_view stored, std::string_view dict,
                                           uint64_t raw_length) {
  ZstdDCtxPtr dctx = NewZstdDCtx();
  if (!dctx) return absl::ResourceExhaustedError("zstd: out of memory");
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, 31);
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_format, ZSTD_f_zstd1_magicless);
  if (!dict.empty()) ZSTD_DCtx_refPrefix(dctx.get(), dict.data(), dict.size());
  std::string out(raw_length, '\0');
  size_t n = ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(), stored.data(), stored.size());
  if (ZSTD_isError(n))
    return absl::DataLossError(StrCat("config/index do not decompress: ", ZSTD_getErrorName(n),
                                      dict.empty() ? "" : " (wrong parent image?)"));
  if (n != raw_length) return absl::DataLossError("config/index decompress to the wrong size");
  return out;
}

absl::StatusOr<uint64_t> MetaContentSize(std::string_view stored, uint64_t max) {
  ZSTD_frameHeader fh;
  if (ZSTD_getFrameHeader_advanced(&fh, stored.data(), stored.size(), ZSTD_f_zstd1_magicless) != 0 ||
      fh.frameType != ZSTD_frame || fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN || fh.frameContentSize > max)
    return absl::DataLossError("config/index: bad frame header");
  return static_cast<uint64_t>(fh.frameContentSize);
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

absl::Status DecodeRecipes(DecodedIndex* idx, std::string_view rest, uint32_t base_count, uint64_t pack_count,
                           uint64_t blob_section_length, const SamePathBase* compact, bool placed) {
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
    slot.packed = b & kPackedBit;
    if (!HasBlob(slot.kind)) {
      if (b & 0xf0) return Corrupt("flags on a recipe without a blob");
      continue;
    }
    uint64_t len;
    if (!GetVarint(rest, &pos, &len) || len == 0 || len > (slot.packed ? kMaxPackRawBytes : blob_section_length))
      return Corrupt("blob length out of bounds");
    slot.length = len;
    if (slot.packed) continue;
    if (len > blob_section_length - offset) return Corrupt("blob length out of bounds");
    slot.offset = offset;
    offset += len;
  }
  for (size_t i = 0; i < n; ++i) {
    RecipeSlot& slot = idx->recipes[i];
    if (slot.kind != Recipe::Kind::kDelta) continue;
    uint8_t codec = (static_cast<uint8_t>(rest[i]) >> 4) & 7;
    if (codec < 1 || codec > 7) return Corrupt("unknown codec id");
    slot.codec = static_cast<CodecId>(codec);
    uint64_t ref;
    if (!GetVarint(rest, &pos, &ref) || ref >= base_count + (compact ? 1 : 0))
      return Corrupt("base reference out of bounds");
    if (!compact) {
      slot.base_ref = static_cast<uint32_t>(ref);
    } else if (ref > 0) {
      slot.base_ref = static_cast<uint32_t>(ref - 1);
    } else {
      std::string_view path = RecordPath(idx->metadata, idx->record_offsets[i]);
      std::optional<Digest> d = (*compact)(path);
      if (!d) return Corrupt(StrCat("\"", path, "\": delta against the same path, but the parent has no such file"));
      slot.base_ref = base_count + static_cast<uint32_t>(idx->same_path_bases.size() / 32);
      idx->same_path_bases.append(reinterpret_cast<const char*>(d->data()), 32);
    }
  }
  // Unplaced, every pack has a member; placed, a pack may have none (only
  // steps), but every pack has two varints in the table.
  if (placed ? pack_count > (rest.size() - pos) / 2 : pack_count > n) return Corrupt("pack count out of range");
  if (placed) {
    // Each packed entry's pack and offset (bounds are checked against the pack table below).
    RecipeSlot* prev = nullptr;
    for (size_t i = 0; i < n; ++i) {
      RecipeSlot& slot = idx->recipes[i];
      if (!HasBlob(slot.kind) || !slot.packed) continue;
      uint64_t p;
      if (!GetVarint(rest, &pos, &p)) return Corrupt("pack placement truncated");
      if (p == 0) {
        if (!prev) return Corrupt("the first packed entry continues no member");
        slot.pack = prev->pack;
        slot.offset = prev->offset + prev->length;  // both ≤ 1 MiB: no overflow
      } else {
        if (p > pack_count || !GetVarint(rest, &pos, &slot.offset) || slot.offset > kMaxPackRawBytes)
          return Corrupt("pack placement out of range");
        slot.pack = static_cast<uint32_t>(p - 1);
      }
      prev = &slot;
    }
  }
  if (rest.size() - pos < static_cast<uint64_t>(base_count) * 32) return Corrupt("base table truncated");
  idx->bases = rest.substr(pos, static_cast<size_t>(base_count) * 32);
  pos += idx->bases.size();
  // Pack table; packed members fill the packs in entry order (placed: they
  // lie where the placement column says, inside their pack).
  idx->packs.resize(pack_count);
  if (placed) {
    for (uint64_t p = 0; p < pack_count; ++p) {
      PackSlot& pk = idx->packs[p];
      if (!GetVarint(rest, &pos, &pk.length) || !GetVarint(rest, &pos, &pk.raw_length) || pk.raw_length == 0 ||
          pk.raw_length > kMaxPackRawBytes || pk.length > blob_section_length - offset)
        return Corrupt("pack table out of bounds");
      if (pk.length == 0 && !(compact && p + 1 == pack_count)) return Corrupt("empty pack");
      pk.offset = offset;
      offset += pk.length;
    }
    for (const RecipeSlot& slot : idx->recipes)
      if (HasBlob(slot.kind) && slot.packed &&
          (slot.offset > idx->packs[slot.pack].raw_length ||
           slot.length > idx->packs[slot.pack].raw_length - slot.offset))
        return Corrupt("pack member outside its pack");
    if (pos != rest.size()) return Corrupt("trailing bytes after the pack table");
    if (offset != blob_section_length) return Corrupt("blob lengths do not add up to the blob section");
    return absl::OkStatus();
  }
  size_t member = 0;  // next entry to look at for pack members
  for (uint64_t p = 0; p < pack_count; ++p) {
    PackSlot& pk = idx->packs[p];
    uint64_t count;
    if (!GetVarint(rest, &pos, &pk.length) || !GetVarint(rest, &pos, &count) || count == 0 ||
        pk.length > blob_section_length - offset)
      return Corrupt("pack table out of bounds");
    if (pk.length == 0 && !(compact && p + 1 == pack_count)) return Corrupt("empty pack");
    pk.offset = offset;
    offset += pk.length;
    for (; count > 0; ++member) {
      if (member >= n) return Corrupt("pack member count out of range");
      RecipeSlot& slot = idx->recipes[member];
      if (!HasBlob(slot.kind) || !slot.packed) continue;
      slot.pack = static_cast<uint32_t>(p);
      slot.offset = pk.raw_length;
      if (slot.length > kMaxPackRawBytes - pk.raw_length) return Corrupt("pack too large");
      pk.raw_length += slot.length;
      --count;
    }
  }
  for (; member < n; ++member)
    if (HasBlob(idx->recipes[member].kind) && idx->recipes[member].packed) return Corrupt("pack member without a pack");
  if (pos != rest.size()) return Corrupt("trailing bytes after the pack table");
  if (offset != blob_section_length) return Corrupt("blob lengths do not add up to the blob section");
  return absl::OkStatus();
}

// Recipe kinds must fit entry types; hardlinks must name a file-like primary.
absl::Status CheckConsistency(const DecodedIndex& idx) {
  for (size_t i = 0; i < idx.recipes.size(); ++i) {
    auto r = ParseRecord(idx.metadata, idx.record_offsets[i]);
    Recipe rec;
    rec.kind = idx.recipes[i].kind;
    rec.blob.length = idx.recipes[i].length;
    rec.packed = idx.recipes[i].packed;
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
                                         const Digest& image_id, const SamePathBase* compact, bool placed) {
  if (placed && !compact) return Corrupt("placed packs outside the compact meta form");
  DecodedIndex idx;
  idx.raw = std::move(raw);
  std::string_view v = idx.raw;
  size_t pos = 0;
  uint64_t meta_len, count, base_count, pack_count;
  if (!GetVarint(v, &pos, &meta_len) || !GetVarint(v, &pos, &count) || !GetVarint(v, &pos, &base_count) ||
      !GetVarint(v, &pos, &pack_count))
    return Corrupt("too short");
  if (meta_len > v.size() - pos) return Corrupt("metadata length out of bounds");
  if (count == 0 || count > kMaxEntries) return Corrupt("entry count out of range");
  idx.metadata = v.substr(pos, meta_len);
  if (Sha256(idx.metadata) != image_id) return Corrupt("metadata does not match the image id");
  if (auto s = DecodeRecords(&idx, static_cast<uint32_t>(count)); !s.ok()) return s;
  std::string_view rest = v.substr(pos + meta_len);
  if (base_count > rest.size() / 32) return Corrupt("base count out of range");
  if (auto s = DecodeRecipes(&idx, rest, static_cast<uint32_t>(base_count), pack_count, blob_section_length,
                             compact, placed);
      !s.ok())
    return s;
  if (auto s = CheckConsistency(idx); !s.ok()) return s;
  return idx;
}

}  // namespace d4c::internal
