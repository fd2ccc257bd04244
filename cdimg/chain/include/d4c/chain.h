// ImageChain: a cdimg and the parents it depends on, opened together, with
// verified reconstruction of any file's bytes from its recipe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/cdimg.h"
#include "d4c/codec.h"

namespace d4c {

// Thread-safety: internally synchronized. After Open / FromImages the chain
// is immutable (its digest maps are built lazily, once, under std::call_once)
// and every const method may be called from any number of threads at once
// (di3fs's FUSE threads, diff's and patch's workers). CdimgImage::ReadPayload,
// the only shared mutable state below it, locks its own pack cache.
//
// Errors keep their code through every layer, with the image and path added:
// DataLoss means the image's bytes are bad (rebuilt content that does not
// match its sha256, an undecodable blob, a truncated file) and will stay bad;
// any other code (an I/O error, ResourceExhausted, ...) may go away on a
// later read.
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
  // The same bytes and errors as ReadFile(i), sooner: a delta's codec may
  // decode its patch on `helpers` (idle threads, d4c/codec.h) while the base
  // is read, and `use` (may be empty) runs, on any thread, on the rebuilt
  // bytes beside their sha256 check: it returns only if the bytes match (a
  // mismatch is reported first) and `use` succeeded; whatever `use` made of
  // bytes that did not match must be dropped. Patch compresses a changed
  // file this way.
  using UseBytes = std::function<absl::Status(std::string_view bytes)>;
  absl::StatusOr<std::string> ReadFile(size_t i, Helpers& helpers, const UseBytes& use) const;
  // Bytes of any file with this content digest in the chain (top down).
  absl::StatusOr<std::string> ReadByDigest(const Digest& digest) const;
  // True if some image of the chain can produce content with this digest.
  bool HasDigest(const Digest& digest) const;

  // Test seam (fault injection): called before each blob or pack read with
  // the image and recipe; a non-OK status is taken as that read's result.
  // Not synchronized: set it before the chain is shared between threads (the
  // function itself may then be called from several at once).
  using ReadFault = std::function<absl::Status(const CdimgImage& image, const Recipe& recipe)>;
  void SetReadFaultForTesting(ReadFault fault);

 private:
  ImageChain();
  struct State;
  std::unique_ptr<State> s_;
};

// Decompresses a `full` blob (one zstd frame) of exactly `size` bytes.
absl::StatusOr<std::string> DecompressFullBlob(std::string_view blob, uint64_t size);

}  // namespace d4c
