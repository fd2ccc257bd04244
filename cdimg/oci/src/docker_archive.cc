// docker save / skopeo "docker-archive" tarballs as an ImageSource. The outer
// tar is indexed once (member -> byte range); layers are then streamed
// straight from their byte range and verified against the config's diff_ids.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "absl/strings/str_join.h"
#include "d4c/entry.h"
#include "d4c/base/strcat.h"
#include "archive_util.h"
#include "paths.h"
#include "sources.h"
#include "streams.h"
#include "util.h"

namespace d4c::oci_internal {
namespace {

using nlohmann::json;

constexpr size_t kMaxMembers = 1 << 20;

struct Member {
  enum Kind { kFile, kSymlink, kHardlink } kind = kFile;
  uint64_t offset = 0;  // data offset in the outer tar
  uint64_t size = 0;
  std::string link;  // symlink target (raw) or hardlink target (normalized)
  bool sparse = false;
};
using MemberIndex = std::map<std::string, Member>;

absl::Status CheckNotCompressed(const std::string& ref, const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(StrCat(ref, ": cannot open ", path));
  char head[8] = {};
  ssize_t n = pread(fd, head, sizeof head, 0);
  close(fd);
  if (n > 0 && LooksCompressed(std::string_view(head, static_cast<size_t>(n))))
    return absl::InvalidArgumentError(
        StrCat(ref, ": the archive is compressed; decompress it first (layers are streamed from the plain tar)"));
  return absl::OkStatus();
}

absl::Status AddMember(struct archive* a, struct archive_entry* ae, MemberIndex* index) {
  std::string name;
  const char* raw = archive_entry_pathname(ae);
  if (raw == nullptr || NormalizeLayerPath(raw, &name) != PathProblem::kNone || name.empty())
    return absl::OkStatus();  // never referenced by a sane manifest.json
  Member m;
  if (const char* hl = archive_entry_hardlink(ae)) {
    m.kind = Member::kHardlink;
    if (NormalizeLayerPath(hl, &m.link) != PathProblem::kNone) return absl::OkStatus();
  } else if (archive_entry_filetype(ae) == AE_IFLNK) {
    m.kind = Member::kSymlink;
    m.link = archive_entry_symlink(ae) ? archive_entry_symlink(ae) : "";
  } else if (archive_entry_filetype(ae) == AE_IFREG) {
    // After the header (and any pax/GNU extension headers) is consumed,
    // the uncompressed position is where the member's data starts.
    m.offset = static_cast<uint64_t>(archive_filter_bytes(a, 0));
    m.size = static_cast<uint64_t>(std::max<la_int64_t>(0, archive_entry_size(ae)));
    m.sparse = archive_entry_sparse_count(ae) > 0;
  } else {
    return absl::OkStatus();
  }
  (*index)[name] = std::move(m);
  return absl::OkStatus();
}

absl::StatusOr<MemberIndex> IndexArchive(const std::string& ref, const std::string& path) {
  if (auto s = CheckNotCompressed(ref, path); !s.ok()) return s;
  ScopedCLocale c_locale;
  ArchiveReadPtr a(archive_read_new());
  if (!a) return absl::ResourceExhaustedError("archive_read_new failed");
  archive_read_support_filter_none(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 64 * 1024) != ARCHIVE_OK)
    return absl::InvalidArgumentError(StrCat(ref, ": ", archive_error_string(a.get())));
  MemberIndex index;
  for (;;) {
    struct archive_entry* ae = nullptr;
    int r = archive_read_next_header(a.get(), &ae);
    if (r == ARCHIVE_EOF) return index;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      const char* msg = archive_error_string(a.get());
      return absl::InvalidArgumentError(StrCat(ref, ": not a readable tar: ", msg ? msg : "unknown error"));
    }
    if (auto s = AddMember(a.get(), ae, &index); !s.ok()) return s;
    if (index.size() > kMaxMembers) return absl::InvalidArgumentError(StrCat(ref, ": too many members"));
    // The file reader seeks, so skipping a layer's data costs nothing.
    if (archive_read_data_skip(a.get()) != ARCHIVE_OK)
      return absl::InvalidArgumentError(StrCat(ref, ": truncated tar"));
  }
}

// Lexically resolves symlink `target` found at member `name` ("a/layer.tar"
// -> "../x.tar" gives "x.tar"); nullopt if it leaves the archive.
std::optional<std::string> ResolveSymlink(std::string_view name, std::string_view target) {
  if (target.starts_with("/")) return std::nullopt;
  std::vector<std::string_view> parts;
  std::string_view parent = ParentPath(name);
  std::string joined = parent.empty() ? std::string(target) : StrCat(parent, "/", target);
  for (std::string_view rest = joined; !rest.empty();) {
    size_t slash = rest.find('/');
    std::string_view comp = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (comp.empty() || comp == ".") continue;
    if (comp != "..") {
      parts.push_back(comp);
    } else if (parts.empty()) {
      return std::nullopt;
    } else {
      parts.pop_back();
    }
  }
  std::string out;
  for (std::string_view p : parts) out = out.empty() ? std::string(p) : StrCat(out, "/", p);
  return out;
}

// Follows symlinks/hardlinks (skopeo's legacy "<id>/layer.tar" entries are
// symlinks to "<diffid>.tar") to a regular member.
absl::StatusOr<const Member*> ResolveMember(const MemberIndex& index, const std::string& ref,
                                            std::string_view raw) {
  std::string name;
  if (NormalizeLayerPath(raw, &name) != PathProblem::kNone)
    return absl::InvalidArgumentError(StrCat(ref, ": manifest.json names an invalid member ", Quote(raw)));
  for (int hops = 0; hops < 8; ++hops) {
    auto it = index.find(name);
    if (it == index.end())
      return absl::NotFoundError(StrCat(ref, ": member ", Quote(raw), " is missing from the archive"));
    const Member& m = it->second;
    if (m.kind == Member::kFile) {
      if (m.sparse) return absl::InvalidArgumentError(StrCat(ref, ": member ", Quote(raw), " is a sparse file"));
      return &m;
    }
    std::optional<std::string> next =
        m.kind == Member::kHardlink ? std::optional<std::string>(m.link) : ResolveSymlink(name, m.link);
    if (!next)
      return absl::InvalidArgumentError(StrCat(ref, ": member ", Quote(raw), " links outside the archive"));
    name = *next;
  }
  return absl::InvalidArgumentError(StrCat(ref, ": member ", Quote(raw), " is a link loop"));
}

absl::StatusOr<std::string> ReadMember(const std::string& path, const Member& m, uint64_t limit,
                                       std::string_view what) {
  if (m.size > limit) return absl::InvalidArgumentError(StrCat(what, " is too large (", m.size, " bytes)"));
  absl::StatusOr<std::unique_ptr<FileRangeStream>> in = FileRangeStream::Open(path, m.offset, m.size);
  if (!in.ok()) return in.status();
  return ReadAll(**in, limit, what);
}

// "name" -> "docker.io/library/name:latest" etc., so that the short forms
// people type match skopeo/docker's fully qualified RepoTags.
std::string NormalizeDockerRef(std::string_view r) {
  std::string s(r);
  size_t slash = s.find('/');
  std::string_view first = slash == std::string::npos ? std::string_view() : std::string_view(s).substr(0, slash);
  if (slash == std::string::npos) {
    s = "docker.io/library/" + s;
  } else if (first.find_first_of(".:") == std::string_view::npos && first != "localhost") {
    s = "docker.io/" + s;
  }
  size_t last_slash = s.rfind('/');
  if (s.find(':', last_slash) == std::string::npos && s.find('@') == std::string::npos) s += ":latest";
  return s;
}

std::vector<std::string> RepoTags(const json& item) {
  std::vector<std::string> tags;
  if (const json* t = JsonField(item, "RepoTags"); t && t->is_array())
    for (const json& v : *t)
      if (v.is_string()) tags.push_back(v.get<std::string>());
  return tags;
}

absl::StatusOr<const json*> SelectImage(const json& manifest, const std::string& ref,
                                        const std::optional<std::string>& want) {
  if (!manifest.is_array() || manifest.empty())
    return absl::InvalidArgumentError(StrCat(ref, ": manifest.json is not a non-empty array"));
  std::vector<std::string> all;
  for (const json& item : manifest) {
    std::vector<std::string> tags = RepoTags(item);
    all.push_back(tags.empty() ? "(untagged)" : absl::StrJoin(tags, " "));
  }
  if (!want) {
    if (manifest.size() == 1) return &manifest[0];
    return absl::InvalidArgumentError(
        StrCat(ref, ": the archive holds ", manifest.size(),
               " images; pick one with docker-archive:TAR:NAME:TAG or :@N; images: ", absl::StrJoin(all, ", ")));
  }
  if (want->starts_with("@")) {
    size_t n = 0;
    for (char c : want->substr(1)) n = (c >= '0' && c <= '9' && n < kMaxMembers) ? n * 10 + (c - '0') : SIZE_MAX;
    if (want->size() > 1 && n < manifest.size()) return &manifest[n];
  } else {
    for (const json& item : manifest)
      for (const std::string& t : RepoTags(item))
        if (NormalizeDockerRef(t) == NormalizeDockerRef(*want)) return &item;
  }
  return absl::NotFoundError(
      StrCat(ref, ": no image ", Quote(*want), " in the archive; images: ", absl::StrJoin(all, ", ")));
}

// The config's name is its digest in every known writer ("<hex>.json",
// "blobs/sha256/<hex>"); verify it when it is.
absl::Status VerifyConfigName(std::string_view name, const std::string& config, const std::string& ref) {
  std::string_view base = BaseName(name);
  if (base.ends_with(".json")) base.remove_suffix(5);
  Digest want;
  if (base.size() != 64 || !ParseDigestHex(base, &want)) return absl::OkStatus();
  if (Sha256(config) != want)
    return absl::DataLossError(StrCat(ref, ": config ", Quote(name), " does not match its digest"));
  return absl::OkStatus();
}

struct ArchiveLayer {
  LayerDescriptor desc;
  Digest diff_id;
  uint64_t offset = 0;
  bool compressed = false;
};

class DockerArchiveSource : public ImageSource {
 public:
  DockerArchiveSource(std::string ref, std::string path, std::string config, std::vector<ArchiveLayer> layers)
      : ref_(std::move(ref)), path_(std::move(path)), config_(std::move(config)), layers_(std::move(layers)) {
    for (const ArchiveLayer& l : layers_) descs_.push_back(l.desc);
  }
  std::string Describe() const override { return ref_; }
  const std::string& config_json() const override { return config_; }
  const std::vector<LayerDescriptor>& layers() const override { return descs_; }

  absl::StatusOr<std::unique_ptr<ByteStream>> OpenLayer(size_t i) const override {
    if (i >= layers_.size()) return absl::OutOfRangeError(StrCat(ref_, ": no layer ", i));
    const ArchiveLayer& l = layers_[i];
    std::string what = StrCat("layer ", l.desc.digest);
    absl::StatusOr<std::unique_ptr<FileRangeStream>> range = FileRangeStream::Open(path_, l.offset, l.desc.size);
    if (!range.ok()) return range.status();
    if (!l.compressed)
      return std::unique_ptr<ByteStream>(
          std::make_unique<VerifyingStream>(std::move(*range), l.diff_id, l.desc.size, what + " "));
    // diff_ids name the uncompressed tar: verify after decompressing.
    absl::StatusOr<std::unique_ptr<ByteStream>> plain = OpenDecompressingStream(std::move(*range), what);
    if (!plain.ok()) return plain.status();
    return std::unique_ptr<ByteStream>(
        std::make_unique<VerifyingStream>(std::move(*plain), l.diff_id, std::nullopt, what + " "));
  }

 private:
  std::string ref_, path_, config_;
  std::vector<ArchiveLayer> layers_;
  std::vector<LayerDescriptor> descs_;
};

absl::StatusOr<std::vector<Digest>> DiffIds(const std::string& config, const std::string& ref) {
  absl::StatusOr<json> j = ParseJson(config, ref + ": config");
  if (!j.ok()) return j.status();
  const json* rootfs = JsonField(*j, "rootfs");
  const json* ids = rootfs ? JsonField(*rootfs, "diff_ids") : nullptr;
  if (ids == nullptr || !ids->is_array())
    return absl::InvalidArgumentError(StrCat(ref, ": config has no rootfs.diff_ids"));
  std::vector<Digest> out;
  for (const json& id : *ids) {
    absl::StatusOr<Digest> d = ParseDigest(id.is_string() ? id.get<std::string>() : "", ref + ": diff_id");
    if (!d.ok()) return d.status();
    out.push_back(*d);
  }
  return out;
}

absl::StatusOr<std::vector<ArchiveLayer>> ArchiveLayers(const MemberIndex& index, const json& image,
                                                        const std::vector<Digest>& diff_ids,
                                                        const std::string& ref, const std::string& path) {
  const json* names = JsonField(image, "Layers");
  if (names == nullptr || !names->is_array())
    return absl::InvalidArgumentError(StrCat(ref, ": manifest.json entry has no Layers"));
  if (names->size() != diff_ids.size())
    return absl::InvalidArgumentError(StrCat(ref, ": manifest.json lists ", names->size(),
                                             " layers but the config has ", diff_ids.size(), " diff_ids"));
  std::vector<ArchiveLayer> out;
  for (size_t i = 0; i < names->size(); ++i) {
    const json& n = (*names)[i];
    absl::StatusOr<const Member*> m = ResolveMember(index, ref, n.is_string() ? n.get<std::string>() : "");
    if (!m.ok()) return m.status();
    ArchiveLayer l;
    l.diff_id = diff_ids[i];
    l.offset = (*m)->offset;
    l.desc = {"application/vnd.oci.image.layer.v1.tar", DigestString(l.diff_id), (*m)->size};
    absl::StatusOr<std::unique_ptr<FileRangeStream>> head =
        FileRangeStream::Open(path, l.offset, std::min<uint64_t>(8, l.desc.size));
    if (!head.ok()) return head.status();
    char buf[8];
    absl::StatusOr<size_t> got = (*head)->Read(buf, sizeof buf);
    if (!got.ok()) return got.status();
    l.compressed = LooksCompressed(std::string_view(buf, *got));
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageSource>> OpenDockerArchive(const std::string& ref, const std::string& path,
                                                               const std::optional<std::string>& want) {
  absl::StatusOr<MemberIndex> index = IndexArchive(ref, path);
  if (!index.ok()) return index.status();
  absl::StatusOr<const Member*> mm = ResolveMember(*index, ref, "manifest.json");
  if (!mm.ok()) return mm.status();
  absl::StatusOr<std::string> mtext = ReadMember(path, **mm, kMaxManifestBytes, ref + ": manifest.json");
  if (!mtext.ok()) return mtext.status();
  absl::StatusOr<json> manifest = ParseJson(*mtext, ref + ": manifest.json");
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<const json*> image = SelectImage(*manifest, ref, want);
  if (!image.ok()) return image.status();
  std::string config_name = JsonString(**image, "Config").value_or("");
  absl::StatusOr<const Member*> cm = ResolveMember(*index, ref, config_name);
  if (!cm.ok()) return cm.status();
  absl::StatusOr<std::string> config = ReadMember(path, **cm, kMaxConfigBytes, ref + ": config");
  if (!config.ok()) return config.status();
  if (auto s = VerifyConfigName(config_name, *config, ref); !s.ok()) return s;
  absl::StatusOr<std::vector<Digest>> diff_ids = DiffIds(*config, ref);
  if (!diff_ids.ok()) return diff_ids.status();
  absl::StatusOr<std::vector<ArchiveLayer>> layers = ArchiveLayers(*index, **image, *diff_ids, ref, path);
  if (!layers.ok()) return layers.status();
  return std::unique_ptr<ImageSource>(
      std::make_unique<DockerArchiveSource>(ref, path, std::move(*config), std::move(*layers)));
}

}  // namespace d4c::oci_internal
