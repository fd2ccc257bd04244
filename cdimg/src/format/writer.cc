#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "d4c/strcat.h"
#include "d4c/cdimg.h"
#include "format/index_codec.h"
#include "format/io.h"
#include "format/layout.h"
#include "model/metadata.h"

namespace d4c {

using internal::PutU32;
using internal::PutU64;

struct CdimgWriter::State {
  std::string path;
  std::string tmp_path;
  Options options;
  int fd = -1;
  uint64_t blob_bytes = 0;
  bool finished = false;
};

absl::StatusOr<std::unique_ptr<CdimgWriter>> CdimgWriter::Create(const std::string& path,
                                                                 Options options) {
  std::unique_ptr<CdimgWriter> w(new CdimgWriter());
  w->s_ = std::make_unique<State>();
  State& s = *w->s_;
  s.path = path;
  s.options = options;
  s.tmp_path = StrCat(path, ".tmp.", getpid(), ".", std::random_device{}());
  s.fd = open(s.tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (s.fd < 0) return internal::ErrnoStatus(errno, "create", s.tmp_path);
  std::string zero(internal::kHeaderSize, '\0');
  if (auto st = internal::WriteAll(s.fd, zero, s.tmp_path); !st.ok()) return st;
  return w;
}

CdimgWriter::~CdimgWriter() {
  if (!s_) return;
  if (s_->fd >= 0) close(s_->fd);
  if (!s_->finished) unlink(s_->tmp_path.c_str());
}

uint64_t CdimgWriter::blob_bytes() const { return s_->blob_bytes; }

absl::StatusOr<BlobRef> CdimgWriter::AppendBlob(std::string_view bytes) {
  if (auto st = internal::WriteAll(s_->fd, bytes, s_->tmp_path); !st.ok()) return st;
  BlobRef ref{s_->blob_bytes, bytes.size()};
  s_->blob_bytes += bytes.size();
  return ref;
}

namespace {

std::string BuildHeader(const ImageHeader& h, const Digest& meta_digest) {
  std::string out(internal::kHeaderSize, '\0');
  auto put32 = [&](size_t off, uint32_t v) { std::string b; PutU32(&b, v); out.replace(off, 4, b); };
  auto put64 = [&](size_t off, uint64_t v) { std::string b; PutU64(&b, v); out.replace(off, 8, b); };
  auto putd = [&](size_t off, const Digest& d) { std::memcpy(out.data() + off, d.data(), 32); };
  std::memcpy(out.data(), internal::kMagic, 8);
  put32(internal::kOffVersion, internal::kFormatVersion);
  put32(internal::kOffFlags, h.is_delta ? internal::kFlagDelta : 0);
  putd(internal::kOffImageId, h.image_id);
  putd(internal::kOffParentId, h.parent_id);
  uint64_t blobs_off = internal::kHeaderSize;
  uint64_t config_off = blobs_off + h.blobs_length;
  uint64_t index_off = config_off + h.config_length;
  put64(internal::kOffConfigOffset, config_off);
  put64(internal::kOffConfigLength, h.config_length);
  put64(internal::kOffIndexOffset, index_off);
  put64(internal::kOffIndexLength, h.index_length);
  put64(internal::kOffIndexRawLength, h.index_raw_length);
  put64(internal::kOffBlobsOffset, blobs_off);
  put64(internal::kOffBlobsLength, h.blobs_length);
  putd(internal::kOffMetaDigest, meta_digest);
  putd(internal::kOffHeaderDigest, Sha256(std::string_view(out.data(), internal::kOffHeaderDigest)));
  return out;
}

}  // namespace

absl::Status CdimgWriter::Finish(std::string_view config_json, const std::vector<Entry>& entries,
                                 const std::vector<Recipe>& recipes) {
  State& s = *s_;
  if (s.finished) return absl::FailedPreconditionError("cdimg writer already finished");
  auto raw = internal::EncodeIndex(entries, recipes, s.blob_bytes);
  if (!raw.ok()) return absl::Status(raw.status().code(), StrCat(s.path, ": ", raw.status().message()));
  std::string_view dict = s.options.parent ? s.options.parent->metadata() : std::string_view();
  auto stored = internal::CompressIndex(raw->bytes, dict, s.options.index_zstd_level);
  if (!stored.ok()) return stored.status();

  ImageHeader h;
  h.is_delta = s.options.parent != nullptr;
  h.image_id = raw->image_id;
  if (h.is_delta) h.parent_id = s.options.parent->header().image_id;
  h.config_length = config_json.size();
  h.index_length = stored->size();
  h.index_raw_length = raw->bytes.size();
  h.blobs_length = s.blob_bytes;
  std::string meta(config_json);
  meta += *stored;
  if (auto st = internal::WriteAll(s.fd, meta, s.tmp_path); !st.ok()) return st;
  if (auto st = internal::PWriteAll(s.fd, BuildHeader(h, Sha256(meta)), 0, s.tmp_path); !st.ok())
    return st;
  if (auto st = internal::SyncAndClose(&s.fd, s.tmp_path); !st.ok()) return st;
  if (auto st = internal::RenameDurably(s.tmp_path, s.path); !st.ok()) return st;
  s.finished = true;
  return absl::OkStatus();
}

}  // namespace d4c
