#include "zip_fixture.h"

#include <cstdint>

#include "d4c/base/varint.h"
#include "d4c/deflate.h"

namespace d4c::testing {

using codec_internal::PutLE;

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
      PutLE(h, h == &out ? 0x04034b50 : 0x02014b50, 4);
      if (h == &cd) PutLE(h, 20, 2);  // version made by
      PutLE(h, 20, 2);                // version needed
      PutLE(h, e.flags, 2);
      PutLE(h, e.level > 0 ? 8 : 0, 2);  // method
      PutLE(h, 0, 4);                    // time, date
      PutLE(h, crc, 4);
      PutLE(h, data.size(), 4);
      PutLE(h, e.content.size(), 4);
      PutLE(h, e.name.size(), 2);
      PutLE(h, 0, 2);  // extra field
      if (h == &cd) {
        PutLE(h, 0, 6);  // comment length, disk, internal attributes
        PutLE(h, 0, 4);  // external attributes
        PutLE(h, offset, 4);
      }
      h->append(e.name);
    }
    out += data;
  }
  uint64_t cd_offset = out.size();
  out += cd;
  PutLE(&out, 0x06054b50, 4);
  PutLE(&out, 0, 4);  // disk numbers
  PutLE(&out, entries.size(), 2);
  PutLE(&out, entries.size(), 2);
  PutLE(&out, cd.size(), 4);
  PutLE(&out, cd_offset, 4);
  PutLE(&out, comment.size(), 2);
  out.append(comment);
  return out;
}

}  // namespace d4c::testing
