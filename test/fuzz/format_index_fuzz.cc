// libFuzzer target: the cdimg index parser (records, recipes, packs, tree
// consistency) on hostile bytes. Whole-file fuzzing never gets this far: the
// header checksum, the meta frame's checksum and the image id (sha256 of the
// metadata) reject random damage first, but an attacker recomputes all three.
// So this target hands DecodeIndex the raw index directly, with the image id
// it claims.
//
// Input: first byte even: the rest are 4-byte edits (24-bit position, xor
// mask) applied to a valid index of a small tree with every entry type, full,
// empty, packed and base recipes; odd: the rest is the raw index. Bit 1 of
// the first byte: the index of an image with placed packs (compact meta),
// whose valid form has members out of order and bytes no entry owns.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "d4c/cdimg.h"
#include "index_codec.h"
#include "d4c/record.h"
#include "oci_fixture.h"

namespace {

using d4c::Entry;
using d4c::EntryType;
using d4c::Recipe;

constexpr uint64_t kBlobSection = 1000;

// Compact meta: no entry's parent has a file at its path.
const d4c::internal::SamePathBase& NoSamePath() {
  static const d4c::internal::SamePathBase none = [](std::string_view) { return std::optional<d4c::Digest>(); };
  return none;
}

Entry Special(std::string path, EntryType type, std::string link = "") {
  Entry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = type == EntryType::kSymlink ? 0777 : 0600;
  e.link_target = std::move(link);
  if (type == EntryType::kCharDevice) e.dev_major = 1, e.dev_minor = 3;
  return e;
}

// Entries in path order and recipes covering exactly kBlobSection bytes:
// two standalone full blobs, then one pack holding two members.
std::string ValidIndex(bool placed) {
  using namespace d4c::oci_test;
  std::vector<Entry> entries = {DirEntry(""),
                                DirEntry("bin"),
                                FileEntry("bin/app", "application", 04755),
                                HardlinkEntry("bin/app2", "bin/app"),
                                SymlinkEntry("bin/sh", "busybox"),
                                DirEntry("dev"),
                                Special("dev/null", EntryType::kCharDevice),
                                Special("dev/pipe", EntryType::kFifo),
                                FileEntry("empty", ""),
                                DirEntry("etc"),
                                FileEntry("etc/a.conf", "a=1\n"),
                                FileEntry("etc/b.conf", "b=2\n"),
                                FileEntry("etc/c.conf", "c=3\n"),
                                FileEntry("etc/same", "application")};
  entries[2].xattrs = {{"security.capability", std::string("\x01\x00\x00\x02", 4)}, {"user.note", "hi"}};
  std::vector<Recipe> recipes(entries.size());
  recipes[2] = {Recipe::Kind::kFull, d4c::CodecId::kZstd, {}, {0, 300}};
  recipes[8].kind = Recipe::Kind::kEmpty;
  recipes[10] = {Recipe::Kind::kFull, d4c::CodecId::kZstd, {}, {300, 400}};
  recipes[11] = {Recipe::Kind::kFull, d4c::CodecId::kZstd, {}, {0, 4}};
  recipes[11].packed = true;
  recipes[12] = {Recipe::Kind::kFull, d4c::CodecId::kZstd, {}, {4, 4}};
  recipes[12].packed = true;
  recipes[13] = {Recipe::Kind::kBase, d4c::CodecId::kZstd, {}, {}};
  const d4c::internal::SamePathBase& none = NoSamePath();
  std::vector<uint64_t> raw_lengths = {20};
  if (placed) {  // etc/b before etc/a, dead bytes around them
    recipes[11].blob.offset = 9;
    recipes[12].blob.offset = 2;
  }
  auto idx = d4c::internal::EncodeIndex(entries, recipes, kBlobSection, {300}, placed ? &none : nullptr,
                                        placed ? &raw_lengths : nullptr);
  if (!idx.ok()) {
    fprintf(stderr, "format_index_fuzz setup: %s\n", std::string(idx.status().message()).c_str());
    std::abort();
  }
  // The mutations start from an index the parser accepts, or they test little.
  if (auto back = d4c::internal::DecodeIndex(idx->bytes, kBlobSection, idx->image_id, placed ? &none : nullptr,
                                             placed);
      !back.ok()) {
    fprintf(stderr, "format_index_fuzz setup: %s\n", std::string(back.status().message()).c_str());
    std::abort();
  }
  return idx->bytes;
}

std::string Input(const uint8_t* data, size_t size) {
  static const std::string valid[2] = {ValidIndex(false), ValidIndex(true)};
  if (size == 0) return valid[0];
  if (data[0] & 1) return std::string(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string bytes = valid[(data[0] >> 1) & 1];
  for (size_t i = 1; i + 4 <= size; i += 4) {
    size_t at = (size_t{data[i]} | size_t{data[i + 1]} << 8 | size_t{data[i + 2]} << 16) % bytes.size();
    bytes[at] = static_cast<char>(bytes[at] ^ (data[i + 3] ? data[i + 3] : 1));
  }
  return bytes;
}

// The id the index would have to claim to be accepted: sha256 of the bytes
// its own header calls metadata (zero if it has no such header).
d4c::Digest ClaimedId(const std::string& raw) {
  size_t pos = 0;
  uint64_t meta_len = 0, skip = 0;
  if (!d4c::internal::GetVarint(raw, &pos, &meta_len)) return {};
  for (int k = 0; k < 3; ++k)
    if (!d4c::internal::GetVarint(raw, &pos, &skip)) return {};
  if (meta_len > raw.size() - pos) return {};
  return d4c::Sha256(std::string_view(raw).substr(pos, meta_len));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string raw = Input(data, size);
  d4c::Digest id = ClaimedId(raw);
  const bool placed = size > 0 && (data[0] & 2);
  auto idx = d4c::internal::DecodeIndex(std::move(raw), kBlobSection, id, placed ? &NoSamePath() : nullptr, placed);
  if (!idx.ok()) return 0;
  // A validated index: every record parses and its path is a valid path.
  for (uint32_t off : idx->record_offsets) {
    auto rec = d4c::internal::ParseRecord(idx->metadata, off);
    if (!rec.ok()) __builtin_trap();
    if (!d4c::internal::ValidatePath(rec->path).ok() && !rec->path.empty()) __builtin_trap();
    (void)d4c::internal::ToEntry(*rec);
  }
  for (const d4c::internal::RecipeSlot& r : idx->recipes)
    if ((r.kind == Recipe::Kind::kFull || r.kind == Recipe::Kind::kDelta) && !r.packed &&
        (r.offset > kBlobSection || r.length > kBlobSection - r.offset))
      __builtin_trap();  // a standalone blob outside the blob section
  for (const d4c::internal::RecipeSlot& r : idx->recipes)
    if ((r.kind == Recipe::Kind::kFull || r.kind == Recipe::Kind::kDelta) && r.packed &&
        (r.pack >= idx->packs.size() || r.offset > idx->packs[r.pack].raw_length ||
         r.length > idx->packs[r.pack].raw_length - r.offset))
      __builtin_trap();  // a member outside its pack
  return 0;
}
