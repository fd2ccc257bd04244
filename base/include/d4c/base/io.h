// POSIX file helpers that retry on EINTR and return absl::Status whose
// message names the file, the operation and the cause.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c {

// "<path>: <op>: <strerror(err)>" with a code chosen by errno: ENOENT is
// NotFound, EACCES/EPERM PermissionDenied, anything else Internal.
absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path);
// Same message, always Internal (for callers whose callers map codes, e.g.
// to FUSE errnos, and must not see NotFound for a broken cache file).
absl::Status InternalErrnoStatus(int err, std::string_view op, std::string_view path);

// Writes all of `data` to fd at its file offset / at `offset`.
absl::Status WriteAll(int fd, std::string_view data, std::string_view path);
absl::Status PWriteAll(int fd, std::string_view data, uint64_t offset, std::string_view path);
// Reads exactly n bytes at offset; a file ending early is DataLoss.
absl::Status PReadAll(int fd, char* buf, size_t n, uint64_t offset, std::string_view path);

// fsync(2) then close(2); *fd is -1 afterwards whatever happens.
absl::Status SyncAndClose(int* fd, std::string_view path);
// rename(2) then fsync of the destination directory, so the new name survives a crash.
absl::Status RenameDurably(const std::string& from, const std::string& to);

// The directory holding `path` ("." for a bare name).
std::string DirectoryOf(const std::string& path);

// Replaces `path` with `data` so that a reader or a crash sees the old file
// or the whole new one, never a part: writes "<path>.tmp.XXXXXX" in the same
// directory, fsyncs it, renames it over `path` and fsyncs the directory. On
// any failure the temporary file is removed.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode = 0644);
// The same with the content produced by `fill`, which writes it to `fd`, the
// open temporary file named `tmp_path` (for messages); e.g. a file copy.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<absl::Status(int fd, const std::string& tmp_path)>& fill,
                                 mode_t mode = 0644);

// An unnamed read-write file in `dir` for spooling data bigger than memory:
// O_TMPFILE, or on filesystems without it a named file unlinked at once.
// Either way it disappears when the returned descriptor (the caller's to
// close) is closed. Failure is Internal and names the directory.
absl::StatusOr<int> OpenTempFile(const std::string& dir);

}  // namespace d4c
