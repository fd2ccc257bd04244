#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <random>

#include "d4c/base/io.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "d4c/cdimg.h"
#include "d4c/codec.h"
#include "compact_meta.h"
#include "index_codec.h"
#include "layout.h"
#include "d4c/record.h"

namespace d4c {

struct CdimgWriter::State {
  std::string path;
  std::string tmp_path;
  Options options;
  int fd = -1;
  uint64_t blob_bytes = 0;
  std::vector<uint64_t> packs;  // stored lengths
  std::vector<uint64_t> packs_raw;  // decompressed lengths
  bool finished = false;
  // Small appends (thousands of small blobs) go out in writes of up to
  // kBufferBytes.
  static constexpr size_t kBufferBytes = 1 << 20;
  std::string buffer;
  uint64_t on_disk = 0;       // bytes written to fd
  uint64_t written_back = 0;  // of them, handed to sync_file_range

  absl::Status Write(std::string_view bytes) {
    if (buffer.size() + bytes.size() > kBufferBytes)
      if (absl::Status st = Flush(); !st.ok()) return st;
    if (bytes.size() < kBufferBytes) {
      buffer.append(bytes);
      return absl::OkStatus();
    }
    return WriteOut(bytes);
  }
  absl::Status Flush() {
    absl::Status st = WriteOut(buffer);
    buffer.clear();
    return st;
  }

 private:
  absl::Status WriteOut(std::string_view bytes) {
    if (bytes.empty()) return absl::OkStatus();
    if (absl::Status st = WriteAll(fd, bytes, tmp_path); !st.ok()) return st;
    on_disk += bytes.size();
    StartWriteback();
    return absl::OkStatus();
  }
  // Has the kernel start writing the file out every kWritebackChunk bytes
  // (sync_file_range, asynchronous), so that Finish's fsync of a big image
  // waits for the last chunk only: patch writes while it rebuilds files.
  void StartWriteback() {
    static constexpr uint64_t kWritebackChunk = 8 << 20;
    if (on_disk - written_back < kWritebackChunk) return;
    // A hint: an I/O error it would meet is reported again by Finish's fsync.
    (void)sync_file_range(fd, static_cast<off_t>(written_back), static_cast<off_t>(on_disk - written_back),
                          SYNC_FILE_RANGE_WRITE);
    written_back = on_disk;
  }
};

namespace {

// Delta images use the compact meta form; full images keep the plain one
// (there it would save a few bytes of megabytes).
std::string Lead(bool is_delta, bool placed, bool lzma_meta = false) {
  std::string out(internal::kMagic, 8);
  out.push_back(static_cast<char>(internal::kFormatVersion));
  out.push_back(static_cast<char>((is_delta ? internal::kFlagDelta | internal::kFlagCompactMeta : 0) |
                                  (placed ? internal::kFlagPlacedPacks : 0) |
                                  (lzma_meta ? internal::kFlagLzmaMeta : 0)));
  return out;
}

// The LZMA form is tried on meta content up to this size: LZMA2's optimal
// parse costs ~0.3 s per MB where zstd -19 is several times faster, and
// the form pays on small deltas, whose meta is mostly their packed patches
// (prettier 3.2.2->3.2.3, 121 KB of content: 2.8 KB less than zstd's frame).
constexpr uint64_t kLzmaMetaMaxContent = 1 << 20;

}  // namespace

absl::StatusOr<std::unique_ptr<CdimgWriter>> CdimgWriter::Create(const std::string& path,
                                                                 Options options) {
  std::unique_ptr<CdimgWriter> w(new CdimgWriter());
  w->s_ = std::make_unique<State>();
  State& s = *w->s_;
  if (options.placed_packs && !options.parent)
    return absl::InvalidArgumentError(StrCat(path, ": placed packs need a delta image"));
  s.path = path;
  s.options = options;
  s.tmp_path = StrCat(path, ".tmp.", getpid(), ".", std::random_device{}());
  s.fd = open(s.tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (s.fd < 0) return ErrnoStatus(errno, "create", s.tmp_path);
  if (auto st = s.Write(Lead(options.parent != nullptr, options.placed_packs)); !st.ok()) return st;
  return w;
}

CdimgWriter::~CdimgWriter() {
  if (!s_) return;
  if (s_->fd >= 0) close(s_->fd);
  if (!s_->finished) unlink(s_->tmp_path.c_str());
}

uint64_t CdimgWriter::blob_bytes() const { return s_->blob_bytes; }

absl::StatusOr<BlobRef> CdimgWriter::AppendBlob(std::string_view bytes) {
  if (!s_->packs.empty())
    return absl::FailedPreconditionError(StrCat(s_->path, ": blobs must be appended before the packs"));
  if (auto st = s_->Write(bytes); !st.ok()) return st;
  BlobRef ref{s_->blob_bytes, bytes.size()};
  s_->blob_bytes += bytes.size();
  return ref;
}

absl::StatusOr<uint32_t> CdimgWriter::AppendPack(std::string_view raw, int zstd_level) {
  if (raw.empty() || raw.size() > kMaxPackRawBytes)
    return absl::InvalidArgumentError(StrCat(s_->path, ": pack of ", raw.size(), " bytes"));
  auto stored = internal::CompressPack(raw, zstd_level);
  if (!stored.ok()) return stored.status();
  if (auto st = s_->Write(*stored); !st.ok()) return st;
  s_->blob_bytes += stored->size();
  s_->packs.push_back(stored->size());
  s_->packs_raw.push_back(raw.size());
  return static_cast<uint32_t>(s_->packs.size() - 1);
}

absl::StatusOr<std::string> CdimgWriter::CompressPack(std::string_view raw, int zstd_level) {
  if (raw.empty() || raw.size() > kMaxPackRawBytes)
    return absl::InvalidArgumentError(StrCat("pack of ", raw.size(), " bytes"));
  return internal::CompressPack(raw, zstd_level);
}

absl::StatusOr<uint32_t> CdimgWriter::AppendStoredPack(std::string_view stored, uint64_t raw_length) {
  if (raw_length == 0 || raw_length > kMaxPackRawBytes)
    return absl::InvalidArgumentError(StrCat(s_->path, ": pack of ", raw_length, " bytes"));
  if (auto st = internal::CheckPackHeader(stored, raw_length); !st.ok())
    return Annotate(st, StrCat(s_->path, ": copied pack of ", raw_length, " bytes"));
  if (auto st = s_->Write(stored); !st.ok()) return st;
  s_->blob_bytes += stored.size();
  s_->packs.push_back(stored.size());
  s_->packs_raw.push_back(raw_length);
  return static_cast<uint32_t>(s_->packs.size() - 1);
}

absl::Status CdimgWriter::Finish(std::string_view config_json, const std::vector<Entry>& entries,
                                 const std::vector<Recipe>& recipes, std::string_view inline_pack) {
  State& s = *s_;
  if (s.finished) return absl::FailedPreconditionError("cdimg writer already finished");
  const CdimgImage* parent = s.options.parent;
  const bool compact = parent != nullptr;
  if (!inline_pack.empty()) {
    if (!compact) return absl::InvalidArgumentError(StrCat(s.path, ": an inline pack needs a delta image"));
    if (inline_pack.size() > kMaxPackRawBytes)
      return absl::InvalidArgumentError(StrCat(s.path, ": pack of ", inline_pack.size(), " bytes"));
    s.packs.push_back(0);
    s.packs_raw.push_back(inline_pack.size());
  }
  if (config_json.size() > kMaxConfigBytes)
    return absl::InvalidArgumentError(StrCat(s.path, ": OCI config of ", config_json.size(),
                                             " bytes exceeds the limit of ", kMaxConfigBytes));
  internal::SamePathBase same_path;
  if (compact) same_path = internal::SamePathIn(*parent);
  auto raw = internal::EncodeIndex(entries, recipes, s.blob_bytes, s.packs, compact ? &same_path : nullptr,
                                   s.options.placed_packs ? &s.packs_raw : nullptr);
  if (!raw.ok()) return Annotate(raw.status(), s.path);
  std::string dict;
  if (parent) dict = internal::MetaPrefix(*parent, compact);
  std::string meta_raw = compact ? internal::PackConfigDigests(config_json) : std::string(config_json);
  const uint64_t stored_config_length = meta_raw.size();
  meta_raw += raw->bytes;
  meta_raw += inline_pack;
  using MetaForm = Options::MetaForm;
  const MetaForm form = s.options.meta_form;
  absl::StatusOr<std::string> stored = absl::UnknownError("not compressed");
  absl::StatusOr<std::string> lz = absl::UnknownError("not compressed");
  const bool want_zstd = !compact || form != MetaForm::kLzma;
  const bool want_lzma =
      compact && (form == MetaForm::kLzma || (form == MetaForm::kSmaller && meta_raw.size() <= kLzmaMetaMaxContent));
  auto zstd_form = [&] { stored = internal::CompressMeta(meta_raw, dict, s.options.index_zstd_level); };
  if (want_zstd && want_lzma && s.options.helpers) {
    // Side by side: the LZMA form cannot be bounded by the zstd frame's size,
    // but only one that comes in under it is kept, as below.
    s.options.helpers->Run({[&] { lz = GetCodec(CodecId::kLzma).Encode(dict, meta_raw); }, zstd_form});
  } else {
    if (want_zstd) zstd_form();
    // Bounded by the zstd frame: the encoder gives up as soon as it would
    // not be smaller (most big metas, where zstd wins).
    uint64_t limit = stored.ok() ? stored->size() : std::numeric_limits<uint64_t>::max();
    if (want_lzma) lz = GetCodec(CodecId::kLzma).EncodeWithin(dict, meta_raw, NoHelpers(), limit);
  }
  bool lzma_meta = false;
  if (want_lzma) {
    if (!lz.ok() && form == MetaForm::kLzma) return Annotate(lz.status(), s.path);
    if (lz.ok()) {
      std::string section;
      internal::PutVarint(&section, meta_raw.size());
      section += *lz;
      if (!stored.ok() || section.size() < stored->size()) {
        stored = std::move(section);
        lzma_meta = true;
      }
    }
  }
  if (!stored.ok()) return stored.status();

  // Tail: ids, lengths, checksum over lead + tail; its length is the last byte.
  std::string tail(reinterpret_cast<const char*>(raw->image_id.data()), 32);
  if (parent) tail.append(reinterpret_cast<const char*>(parent->header().image_id.data()), 32);
  internal::PutVarint(&tail, stored->size());
  internal::PutVarint(&tail, stored_config_length);
  internal::PutVarint(&tail, raw->bytes.size());
  const std::string lead = Lead(parent != nullptr, s.options.placed_packs, lzma_meta);
  Digest sum = Sha256(lead + tail);
  tail.append(reinterpret_cast<const char*>(sum.data()), internal::kChecksumSize);
  tail.push_back(static_cast<char>(tail.size()));
  std::string end = std::move(*stored);
  end += tail;
  if (auto st = s.Write(end); !st.ok()) return st;
  if (auto st = s.Flush(); !st.ok()) return st;
  // The lead went out first, before the meta's form was known.
  if (lzma_meta)
    if (auto st = PWriteAll(s.fd, lead, 0, s.tmp_path); !st.ok()) return st;
  if (auto st = SyncAndClose(&s.fd, s.tmp_path); !st.ok()) return st;
  if (auto st = RenameDurably(s.tmp_path, s.path); !st.ok()) return st;
  s.finished = true;
  return absl::OkStatus();
}

}  // namespace d4c
