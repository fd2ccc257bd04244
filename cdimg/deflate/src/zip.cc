// A zip archive's deflated members, found through its central directory
// (deflate.h; PKWARE's APPNOTE.TXT, sections 4.3.7, 4.3.12 and 4.3.16).
#include <algorithm>
#include <cstring>

#include "d4c/base/strcat.h"
#include "d4c/base/varint.h"
#include "d4c/deflate.h"

namespace d4c::deflate {

namespace {

constexpr size_t kLocalHeader = 30, kCentralHeader = 46, kEndRecord = 22;
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64Marker = 0xffffffff;
constexpr uint16_t kDeflated = 8, kEncrypted = 1;

uint16_t Le16(std::string_view d, size_t at) { return static_cast<uint16_t>(codec_internal::GetLE(d.data() + at, 2)); }
uint32_t Le32(std::string_view d, size_t at) { return static_cast<uint32_t>(codec_internal::GetLE(d.data() + at, 4)); }

absl::Status NotZip(std::string_view what) { return absl::InvalidArgumentError(StrCat("not a zip archive: ", what)); }

// The end of central directory record: the last "PK\5\6" whose comment runs
// exactly to the end of the file.
absl::StatusOr<size_t> EndRecord(std::string_view d) {
  if (d.size() < kEndRecord) return NotZip("shorter than an end of central directory record");
  size_t lowest = d.size() > kEndRecord + 0xffff ? d.size() - kEndRecord - 0xffff : 0;
  for (size_t at = d.size() - kEndRecord + 1; at-- > lowest;) {
    if (Le32(d, at) == kEndSig && at + kEndRecord + Le16(d, at + 20) == d.size()) return at;
  }
  return NotZip("no end of central directory record");
}

}  // namespace

bool LooksZip(std::string_view d) { return d.size() >= kLocalHeader + kEndRecord && Le32(d, 0) == kLocalSig; }

absl::StatusOr<std::vector<ZipMember>> DeflatedZipMembers(std::string_view d) {
  if (!LooksZip(d)) return NotZip("no local file header at the start");
  auto end = EndRecord(d);
  if (!end.ok()) return end.status();
  uint64_t entries = Le16(d, *end + 10), cd_size = Le32(d, *end + 12), cd_offset = Le32(d, *end + 16);
  if (cd_offset == kZip64Marker || cd_size == kZip64Marker || entries == 0xffff)
    return NotZip("zip64 archives are not handled");
  if (cd_offset > *end || cd_size != *end - cd_offset)
    return NotZip("central directory not right before its end record");
  std::vector<ZipMember> out;
  size_t at = cd_offset;
  for (uint64_t k = 0; k < entries; ++k) {
    if (*end - at < kCentralHeader || Le32(d, at) != kCentralSig) return NotZip("truncated central directory");
    uint16_t flags = Le16(d, at + 8), method = Le16(d, at + 10);
    uint32_t stored = Le32(d, at + 20), raw = Le32(d, at + 24), local = Le32(d, at + 42);
    uint64_t record = kCentralHeader + uint64_t{Le16(d, at + 28)} + Le16(d, at + 30) + Le16(d, at + 32);
    if (record > *end - at) return NotZip("central directory entry past its end");
    at += record;
    // Encrypted, zip64 or stored members stay as they are.
    if (method != kDeflated || (flags & kEncrypted) || stored == kZip64Marker || raw == kZip64Marker ||
        local == kZip64Marker)
      continue;
    if (local > cd_offset || cd_offset - local < kLocalHeader || Le32(d, local) != kLocalSig)
      return NotZip("a central directory entry points at no local file header");
    uint64_t data = uint64_t{local} + kLocalHeader + Le16(d, local + 26) + Le16(d, local + 28);
    if (data > cd_offset || stored > cd_offset - data) return NotZip("a member's data runs into the central directory");
    out.push_back({data, stored, raw});
  }
  if (at != *end) return NotZip("central directory size does not match its entries");
  // In file order; a member overlapping the one before it is left as it is.
  std::sort(out.begin(), out.end(), [](const ZipMember& a, const ZipMember& b) { return a.offset < b.offset; });
  std::vector<ZipMember> kept;
  for (const ZipMember& m : out)
    if (kept.empty() || m.offset >= kept.back().offset + kept.back().stored) kept.push_back(m);
  return kept;
}

absl::StatusOr<std::string> ExpandZip(std::string_view d, uint64_t max_size,
                                      std::vector<ExpandedZipMember>* expanded) {
  auto members = DeflatedZipMembers(d);
  if (!members.ok()) return members.status();
  if (expanded) expanded->clear();
  std::string out;
  uint64_t pos = 0;
  for (const ZipMember& m : *members) {
    if (m.raw > MaxInflated(m.stored)) continue;  // cannot be real: stays as it is
    uint64_t grown = out.size() + (m.offset - pos) + m.raw;
    if (grown > max_size || grown > kMaxRaw)
      return absl::ResourceExhaustedError(StrCat("zip archive: inflated members exceed ", max_size, " bytes"));
    auto raw = InflateExact(d.substr(m.offset, m.stored), m.raw);
    if (!raw.ok()) continue;  // a member that does not inflate to its size stays as it is
    out.append(d.substr(pos, m.offset - pos));
    if (expanded) expanded->push_back({m, out.size()});
    out += *raw;
    pos = m.offset + m.stored;
  }
  if (out.size() + (d.size() - pos) > max_size)
    return absl::ResourceExhaustedError(StrCat("zip archive: inflated members exceed ", max_size, " bytes"));
  out.append(d.substr(pos));
  return out;
}

}  // namespace d4c::deflate
