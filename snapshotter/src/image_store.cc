#include "d4c/snap/image_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "d4c/chain.h"
#include "d4c/base/io.h"
#include "d4c/base/strcat.h"

namespace d4c::snap {
namespace {

// Copies src to dst atomically (d4c/base/io.h: temp file, fsync, rename, fsync dir).
absl::Status CopyAtomic(const std::string& src, const std::string& dst) {
  int in = open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return InternalErrnoStatus(errno, "open", src);
  absl::Status status = WriteFileAtomically(dst, [&](int out, const std::string& tmp) -> absl::Status {
    struct stat st;
    if (fstat(in, &st) != 0) return InternalErrnoStatus(errno, "stat", src);
    off_t left = st.st_size;
    while (left > 0) {
      ssize_t n = copy_file_range(in, nullptr, out, nullptr, static_cast<size_t>(left), 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
        // fall back to read/write
        char buf[1 << 16];
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return InternalErrnoStatus(errno, "read", src);
        if (r == 0) break;
        if (absl::Status s = WriteAll(out, std::string_view(buf, static_cast<size_t>(r)), tmp); !s.ok()) return s;
        left -= r;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return InternalErrnoStatus(errno, StrCat("copy to ", tmp), src);
      if (n == 0) break;
      left -= n;
    }
    return absl::OkStatus();
  });
  close(in);
  return status;
}

}  // namespace

absl::StatusOr<std::string> ParseSha256(const std::string& s) {
  absl::StatusOr<Digest> d = ParseDigest(s, "image id");
  if (!d.ok()) return d.status();
  return DigestHex(*d);
}

std::string ImageStore::PathFor(const std::string& id_hex) const {
  return StrCat(dir_, "/", id_hex, ".cdimg");  // == layout::StorePath(root, id_hex)
}

absl::Status ImageStore::Replace(const std::string& id_hex, const std::string& path) const {
  auto h = CdimgImage::ReadHeader(path);
  if (!h.ok()) return absl::Status(h.status().code(), StrCat(path, ": ", Msg(h.status().message())));
  if (DigestHex(h->image_id) != id_hex)
    return absl::InvalidArgumentError(StrCat(path, " holds image sha256:", DigestHex(h->image_id),
                                             ", not sha256:", id_hex, ": not put in the store"));
  if (!Has(id_hex)) return absl::NotFoundError(StrCat("image sha256:", id_hex, " is not in the store ", dir_));
  return RenameDurably(path, PathFor(id_hex));
}

absl::Status ImageStore::Delete(const std::string& id_hex) const {
  std::string p = PathFor(id_hex);
  if (unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "delete", p);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ImageStore::ParentOf(const std::string& id_hex) const {
  std::string p = PathFor(id_hex);
  auto h = CdimgImage::ReadHeader(p);
  if (!h.ok()) return absl::Status(h.status().code(), StrCat(p, ": ", Msg(h.status().message())));
  return h->is_delta ? DigestHex(h->parent_id) : std::string();
}

namespace {
bool IsImageName(const std::string& name) {
  Digest d;
  return name.size() == 70 && name.ends_with(".cdimg") && ParseDigestHex(std::string_view(name).substr(0, 64), &d);
}
}  // namespace

std::vector<std::string> ImageStore::RemoveStrays() const {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (IsImageName(name) && e.is_regular_file(ec)) continue;
    std::error_code rm;
    std::filesystem::remove_all(e.path(), rm);
    if (!rm) removed.push_back(name);
  }
  return removed;
}

std::vector<std::string> ImageStore::List() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (IsImageName(name) && e.is_regular_file(ec)) ids.push_back(name.substr(0, 64));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool ImageStore::Has(const std::string& id_hex) const {
  struct stat st;
  return stat(PathFor(id_hex).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<ChainInfo> ImageStore::OpenChain(const std::string& top_path, const ImageHeader& top) const {
  ChainInfo info;
  info.top = top;
  info.paths.push_back(top_path);
  ImageHeader cur = top;
  std::vector<std::string> bases;
  while (cur.is_delta) {
    std::string parent = DigestHex(cur.parent_id);
    if (!Has(parent))
      return absl::FailedPreconditionError(
          StrCat("parent image sha256:", parent, " of ", DigestString(cur.image_id),
                 " is not in the store ", dir_, " (load the parent image first)"));
    std::string p = PathFor(parent);
    auto h = CdimgImage::ReadHeader(p);
    if (!h.ok()) return absl::DataLossError(StrCat(p, ": ", Msg(h.status().message())));
    if (h->image_id != cur.parent_id)
      return absl::DataLossError(StrCat(p, ": holds image ", DigestString(h->image_id), ", not sha256:", parent));
    if (info.paths.size() > 4096) return absl::FailedPreconditionError("image chain longer than 4096 images");
    info.paths.push_back(p);
    bases.push_back(p);
    cur = *h;
  }
  auto chain = ImageChain::Open(top_path, bases);
  if (!chain.ok())
    return absl::FailedPreconditionError(StrCat("image chain of ", top_path, " does not open: ",
                                                Msg(chain.status().message())));
  info.entries = (*chain)->top().size();
  for (const auto& p : info.paths) {
    struct stat st;
    if (stat(p.c_str(), &st) == 0) info.bytes += static_cast<uint64_t>(st.st_size);
  }
  return info;
}

absl::StatusOr<ChainInfo> ImageStore::Resolve(const std::string& id_hex) const {
  if (!Has(id_hex)) return absl::NotFoundError(StrCat("image sha256:", id_hex, " is not in the store ", dir_));
  std::string p = PathFor(id_hex);
  auto h = CdimgImage::ReadHeader(p);
  if (!h.ok()) return absl::DataLossError(StrCat(p, ": ", Msg(h.status().message())));
  if (DigestHex(h->image_id) != id_hex)
    return absl::DataLossError(StrCat(p, ": holds image ", DigestString(h->image_id)));
  return OpenChain(p, *h);
}

absl::StatusOr<ChainInfo> ImageStore::Check(const std::string& path) const {
  auto h = CdimgImage::ReadHeader(path);
  if (!h.ok()) return absl::InvalidArgumentError(StrCat(path, ": ", Msg(h.status().message())));
  return OpenChain(path, *h);
}

absl::StatusOr<ChainInfo> ImageStore::Import(const std::string& path, const std::string& id_hex,
                                             bool* added) const {
  if (added) *added = false;
  auto h = CdimgImage::ReadHeader(path);
  if (!h.ok()) return absl::InvalidArgumentError(StrCat(path, ": ", Msg(h.status().message())));
  if (DigestHex(h->image_id) != id_hex)
    return absl::InvalidArgumentError(StrCat(path, " holds image ", DigestString(h->image_id),
                                             ", not the image sha256:", id_hex, " it was given for"));
  return Add(path, added);
}

absl::StatusOr<ChainInfo> ImageStore::Add(const std::string& path, bool* added) const {
  if (added) *added = false;
  auto info = Check(path);
  if (!info.ok()) return info.status();
  std::string id = DigestHex(info->top.image_id);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return absl::InternalError(StrCat("create ", dir_, ": ", ec.message()));
  if (!Has(id)) {
    if (auto s = CopyAtomic(path, PathFor(id)); !s.ok()) return s;
    if (added) *added = true;
  }
  info->paths[0] = PathFor(id);
  return info;
}

}  // namespace d4c::snap
