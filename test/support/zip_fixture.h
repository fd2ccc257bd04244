// Zip archives built in tests, as java.util.zip writes them: local headers,
// data, central directory, end record (APPNOTE.TXT 4.3), members deflated
// by zlib (windowBits 15, memLevel 8) or stored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace d4c::testing {

struct ZipEntry {
  std::string name, content;
  int level = 6;       // zlib's level; 0: stored
  uint16_t flags = 0;  // general purpose bits (1: encrypted)
};

// The archive, or "" if zlib failed.
std::string MakeZip(const std::vector<ZipEntry>& entries, std::string_view comment = "");

}  // namespace d4c::testing
