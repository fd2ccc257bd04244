// OCI image input: open an image reference, stream its layers, and squash them
// (whiteouts, opaque dirs, hardlinks, PAX xattrs) into one tree of entries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/entry.h"

namespace d4c {

// Sequential reader of a blob's bytes as stored (still compressed).
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Returns 0 at end of stream.
  virtual absl::StatusOr<size_t> Read(char* buf, size_t n) = 0;
};

struct LayerDescriptor {
  std::string media_type;
  std::string digest;  // "sha256:..."
  uint64_t size = 0;   // stored (compressed) size
};

// One image: its config, manifest and ordered layers (bottom first).
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual std::string Describe() const = 0;  // the reference, for messages
  virtual const std::string& config_json() const = 0;
  virtual const std::vector<LayerDescriptor>& layers() const = 0;
  virtual absl::StatusOr<std::unique_ptr<ByteStream>> OpenLayer(size_t i) const = 0;
};

// `oci:DIR[:TAG]` (OCI image layout; TAG defaults to the only/"latest" manifest)
// or `docker-archive:TAR` (docker save / skopeo format).
absl::StatusOr<std::unique_ptr<ImageSource>> OpenImageSource(std::string_view ref);

// A file too big to hold in memory, passed to the sink in pieces while the
// layer is read. Write gets the bytes in order, then Finish its digest (only
// once the entry proved valid); destroyed without Finish, it is abandoned.
class LargeContent {
 public:
  virtual ~LargeContent() = default;
  virtual absl::Status Write(std::string_view piece) = 0;
  virtual absl::Status Finish(const Digest& digest) = 0;
};

// Receives every regular file's content as layers are read, before later
// layers may delete or replace it. Called from the squashing thread only.
class ContentSink {
 public:
  virtual ~ContentSink() = default;
  virtual absl::Status Put(const Digest& digest, std::string content) = 0;
  // Files over SquashOptions::whole_file_bytes. The default collects the
  // pieces and calls Put (memory grows with the file); a sink that can keep
  // memory bounded streams them instead.
  virtual absl::StatusOr<std::unique_ptr<LargeContent>> BeginLarge(uint64_t size);
};

struct SquashOptions {
  // Gzip-bomb guard: a layer may decompress to at most
  // max(layer_floor_bytes, layer_ratio_limit * stored size) bytes.
  uint64_t layer_ratio_limit = 200;
  uint64_t layer_floor_bytes = 256ull << 20;
  // Regular files larger than this are handed to ContentSink::BeginLarge in
  // pieces instead of being read whole into memory.
  uint64_t whole_file_bytes = 64ull << 20;
  // Called after each layer with (layer index, layer count); may be empty.
  std::function<void(size_t, size_t)> progress;
};

// Applies the layers in order and returns the final tree, sorted by
// ComparePaths and passing ValidateTree. Paths that escape the root (`..`,
// absolute after normalization, through a symlink) are rejected with an error
// naming the layer digest and the path.
absl::StatusOr<std::vector<Entry>> SquashLayers(const ImageSource& image, ContentSink& sink,
                                                const SquashOptions& options = {});

}  // namespace d4c
