// Canonical binary encoding of one entry's metadata (docs/format.md, "entry
// records"). Shared by the image id and the cdimg index so that equal trees
// always hash equally.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "d4c/entry.h"

namespace d4c::internal {

// Appends the record for `e` (u32 length prefix included) to `out`.
void AppendRecord(const Entry& e, std::string* out);

// A record decoded in place: views point into the buffer it was parsed from.
struct RecordView {
  std::string_view path;
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0, uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  std::string_view link_target;
  const uint8_t* digest = nullptr;  // 32 bytes, regular files only
  std::string_view xattrs_raw;      // u16 count, then (u16 name, u32 value) pairs
  uint32_t xattr_count = 0;
  size_t record_bytes = 0;  // including the length prefix
};

// Parses and bounds-checks the record starting at `buf[offset]`.
absl::StatusOr<RecordView> ParseRecord(std::string_view buf, size_t offset);
// Reads only the path of a record already validated by ParseRecord.
std::string_view RecordPath(std::string_view buf, size_t offset);
EntryType RecordType(std::string_view buf, size_t offset);
Entry ToEntry(const RecordView& r);

// Little-endian helpers used by the format code too.
void PutU16(std::string* out, uint16_t v);
void PutU32(std::string* out, uint32_t v);
void PutU64(std::string* out, uint64_t v);
uint16_t GetU16(const char* p);
uint32_t GetU32(const char* p);
uint64_t GetU64(const char* p);

// Structural checks on one path: relative, no empty/./.. components, no NUL, length.
absl::Status ValidatePath(std::string_view path);

}  // namespace d4c::internal
