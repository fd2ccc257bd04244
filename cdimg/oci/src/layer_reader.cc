#include "layer_reader.h"

#include <archive_entry.h>

#include <map>

#include "absl/strings/match.h"
#include "d4c/entry.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "paths.h"
#include "util.h"

namespace d4c::oci_internal {

LayerReader::LayerReader(std::string name, uint64_t limit, std::string limit_text)
    : name_(std::move(name)), limit_(limit), limit_text_(std::move(limit_text)) {}

absl::Status LayerReader::Error(std::string_view message) const {
  return absl::InvalidArgumentError(StrCat("layer ", name_, " : ", message));
}

absl::Status LayerReader::EntryError(std::string_view raw_name, std::string_view message) const {
  return Error(StrCat("entry ", Quote(raw_name), " ", message));
}

absl::Status LayerReader::ArchiveError(std::string_view context) {
  // A failure of the blob stream itself (I/O, digest mismatch) is the real
  // cause; libarchive only saw a read error.
  const absl::Status& s = input_->stream_status();
  if (!s.ok()) {
    if (absl::StrContains(s.message(), name_)) return s;
    return Annotate(s, StrCat("layer ", name_, " "));
  }
  const char* msg = archive_error_string(a_.get());
  std::string where = current_.empty() ? std::string() : StrCat(" (after entry ", Quote(current_), ")");
  return absl::DataLossError(
      StrCat("layer ", name_, " : corrupt or truncated tar ", context, where, ": ", msg ? msg : "unknown error"));
}

absl::Status LayerReader::Open(std::unique_ptr<ByteStream> blob) {
  blob_ = std::move(blob);
  input_ = std::make_unique<ArchiveInput>(blob_.get());
  a_.reset(archive_read_new());
  if (!a_) return absl::ResourceExhaustedError("archive_read_new failed");
  EnableLayerFilters(a_.get());
  archive_read_support_format_tar(a_.get());    // ustar, pax, gnu, v7
  archive_read_support_format_empty(a_.get());  // a zero-byte layer is an empty layer
  if (input_->Open(a_.get()) != ARCHIVE_OK) return ArchiveError("stream");
  return absl::OkStatus();
}

absl::Status LayerReader::CheckLimit(uint64_t produced) {
  uint64_t consumed = static_cast<uint64_t>(std::max<la_int64_t>(0, archive_filter_bytes(a_.get(), 0)));
  if (std::max(consumed, produced) <= limit_) return absl::OkStatus();
  return absl::ResourceExhaustedError(StrCat("layer ", name_, " : uncompressed size exceeds the limit of ",
                                             limit_text_, " (possible decompression bomb)"));
}

absl::Status LayerReader::SkipData() {
  // Read instead of archive_read_data_skip(): skipping inflates without
  // passing our limit check, so a bomb could burn CPU unbounded.
  while (data_pending_) {
    la_ssize_t n = archive_read_data(a_.get(), scratch_.data(), scratch_.size());
    if (n < 0) return ArchiveError("data");
    if (n == 0) data_pending_ = false;
    content_bytes_ += static_cast<uint64_t>(n);
    if (auto s = CheckLimit(content_bytes_); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> LayerReader::Next(LayerEntry* le) {
  if (auto s = SkipData(); !s.ok()) return s;
  struct archive_entry* ae = nullptr;
  int r = archive_read_next_header(a_.get(), &ae);
  if (r == ARCHIVE_EOF) return false;
  // ARCHIVE_WARN: typically "can't convert name to current locale"; the raw
  // bytes are kept, which is exactly what we want.
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return ArchiveError("header");
  if (auto s = CheckLimit(content_bytes_); !s.ok()) return s;
  data_pending_ = true;
  *le = LayerEntry();
  if (auto s = Convert(ae, le); !s.ok()) return s;
  current_ = le->raw_name;
  return true;
}

absl::Status LayerReader::StreamContent(const LayerEntry& e,
                                       const std::function<absl::Status(std::string_view)>& piece) {
  if (e.header_size > limit_)
    return absl::ResourceExhaustedError(StrCat("layer ", name_, " : entry ", Quote(e.raw_name), " of ",
                                               e.header_size, " bytes exceeds the limit of ", limit_text_,
                                               " (possible decompression bomb)"));
  uint64_t got = 0;
  while (data_pending_) {
    la_ssize_t n = archive_read_data(a_.get(), scratch_.data(), scratch_.size());
    if (n < 0) return ArchiveError("data");
    if (n == 0) data_pending_ = false;
    got += static_cast<uint64_t>(n);
    content_bytes_ += static_cast<uint64_t>(n);
    if (auto s = CheckLimit(content_bytes_); !s.ok()) return s;
    if (got > e.header_size) break;  // reported below
    if (n > 0)
      if (auto s = piece(std::string_view(scratch_.data(), static_cast<size_t>(n))); !s.ok()) return s;
  }
  if (got != e.header_size)
    return EntryError(e.raw_name, StrCat("has ", got, " bytes of data, header says ", e.header_size));
  return absl::OkStatus();
}

absl::StatusOr<std::string> LayerReader::ReadContent(const LayerEntry& e) {
  // Exact capacity: the sink may keep thousands of these strings. reserve()
  // of a lying header costs address space only, and is capped by the limit
  // (and by SquashOptions::whole_file_bytes: bigger files are streamed).
  std::string content;
  if (e.header_size <= limit_) content.reserve(e.header_size);
  auto s = StreamContent(e, [&](std::string_view p) {
    content.append(p);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return content;
}

absl::Status LayerReader::Finish() {
  if (!input_->stream_status().ok()) return ArchiveError("trailer");
  char buf[64 * 1024];
  uint64_t drained = 0;
  for (;;) {
    absl::StatusOr<size_t> n = blob_->Read(buf, sizeof buf);
    if (!n.ok()) {
      if (absl::StrContains(n.status().message(), name_)) return n.status();
      return Annotate(n.status(), StrCat("layer ", name_, " "));
    }
    if (*n == 0) return absl::OkStatus();
    drained += *n;
    if (drained > limit_) return CheckLimit(drained);
  }
}

absl::Status LayerReader::Convert(struct archive_entry* ae, LayerEntry* le) const {
  const char* name = archive_entry_pathname(ae);
  if (name == nullptr) return Error("entry without a name");
  le->raw_name = name;
  PathProblem p = NormalizeLayerPath(le->raw_name, &le->meta.path);
  if (p != PathProblem::kNone) return EntryError(le->raw_name, PathProblemText(p));
  if (auto s = ConvertType(ae, le); !s.ok()) return s;
  Entry& m = le->meta;
  m.mode = archive_entry_perm(ae) & 07777;
  // Linux symlinks have no mode of their own; every unpacker yields 0777.
  if (m.type == EntryType::kSymlink) m.mode = 0777;
  la_int64_t uid = archive_entry_uid(ae), gid = archive_entry_gid(ae);
  if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
    return EntryError(le->raw_name, StrCat("has an out-of-range owner ", uid, ":", gid));
  m.uid = static_cast<uint32_t>(uid);
  m.gid = static_cast<uint32_t>(gid);
  m.mtime_sec = archive_entry_mtime(ae);
  long nsec = archive_entry_mtime_nsec(ae);
  if (nsec < 0 || nsec >= 1000000000L) return EntryError(le->raw_name, "has an invalid mtime");
  m.mtime_nsec = static_cast<uint32_t>(nsec);
  la_int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;
  if (size < 0) return EntryError(le->raw_name, "has a negative size");
  le->header_size = static_cast<uint64_t>(size);
  return ConvertXattrs(ae, le);
}

absl::Status LayerReader::ConvertType(struct archive_entry* ae, LayerEntry* le) const {
  Entry& m = le->meta;
  if (const char* hl = archive_entry_hardlink(ae); hl != nullptr) {
    m.type = EntryType::kHardlink;
    PathProblem p = NormalizeLayerPath(hl, &m.link_target);
    if (p != PathProblem::kNone)
      return EntryError(le->raw_name, StrCat("is a hardlink whose target ", Quote(hl), " ", PathProblemText(p)));
    if (m.link_target.empty()) return EntryError(le->raw_name, "is a hardlink to the root directory");
    return absl::OkStatus();
  }
  switch (archive_entry_filetype(ae)) {
    case AE_IFREG:
      m.type = EntryType::kRegular;
      return absl::OkStatus();
    case AE_IFDIR:
      m.type = EntryType::kDirectory;
      return absl::OkStatus();
    case AE_IFIFO:
      m.type = EntryType::kFifo;
      return absl::OkStatus();
    case AE_IFCHR:
    case AE_IFBLK:
      m.type = archive_entry_filetype(ae) == AE_IFCHR ? EntryType::kCharDevice : EntryType::kBlockDevice;
      m.dev_major = static_cast<uint32_t>(archive_entry_rdevmajor(ae));
      m.dev_minor = static_cast<uint32_t>(archive_entry_rdevminor(ae));
      return absl::OkStatus();
    case AE_IFLNK: {
      m.type = EntryType::kSymlink;
      const char* target = archive_entry_symlink(ae);
      // symlink(2) refuses an empty target, so no unpacker could create it.
      if (target == nullptr || *target == '\0')
        return EntryError(le->raw_name, "is a symlink with an empty target");
      m.link_target = target;
      if (m.link_target.size() > kMaxPathBytes)
        return EntryError(le->raw_name, "is a symlink whose target is longer than 4096 bytes");
      return absl::OkStatus();
    }
    default:
      return EntryError(le->raw_name, "has an unsupported file type (socket or unknown tar type)");
  }
}

absl::Status LayerReader::ConvertXattrs(struct archive_entry* ae, LayerEntry* le) const {
  std::map<std::string, std::string> xattrs;  // sorted, later duplicates win
  archive_entry_xattr_reset(ae);
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
    std::string_view n = name ? name : "";
    if (n.empty() || n.size() > 255)
      return EntryError(le->raw_name, StrCat("has an xattr with an invalid name ", Quote(n)));
    if (size > kMaxXattrValueBytes)
      return EntryError(le->raw_name, StrCat("has xattr ", Quote(n), " larger than 64 KiB"));
    xattrs[std::string(n)] = size ? std::string(static_cast<const char*>(value), size) : std::string();
    if (xattrs.size() > kMaxXattrsPerEntry) return EntryError(le->raw_name, "has more than 256 xattrs");
  }
  for (auto& [n, v] : xattrs) le->meta.xattrs.push_back({n, std::move(v)});
  return absl::OkStatus();
}

}  // namespace d4c::oci_internal
