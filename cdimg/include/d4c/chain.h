// ImageChain: a cdimg and the parents it depends on, opened together, with
// verified reconstruction of any file's bytes from its recipe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/cdimg.h"

namespace d4c {

class ImageChain {
 public:
  // `top` plus its ancestors in any order; each delta's parent must be among
  // `bases` (found by image id). Unused bases are ignored.
  static absl::StatusOr<std::unique_ptr<ImageChain>> Open(const std::string& top,
                                                          const std::vector<std::string>& bases);
  // Takes already-open images, bottom (full) first, top last.
  static absl::StatusOr<std::unique_ptr<ImageChain>> FromImages(
      std::vector<std::unique_ptr<CdimgImage>> images);
  ~ImageChain();

  const CdimgImage& top() const;
  size_t depth() const;                       // number of images
  const CdimgImage& image(size_t level) const;  // 0 = bottom

  // Bytes of regular entry `i` of the top image, verified against its digest.
  absl::StatusOr<std::string> ReadFile(size_t i) const;
  // The same; when the top image stores the entry as a standalone `full`
  // blob, `*full_blob` also receives that blob (the zstd frame the bytes were
  // just verified from), else nullopt. Diff copies it instead of compressing
  // the file again.
  absl::StatusOr<std::string> ReadFile(size_t i, std::optional<std::string>* full_blob) const;
  // Bytes of any file with this content digest in the chain (top down).
  absl::StatusOr<std::string> ReadByDigest(const Digest& digest) const;
  // True if some image of the chain can produce content with this digest.
  bool HasDigest(const Digest& digest) const;

 private:
  ImageChain();
  struct State;
  std::unique_ptr<State> s_;
};

// Decompresses a `full` blob (one zstd frame) of exactly `size` bytes.
absl::StatusOr<std::string> DecompressFullBlob(std::string_view blob, uint64_t size);

}  // namespace d4c
