// The cdimg file: one self-describing image (full, or a delta against a
// parent image). Layout and encoding are specified in docs/format.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/codec.h"
#include "d4c/entry.h"

namespace d4c {

// Position of a blob inside the blob section of one cdimg.
struct BlobRef {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const BlobRef&) const = default;
};

// How to obtain a regular file's bytes.
//
// A kFull or kDelta recipe stores its bytes either alone in the blob section
// (`blob`: for kFull one zstd frame of the content, for kDelta the patch) or,
// `packed`, as one member of a pack: a zstd frame holding the members of
// several entries back to back; `blob` is then the member's range inside the
// decompressed pack `pack`, and the member is the raw content (kFull) or the
// patch (kDelta).
struct Recipe {
  enum class Kind : uint8_t {
    kNone = 0,   // not a regular file (dirs, links, devices, hardlinks)
    kEmpty = 1,  // size 0
    kFull = 2,   // `blob` is one zstd frame of the whole content
    kDelta = 3,  // `blob` is a `codec` patch against the file whose digest is `base`
    kBase = 4,   // same content as a file in the parent chain (no bytes here)
  };
  Kind kind = Kind::kNone;
  CodecId codec = CodecId::kZstd;  // kDelta only
  Digest base{};                   // kDelta only
  BlobRef blob;                    // kFull, kDelta
  bool packed = false;             // kFull, kDelta: `blob` lies in pack `pack`
  uint32_t pack = 0;
  bool operator==(const Recipe&) const = default;
};
const char* RecipeKindName(Recipe::Kind k);

struct ImageHeader {
  uint32_t version = 0;
  bool is_delta = false;
  Digest image_id{};   // sha256 of the canonical metadata (the tree)
  Digest parent_id{};  // delta only: image id of the parent
  uint64_t file_size = 0;
  uint64_t header_length = 0;     // lead + tail: file bytes that are neither blobs nor meta
  uint64_t blobs_offset = 0;      // file offset of the blob section
  uint64_t blobs_length = 0;
  uint64_t meta_length = 0;       // stored config + index (one zstd frame)
  bool compact_meta = false;      // lead flag bit 1 (docs/format.md)
  bool placed_packs = false;      // lead flag bit 2: packed entries name pack and offset
  bool lzma_meta = false;         // lead flag bit 3: the meta section is LZMA2, not zstd
  uint64_t config_length = 0;     // decompressed OCI config bytes (compact meta: in packed form)
  uint64_t index_raw_length = 0;  // decompressed index bytes
};

// Limits the reader enforces before allocating anything sized from the file.
inline constexpr uint64_t kMaxIndexRawBytes = 1ull << 30;
inline constexpr uint64_t kMaxEntries = 1ull << 24;
// Packs: the reader's bound on a decompressed pack; writers stay far below.
inline constexpr uint64_t kMaxPackRawBytes = 1ull << 20;


class CdimgImage;

// Writes a cdimg atomically: blobs are appended as they come, Finish writes the
// index and header, fsyncs and renames the temp file over `path`.
// Thread-safety: externally synchronized (one thread at a time).
class CdimgWriter {
 public:
  struct Options {
    // Set for a delta image: its id becomes parent_id and its config and
    // metadata the prefix the config and index are compressed against. Delta
    // images are written in the compact meta form (docs/format.md).
    const CdimgImage* parent = nullptr;
    int index_zstd_level = 19;
    // Placed packs (delta images only, docs/format.md): packed recipes name
    // their pack and offset freely, so a merge copies its inputs' packs as
    // they are stored, members it drops included.
    bool placed_packs = false;
    // Delta images: the meta section in the smaller of its zstd and LZMA
    // forms (docs/format.md), or in the one given (tests).
    enum class MetaForm { kSmaller, kZstd, kLzma };
    MetaForm meta_form = MetaForm::kSmaller;
    // Where both meta forms are made (kSmaller), Finish compresses them side
    // by side on these threads (the same bytes as one after the other). Not
    // owned; must outlive Finish. Null: one after the other.
    Helpers* helpers = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<CdimgWriter>> Create(const std::string& path, Options options);
  ~CdimgWriter();  // removes the temp file unless Finish succeeded

  absl::StatusOr<BlobRef> AppendBlob(std::string_view bytes);
  // Compresses `raw` (the members of one pack, back to back) into a pack and
  // appends it; returns its number. All AppendBlob calls come first.
  absl::StatusOr<uint32_t> AppendPack(std::string_view raw, int zstd_level = 19);
  // Appends a pack as it is stored (one magicless zstd frame, e.g. another
  // cdimg's PackBlob bytes) whose content is `raw_length` bytes of members;
  // only its frame header is checked. Returns its number, like AppendPack.
  absl::StatusOr<uint32_t> AppendStoredPack(std::string_view stored, uint64_t raw_length);
  // The stored frame AppendPack(raw, zstd_level) would append, for writers
  // that compress packs on several threads and append them in order with
  // AppendStoredPack (the same file bytes). Thread-safe.
  static absl::StatusOr<std::string> CompressPack(std::string_view raw, int zstd_level = 19);
  uint64_t blob_bytes() const;
  // `recipes[i]` belongs to `entries[i]`; entries sorted by ComparePaths.
  // `inline_pack` (delta images only): the raw members of one more pack, the
  // last, stored inside the meta frame instead of the blob section.
  absl::Status Finish(std::string_view config_json, const std::vector<Entry>& entries,
                      const std::vector<Recipe>& recipes, std::string_view inline_pack = {});

 private:
  CdimgWriter() = default;
  struct State;
  std::unique_ptr<State> s_;
};

// A read-only view of one cdimg. Opening reads and checks the header, config
// and index (never the blobs). Entries are decoded on demand from the index.
// Thread-safety: immutable after Open; every const method may be called from
// several threads at once (ReadPayload locks its own pack cache).
class CdimgImage {
 public:
  // Reads only the header (lead and tail), checking its checksum.
  static absl::StatusOr<ImageHeader> ReadHeader(const std::string& path);
  // A delta image needs its parent (the index is compressed against it).
  static absl::StatusOr<std::unique_ptr<CdimgImage>> Open(const std::string& path,
                                                          const CdimgImage* parent = nullptr);
  ~CdimgImage();

  const std::string& path() const;
  const ImageHeader& header() const;
  size_t size() const;  // number of entries
  std::string_view PathAt(size_t i) const;
  EntryType TypeAt(size_t i) const;
  Entry EntryAt(size_t i) const;
  // Regular files only (zero otherwise); no allocation.
  uint64_t SizeAt(size_t i) const;
  Digest DigestAt(size_t i) const;
  Recipe RecipeAt(size_t i) const;
  std::optional<size_t> Find(std::string_view path) const;
  // Entries [first, end) are the subtree below directory i (excluding i).
  size_t SubtreeEnd(size_t i) const;

  std::string_view config() const;
  // The canonical metadata bytes (hashed into the image id).
  std::string_view metadata() const;
  // Reads a blob with bounds checks against the blob section.
  absl::StatusOr<std::string> ReadBlob(const BlobRef& ref) const;
  // The bytes a kFull/kDelta recipe stores (see Recipe): its blob, or its
  // member of a pack (the pack is read and decompressed whole; the last four are
  // cached). A chained patch (codec 6) whose steps lie in packs of this image
  // is returned with those steps copied in, so codecs never see pack
  // references. Thread-safe.
  absl::StatusOr<std::string> ReadPayload(const Recipe& r) const;
  // The bytes as stored: a chained patch's steps in packs are left there
  // (merge --compose copies them with their packs).
  absl::StatusOr<std::string> ReadStoredPayload(const Recipe& r) const;
  size_t pack_count() const;
  BlobRef PackBlob(uint32_t pack) const;       // stored pack in the blob section (length 0: inline)
  uint64_t PackRawLength(uint32_t pack) const;  // decompressed
  // The whole decompressed pack (through the same cache as ReadPayload).
  absl::StatusOr<std::string> ReadPack(uint32_t pack) const;

 private:
  CdimgImage() = default;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace d4c
