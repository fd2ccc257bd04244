// Small POSIX file helpers returning absl::Status with the file name in the message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace d4c::internal {

absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path);
absl::Status WriteAll(int fd, std::string_view data, std::string_view path);
absl::Status PWriteAll(int fd, std::string_view data, uint64_t offset, std::string_view path);
// Reads exactly n bytes at offset; a short file is a DataLoss error.
absl::Status PReadAll(int fd, char* buf, size_t n, uint64_t offset, std::string_view path);
absl::Status SyncAndClose(int* fd, std::string_view path);
// rename(2) then fsync of the destination directory, so the new name survives a crash.
absl::Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace d4c::internal
