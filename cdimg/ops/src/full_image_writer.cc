#include "full_image_writer.h"

#include <cstring>
#include <unordered_set>

namespace d4c::internal {

std::vector<size_t> FullBlobEntries(const std::vector<Entry>& entries) {
  std::vector<size_t> out;
  std::unordered_set<Digest, DigestHash> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular || e.size == 0) continue;
    if (seen.insert(e.digest).second) out.push_back(i);
  }
  return out;
}

absl::StatusOr<FullImageStats> WriteFullImage(const std::string& out_path, std::string_view config_json,
                                              const std::vector<Entry>& entries, const FullBlobCopier& blob,
                                              int meta_zstd_level,
                                              const std::function<absl::Status()>& before_finish) {
  auto writer = CdimgWriter::Create(out_path, {.index_zstd_level = meta_zstd_level});
  if (!writer.ok()) return writer.status();
  FullImageStats stats;
  std::vector<Recipe> recipes(entries.size());
  std::unordered_set<Digest, DigestHash> emitted;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular) continue;
    stats.rootfs_bytes += e.size;
    if (e.size == 0) {
      recipes[i].kind = Recipe::Kind::kEmpty;
      continue;
    }
    if (!emitted.insert(e.digest).second) {
      recipes[i].kind = Recipe::Kind::kBase;  // same bytes as an earlier entry
      continue;
    }
    stats.unique_bytes += e.size;
    // Pieces appended back to back make one contiguous blob.
    BlobRef ref{(*writer)->blob_bytes(), 0};
    absl::Status st = blob.copy(i, [&](std::string_view piece) -> absl::Status {
      auto r = (*writer)->AppendBlob(piece);
      if (!r.ok()) return r.status();
      ref.length += r->length;
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    recipes[i] = {Recipe::Kind::kFull, CodecId::kZstd, {}, ref};
  }
  if (before_finish)
    if (absl::Status s = before_finish(); !s.ok()) return s;
  if (auto s = (*writer)->Finish(config_json, entries, recipes); !s.ok()) return s;
  return stats;
}

absl::StatusOr<FullImageStats> WriteFullImage(const std::string& out_path, std::string_view config_json,
                                              const std::vector<Entry>& entries,
                                              const FullBlobSource& blob) {
  return WriteFullImage(out_path, config_json, entries,
                        FullBlobCopier([&](size_t i, const BlobAppend& append) -> absl::Status {
                          auto bytes = blob(i);
                          if (!bytes.ok()) return bytes.status();
                          return append(*bytes);
                        }));
}

}  // namespace d4c::internal
