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

// Receives every regular file's content as layers are read, before later
// layers may delete or replace it. Called from the squashing thread only.
class ContentSink {
 public:
  virtual ~ContentSink() = default;
  virtual absl::Status Put(const Digest& digest, std::string content) = 0;
};

struct SquashOptions {
  // Gzip-bomb guard: a layer may decompress to at most
  // max(layer_floor_bytes, layer_ratio_limit * stored size) bytes.
  uint64_t layer_ratio_limit = 200;
  uint64_t layer_floor_bytes = 256ull << 20;
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
