// libFuzzer: arbitrary bytes as one layer (libarchive auto-detects plain tar
// or any compression) through SquashLayers. Must never crash, hang or
// allocate without bound; errors are fine.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "d4c/oci.h"

namespace {

class MemoryStream : public d4c::ByteStream {
 public:
  explicit MemoryStream(const std::string* s) : s_(s) {}
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    size_t k = std::min(n, s_->size() - pos_);
    std::copy_n(s_->data() + pos_, k, buf);
    pos_ += k;
    return k;
  }

 private:
  const std::string* s_;
  size_t pos_ = 0;
};

class OneLayerImage : public d4c::ImageSource {
 public:
  explicit OneLayerImage(std::string bytes) : bytes_(std::move(bytes)) {
    layers_.push_back({"application/vnd.oci.image.layer.v1.tar+gzip", "sha256:fuzz", bytes_.size()});
  }
  std::string Describe() const override { return "fuzz"; }
  const std::string& config_json() const override { return config_; }
  const std::vector<d4c::LayerDescriptor>& layers() const override { return layers_; }
  absl::StatusOr<std::unique_ptr<d4c::ByteStream>> OpenLayer(size_t) const override {
    return std::unique_ptr<d4c::ByteStream>(std::make_unique<MemoryStream>(&bytes_));
  }

 private:
  std::string bytes_;
  std::string config_ = "{}";
  std::vector<d4c::LayerDescriptor> layers_;
};

class NullSink : public d4c::ContentSink {
 public:
  absl::Status Put(const d4c::Digest&, std::string) override { return absl::OkStatus(); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  OneLayerImage image(std::string(reinterpret_cast<const char*>(data), size));
  NullSink sink;
  d4c::SquashOptions options;
  // Keep a bomb cheap to detect under sanitizers.
  options.layer_floor_bytes = 8 << 20;
  options.layer_ratio_limit = 100;
  auto result = d4c::SquashLayers(image, sink, options);
  (void)result;
  return 0;
}
