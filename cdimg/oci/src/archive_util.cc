#include "archive_util.h"

namespace d4c::oci_internal {

void EnableLayerFilters(struct archive* a) {
  archive_read_support_filter_none(a);
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_zstd(a);
  archive_read_support_filter_xz(a);
  archive_read_support_filter_lzma(a);
  archive_read_support_filter_bzip2(a);
  archive_read_support_filter_lz4(a);
}

int ArchiveInput::Open(struct archive* a) {
  return archive_read_open(a, this, nullptr, &ArchiveInput::ReadCallback, nullptr);
}

la_ssize_t ArchiveInput::ReadCallback(struct archive* a, void* self, const void** out) {
  auto* in = static_cast<ArchiveInput*>(self);
  *out = in->buf_.data();
  if (!in->status_.ok()) {
    archive_set_error(a, EIO, "%s", std::string(in->status_.message()).c_str());
    return -1;
  }
  absl::StatusOr<size_t> n = in->in_->Read(in->buf_.data(), in->buf_.size());
  if (!n.ok()) {
    in->status_ = n.status();
    archive_set_error(a, EIO, "%s", std::string(in->status_.message()).c_str());
    return -1;
  }
  in->bytes_read_ += *n;
  return static_cast<la_ssize_t>(*n);
}

}  // namespace d4c::oci_internal
