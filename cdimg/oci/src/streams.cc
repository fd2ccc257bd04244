#include "streams.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "d4c/base/strcat.h"
#include "archive_util.h"

namespace d4c::oci_internal {

absl::StatusOr<std::unique_ptr<FileRangeStream>> FileRangeStream::Open(const std::string& path, uint64_t offset,
                                                                       std::optional<uint64_t> length) {
  std::unique_ptr<FileRangeStream> s(new FileRangeStream());
  s->path_ = path;
  s->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (s->fd_ < 0) return absl::NotFoundError(StrCat("open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (fstat(s->fd_, &st) != 0) return absl::InternalError(StrCat("stat ", path, ": ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(StrCat(path, ": not a regular file"));
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  uint64_t len = length.value_or(file_size >= offset ? file_size - offset : 0);
  if (offset > file_size || len > file_size - offset)
    return absl::OutOfRangeError(
        StrCat(path, ": range ", offset, "+", len, " is beyond the end of the file (", file_size, " bytes)"));
  s->offset_ = offset;
  s->length_ = len;
  return s;
}

FileRangeStream::~FileRangeStream() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<size_t> FileRangeStream::Read(char* buf, size_t n) {
  uint64_t want = std::min<uint64_t>(n, length_ - pos_);
  if (want == 0) return 0;
  for (;;) {
    ssize_t got = pread(fd_, buf, want, static_cast<off_t>(offset_ + pos_));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::DataLossError(StrCat("read ", path_, ": ", std::strerror(errno)));
    // The file shrank under us: report it rather than a silent short blob.
    if (got == 0) return absl::DataLossError(StrCat("read ", path_, ": unexpected end of file"));
    pos_ += static_cast<uint64_t>(got);
    return static_cast<size_t>(got);
  }
}

VerifyingStream::VerifyingStream(std::unique_ptr<ByteStream> inner, Digest expected, std::optional<uint64_t> size,
                                 std::string what)
    : inner_(std::move(inner)), expected_(expected), size_(size), what_(std::move(what)) {}

absl::Status VerifyingStream::Check() {
  if (size_ && seen_ != *size_)
    return absl::DataLossError(StrCat(what_, ": size mismatch: expected ", *size_, " bytes, blob has ", seen_));
  Digest got = hasher_.Finish();
  if (got != expected_)
    return absl::DataLossError(StrCat(what_, ": digest mismatch: expected ", DigestString(expected_),
                                      ", content hashes to ", DigestString(got)));
  return absl::OkStatus();
}

absl::StatusOr<size_t> VerifyingStream::Read(char* buf, size_t n) {
  if (final_) {
    if (!final_->ok()) return *final_;
    return 0;
  }
  absl::StatusOr<size_t> got = inner_->Read(buf, n);
  if (!got.ok()) return got.status();
  if (*got == 0) {
    final_ = Check();
    if (!final_->ok()) return *final_;
    return 0;
  }
  hasher_.Update(buf, *got);
  seen_ += *got;
  if (size_ && seen_ > *size_) {
    final_ =
        absl::DataLossError(StrCat(what_, ": size mismatch: blob is larger than the expected ", *size_, " bytes"));
    return *final_;
  }
  return got;
}

namespace {

class DecompressingStream : public ByteStream {
 public:
  DecompressingStream(std::unique_ptr<ByteStream> inner, std::string what)
      : inner_(std::move(inner)), input_(inner_.get()), what_(std::move(what)) {}

  absl::Status Open() {
    a_.reset(archive_read_new());
    if (!a_) return absl::ResourceExhaustedError("archive_read_new failed");
    EnableLayerFilters(a_.get());
    archive_read_support_format_raw(a_.get());
    if (input_.Open(a_.get()) != ARCHIVE_OK) return Error();
    struct archive_entry* e = nullptr;
    if (archive_read_next_header(a_.get(), &e) != ARCHIVE_OK) return Error();
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    la_ssize_t got = archive_read_data(a_.get(), buf, n);
    if (got < 0) return Error();
    return static_cast<size_t>(got);
  }

 private:
  absl::Status Error() {
    if (!input_.stream_status().ok()) return input_.stream_status();
    const char* msg = archive_error_string(a_.get());
    return absl::DataLossError(StrCat(what_, ": cannot decompress: ", msg ? msg : "unknown error"));
  }

  std::unique_ptr<ByteStream> inner_;
  ArchiveInput input_;
  std::string what_;
  ArchiveReadPtr a_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteStream>> OpenDecompressingStream(std::unique_ptr<ByteStream> inner,
                                                                    std::string what) {
  auto s = std::make_unique<DecompressingStream>(std::move(inner), std::move(what));
  if (auto st = s->Open(); !st.ok()) return st;
  return std::unique_ptr<ByteStream>(std::move(s));
}

absl::StatusOr<std::string> ReadAll(ByteStream& in, uint64_t limit, std::string_view what) {
  std::string out;
  char buf[64 * 1024];
  for (;;) {
    absl::StatusOr<size_t> n = in.Read(buf, sizeof buf);
    if (!n.ok()) return n.status();
    if (*n == 0) return out;
    if (out.size() + *n > limit)
      return absl::ResourceExhaustedError(StrCat(what, ": larger than the limit of ", limit, " bytes"));
    out.append(buf, *n);
  }
}

bool LooksCompressed(std::string_view h) {
  auto starts = [&](std::string_view magic) { return h.substr(0, magic.size()) == magic; };
  return starts("\x1f\x8b") || starts("\x28\xb5\x2f\xfd") ||
         starts(
             "\xfd"
             "7zXZ") ||
         starts("BZh") || starts("\x04\x22\x4d\x18") || starts("\x5d\x00\x00");
}

}  // namespace d4c::oci_internal
