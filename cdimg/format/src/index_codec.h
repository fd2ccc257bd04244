// Encoding of the cdimg index: canonical metadata records, recipe columns and
// the table of delta base digests, zstd-compressed (against the parent's
// metadata for a delta image). See docs/format.md, "index".
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/base/varint.h"
#include "d4c/cdimg.h"

namespace d4c::internal {

// Compact meta (delta images): the parent's content digest of a regular,
// non-empty file at `path`, if it has one. A delta entry whose base is that
// digest stores base reference 0 and no base table entry; other references
// are table index + 1. Compact indexes may also end with an inline pack.
using SamePathBase = std::function<std::optional<Digest>(std::string_view path)>;

struct EncodedIndex {
  std::string bytes;  // raw, uncompressed
  Digest image_id{};
};
// Validates the tree and the recipes (blobs must be laid out in entry order,
// back to back, covering exactly `blob_section_length` bytes).
// Unpacked blobs come first in the blob section, then the packs (stored
// lengths `pack_lengths`) in order. A stored length of 0 marks an inline pack
// (compact meta only, and only the last pack): its members follow the index
// in the meta frame.
// `placed_raw` (placed packs, compact only): the decompressed size of each
// pack; packed recipes then name their pack and offset freely (members in
// bounds, in any order, bytes of a pack may belong to no entry) and the
// index stores that placement.
absl::StatusOr<EncodedIndex> EncodeIndex(const std::vector<Entry>& entries,
                                         const std::vector<Recipe>& recipes,
                                         uint64_t blob_section_length,
                                         const std::vector<uint64_t>& pack_lengths = {},
                                         const SamePathBase* compact = nullptr,
                                         const std::vector<uint64_t>* placed_raw = nullptr);

// Packs: one magicless zstd frame (content size recorded, no checksum: every
// member's file is checked against its digest).
absl::StatusOr<std::string> CompressPack(std::string_view raw, int level);
absl::StatusOr<std::string> DecompressPack(std::string_view stored, uint64_t raw_length);
// Whether `stored` starts with a magicless frame header recording exactly
// `raw_length` content bytes (the frame itself is not decoded).
absl::Status CheckPackHeader(std::string_view stored, uint64_t raw_length);

// The stored meta section: one magicless zstd frame with a content checksum of
// config || raw index; for a delta compressed against `dict` (the parent's
// config || the parent's metadata) as a prefix.
absl::StatusOr<std::string> CompressMeta(std::string_view raw, std::string_view dict, int level);
absl::StatusOr<std::string> DecompressMeta(std::string_view stored, std::string_view dict,
                                           uint64_t raw_length);
// The decompressed size a magicless meta frame records; at most `max`.
absl::StatusOr<uint64_t> MetaContentSize(std::string_view stored, uint64_t max);

// LEB128 unsigned varints (shared with the codecs' patch formats).
using codec_internal::GetVarint;
using codec_internal::PutVarint;

struct RecipeSlot {
  Recipe::Kind kind = Recipe::Kind::kNone;
  CodecId codec = CodecId::kZstd;
  bool packed = false;
  uint32_t base_ref = 0;
  uint32_t pack = 0;
  uint64_t offset = 0;  // in the blob section, or in the decompressed pack
  uint64_t length = 0;
};

struct PackSlot {
  uint64_t offset = 0;  // in the blob section
  uint64_t length = 0;  // stored; 0 for the inline pack
  uint64_t raw_length = 0;
};

struct DecodedIndex {
  std::string raw;
  std::string_view metadata;            // view into raw
  std::vector<uint32_t> record_offsets;  // into metadata, one per entry
  std::vector<RecipeSlot> recipes;
  std::string_view bases;  // base_count * 32 bytes, view into raw
  std::string same_path_bases;  // compact: digests of base references 0, in entry order
  // The 32-byte base digest of slot.base_ref (bases, then same_path_bases).
  const char* BaseDigest(uint32_t base_ref) const {
    size_t n = bases.size() / 32;
    return base_ref < n ? bases.data() + 32 * static_cast<size_t>(base_ref)
                        : same_path_bases.data() + 32 * static_cast<size_t>(base_ref - n);
  }
  std::vector<PackSlot> packs;
};
// Parses and fully validates a raw index: every record, order, parents,
// hardlinks, recipe consistency, blob bounds, and that sha256(metadata) ==
// `image_id`. Builds no per-entry heap objects beyond the two offset tables.
// `compact`: a compact meta index (base reference 0, an inline last pack).
// `placed`: the index of an image with placed packs (flag bit 2).
absl::StatusOr<DecodedIndex> DecodeIndex(std::string raw, uint64_t blob_section_length,
                                         const Digest& image_id, const SamePathBase* compact = nullptr,
                                         bool placed = false);

}  // namespace d4c::internal
