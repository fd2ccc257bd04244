#include "zip_fixture.h"

#include <cstdint>

#include "d4c/deflate.h"

namespace d4c::testing {

namespace {

void Le(std::string* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

}  // namespace

std::string MakeZip(const std::vector<ZipEntry>& entries, std::string_view comment) {
  std::string out, cd;
  for (const ZipEntry& e : entries) {
    std::string data = e.content;
    if (e.level > 0) {
      auto s = deflate::Zlib(e.content, {e.level, 8}, UINT32_MAX);
      if (!s.ok()) return "";
      data = std::move(*s);
    }
    uint32_t crc = deflate::Crc32(e.content), offset = static_cast<uint32_t>(out.size());
    for (std::string* h : {&out, &cd}) {
      Le(h, h == &out ? 0x04034b50 : 0x02014b50, 4);
      if (h == &cd) Le(h, 20, 2);  // version made by
      Le(h, 20, 2);                // version needed
      Le(h, e.flags, 2);
      Le(h, e.level > 0 ? 8 : 0, 2);  // method
      Le(h, 0, 4);                    // time, date
      Le(h, crc, 4);
      Le(h, data.size(), 4);
      Le(h, e.content.size(), 4);
      Le(h, e.name.size(), 2);
      Le(h, 0, 2);  // extra field
      if (h == &cd) {
        Le(h, 0, 6);  // comment length, disk, internal attributes
        Le(h, 0, 4);  // external attributes
        Le(h, offset, 4);
      }
      h->append(e.name);
    }
    out += data;
  }
  uint64_t cd_offset = out.size();
  out += cd;
  Le(&out, 0x06054b50, 4);
  Le(&out, 0, 4);  // disk numbers
  Le(&out, entries.size(), 2);
  Le(&out, entries.size(), 2);
  Le(&out, cd.size(), 4);
  Le(&out, cd_offset, 4);
  Le(&out, comment.size(), 2);
  out.append(comment);
  return out;
}

}  // namespace d4c::testing
