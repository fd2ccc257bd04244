#include <algorithm>
#include <cstring>
#include <vector>

#include "d4c/base/strcat.h"
#include "d4c/entry.h"
#include "d4c/record.h"

namespace d4c {
namespace internal {

void PutU16(std::string* out, uint16_t v) {
  char b[2] = {static_cast<char>(v), static_cast<char>(v >> 8)};
  out->append(b, 2);
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint16_t GetU16(const char* p) {
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  return static_cast<uint16_t>(u[0] | u[1] << 8);
}
uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  return u[0] | u[1] << 8 | u[2] << 16 | static_cast<uint32_t>(u[3]) << 24;
}
uint64_t GetU64(const char* p) { return GetU32(p) | static_cast<uint64_t>(GetU32(p + 4)) << 32; }

void AppendRecord(const Entry& e, std::string* out) {
  size_t start = out->size();
  PutU32(out, 0);  // patched below
  PutU16(out, static_cast<uint16_t>(e.path.size()));
  out->append(e.path);
  out->push_back(static_cast<char>(e.type));
  PutU16(out, static_cast<uint16_t>(e.mode & 07777));
  PutU32(out, e.uid);
  PutU32(out, e.gid);
  PutU64(out, static_cast<uint64_t>(e.mtime_sec));
  PutU32(out, e.mtime_nsec);
  switch (e.type) {
    case EntryType::kRegular:
      PutU64(out, e.size);
      out->append(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
      break;
    case EntryType::kSymlink:
    case EntryType::kHardlink:
      PutU16(out, static_cast<uint16_t>(e.link_target.size()));
      out->append(e.link_target);
      break;
    case EntryType::kCharDevice:
    case EntryType::kBlockDevice:
      PutU32(out, e.dev_major);
      PutU32(out, e.dev_minor);
      break;
    case EntryType::kDirectory:
    case EntryType::kFifo:
      break;
  }
  PutU16(out, static_cast<uint16_t>(e.xattrs.size()));
  for (const Xattr& x : e.xattrs) {
    PutU16(out, static_cast<uint16_t>(x.name.size()));
    out->append(x.name);
    PutU32(out, static_cast<uint32_t>(x.value.size()));
    out->append(x.value);
  }
  uint32_t len = static_cast<uint32_t>(out->size() - start - 4);
  std::memcpy(out->data() + start, &len, 4);  // little-endian host (x86_64/arm64)
}

namespace {

// Sequential bounds-checked reader over one record.
class Cursor {
 public:
  Cursor(std::string_view buf) : buf_(buf) {}
  bool Take(size_t n, const char** p) {
    if (buf_.size() - pos_ < n) return false;
    *p = buf_.data() + pos_;
    pos_ += n;
    return true;
  }
  bool U8(uint8_t* v) { const char* p; if (!Take(1, &p)) return false; *v = static_cast<uint8_t>(*p); return true; }
  bool U16(uint16_t* v) { const char* p; if (!Take(2, &p)) return false; *v = GetU16(p); return true; }
  bool U32(uint32_t* v) { const char* p; if (!Take(4, &p)) return false; *v = GetU32(p); return true; }
  bool U64(uint64_t* v) { const char* p; if (!Take(8, &p)) return false; *v = GetU64(p); return true; }
  bool Str(size_t n, std::string_view* s) { const char* p; if (!Take(n, &p)) return false; *s = {p, n}; return true; }
  size_t pos() const { return pos_; }
  bool done() const { return pos_ == buf_.size(); }

 private:
  std::string_view buf_;
  size_t pos_ = 0;
};

absl::Status Corrupt(size_t offset, std::string_view what) {
  return absl::DataLossError(StrCat("index record at offset ", offset, ": ", what));
}

bool ValidType(uint8_t t) { return t >= 1 && t <= 7; }

absl::Status ParseTypeSpecific(Cursor& c, RecordView* r) {
  uint16_t n;
  switch (r->type) {
    case EntryType::kRegular: {
      const char* d;
      if (!c.U64(&r->size) || !c.Take(32, &d)) return absl::DataLossError("truncated file fields");
      r->digest = reinterpret_cast<const uint8_t*>(d);
      return absl::OkStatus();
    }
    case EntryType::kSymlink:
    case EntryType::kHardlink:
      if (!c.U16(&n) || n > kMaxPathBytes || !c.Str(n, &r->link_target))
        return absl::DataLossError("bad link target");
      return absl::OkStatus();
    case EntryType::kCharDevice:
    case EntryType::kBlockDevice:
      if (!c.U32(&r->dev_major) || !c.U32(&r->dev_minor)) return absl::DataLossError("truncated device");
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

absl::Status ParseXattrs(Cursor& c, RecordView* r) {
  size_t start = c.pos();
  uint16_t count;
  if (!c.U16(&count) || count > kMaxXattrsPerEntry) return absl::DataLossError("bad xattr count");
  std::string_view prev;
  for (uint16_t i = 0; i < count; ++i) {
    uint16_t nlen;
    uint32_t vlen;
    std::string_view name, value;
    if (!c.U16(&nlen) || nlen == 0 || !c.Str(nlen, &name) || !c.U32(&vlen) ||
        vlen > kMaxXattrValueBytes || !c.Str(vlen, &value))
      return absl::DataLossError("bad xattr");
    if (i > 0 && !(prev < name)) return absl::DataLossError("xattrs not sorted/unique");
    prev = name;
  }
  r->xattr_count = count;
  r->xattrs_raw = {nullptr, 0};
  (void)start;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RecordView> ParseRecord(std::string_view buf, size_t offset) {
  if (offset > buf.size() || buf.size() - offset < 4) return Corrupt(offset, "truncated length");
  uint32_t len = GetU32(buf.data() + offset);
  if (buf.size() - offset - 4 < len) return Corrupt(offset, "record overruns index");
  std::string_view body = buf.substr(offset + 4, len);
  Cursor c(body);
  RecordView r;
  uint16_t plen;
  uint8_t type;
  uint16_t mode;
  uint64_t mtime;
  if (!c.U16(&plen) || plen > kMaxPathBytes || !c.Str(plen, &r.path) || !c.U8(&type) ||
      !ValidType(type) || !c.U16(&mode) || !c.U32(&r.uid) || !c.U32(&r.gid) || !c.U64(&mtime) ||
      !c.U32(&r.mtime_nsec))
    return Corrupt(offset, "bad fixed fields");
  r.type = static_cast<EntryType>(type);
  r.mode = mode;
  r.mtime_sec = static_cast<int64_t>(mtime);
  if (mode & ~07777u || r.mtime_nsec >= 1000000000u) return Corrupt(offset, "bad mode or mtime");
  if (auto s = ParseTypeSpecific(c, &r); !s.ok()) return Corrupt(offset, Msg(s.message()));
  size_t xstart = c.pos();
  if (auto s = ParseXattrs(c, &r); !s.ok()) return Corrupt(offset, Msg(s.message()));
  r.xattrs_raw = body.substr(xstart, c.pos() - xstart);
  if (!c.done()) return Corrupt(offset, "trailing bytes in record");
  r.record_bytes = 4 + len;
  return r;
}

std::string_view RecordPath(std::string_view buf, size_t offset) {
  uint16_t plen = GetU16(buf.data() + offset + 4);
  return buf.substr(offset + 6, plen);
}

EntryType RecordType(std::string_view buf, size_t offset) {
  uint16_t plen = GetU16(buf.data() + offset + 4);
  return static_cast<EntryType>(buf[offset + 6 + plen]);
}

Entry ToEntry(const RecordView& r) {
  Entry e;
  e.path = std::string(r.path);
  e.type = r.type;
  e.mode = r.mode;
  e.uid = r.uid;
  e.gid = r.gid;
  e.mtime_sec = r.mtime_sec;
  e.mtime_nsec = r.mtime_nsec;
  e.size = r.size;
  e.dev_major = r.dev_major;
  e.dev_minor = r.dev_minor;
  e.link_target = std::string(r.link_target);
  if (r.digest) std::memcpy(e.digest.data(), r.digest, 32);
  const char* p = r.xattrs_raw.data() + 2;
  for (uint32_t i = 0; i < r.xattr_count; ++i) {
    uint16_t nlen = GetU16(p);
    std::string name(p + 2, nlen);
    p += 2 + nlen;
    uint32_t vlen = GetU32(p);
    e.xattrs.push_back({std::move(name), std::string(p + 4, vlen)});
    p += 4 + vlen;
  }
  return e;
}

absl::Status ValidatePath(std::string_view path) {
  if (path.empty()) return absl::OkStatus();  // the root
  if (path.size() > kMaxPathBytes) return absl::InvalidArgumentError("path too long");
  if (path.find('\0') != std::string_view::npos) return absl::InvalidArgumentError("NUL in path");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view comp = path.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..")
      return absl::InvalidArgumentError(StrCat("bad path component in \"", path, "\""));
    start = end + 1;
  }
  return absl::OkStatus();
}

}  // namespace internal

namespace {

absl::Status CheckEntry(const Entry& e) {
  using internal::ValidatePath;
  if (auto s = ValidatePath(e.path); !s.ok()) return s;
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("entry \"", e.path, "\": ", why));
  };
  if (e.mode & ~07777u) return bad("mode has bits outside 07777");
  if (e.mtime_nsec >= 1000000000u) return bad("mtime nanoseconds out of range");
  if (e.xattrs.size() > kMaxXattrsPerEntry) return bad("too many xattrs");
  for (size_t i = 0; i < e.xattrs.size(); ++i) {
    if (e.xattrs[i].name.empty() || e.xattrs[i].name.size() > 65535) return bad("bad xattr name");
    if (e.xattrs[i].value.size() > kMaxXattrValueBytes) return bad("xattr value too large");
    if (i > 0 && !(e.xattrs[i - 1].name < e.xattrs[i].name)) return bad("xattrs not sorted/unique");
  }
  if ((e.type == EntryType::kSymlink || e.type == EntryType::kHardlink) &&
      (e.link_target.empty() || e.link_target.size() > kMaxPathBytes))
    return bad("link target empty or too long");
  if (e.type == EntryType::kRegular && e.size == 0 && e.digest != EmptyDigest())
    return bad("empty file with a non-empty digest");
  if (e.path.empty() && e.type != EntryType::kDirectory) return bad("root is not a directory");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTree(const std::vector<Entry>& entries) {
  if (entries.empty() || !entries[0].path.empty())
    return absl::InvalidArgumentError("tree has no root directory entry");
  // Ancestors of the current entry; valid because a directory's subtree
  // immediately follows it in ComparePaths order.
  std::vector<std::string_view> dirs;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (auto s = CheckEntry(e); !s.ok()) return s;
    if (i > 0) {
      if (ComparePaths(entries[i - 1].path, e.path) >= 0)
        return absl::InvalidArgumentError(
            StrCat("entries not sorted/unique at \"", e.path, "\""));
      std::string_view parent = ParentPath(e.path);
      while (!dirs.empty() && dirs.back() != parent) dirs.pop_back();
      if (dirs.empty())
        return absl::InvalidArgumentError(
            StrCat("entry \"", e.path, "\": parent is missing or not a directory"));
    }
    if (e.type == EntryType::kDirectory) dirs.push_back(e.path);
  }
  for (const Entry& e : entries) {
    if (e.type != EntryType::kHardlink) continue;
    auto it = std::lower_bound(entries.begin(), entries.end(), e.link_target,
                               [](const Entry& a, const std::string& p) { return PathLess(a.path, p); });
    if (it == entries.end() || it->path != e.link_target || it->type == EntryType::kHardlink ||
        it->type == EntryType::kDirectory)
      return absl::InvalidArgumentError(StrCat(
          "hardlink \"", e.path, "\" -> \"", e.link_target, "\": target missing or not a file"));
  }
  return absl::OkStatus();
}

Digest ComputeImageId(const std::vector<Entry>& entries) {
  std::string meta;
  for (const Entry& e : entries) internal::AppendRecord(e, &meta);
  return Sha256(meta);
}

}  // namespace d4c
