// OCI image layout (index.json + blobs/sha256/...) as an ImageSource.
#include <vector>

#include "absl/strings/str_join.h"
#include "d4c/entry.h"
#include "d4c/base/strcat.h"
#include "sources.h"
#include "streams.h"
#include "util.h"

namespace d4c::oci_internal {
namespace {

using nlohmann::json;

struct Descriptor {
  std::string media_type;
  std::string digest;
  uint64_t size = 0;
  std::string ref_name;  // org.opencontainers.image.ref.name
  std::string os, arch, variant;
};

absl::StatusOr<Descriptor> ParseDescriptor(const json& j, std::string_view what) {
  Descriptor d;
  std::optional<std::string> digest = JsonString(j, "digest");
  std::optional<uint64_t> size = JsonUint(j, "size");
  if (!digest || !size) return absl::InvalidArgumentError(StrCat(what, ": descriptor lacks digest or size"));
  d.digest = *digest;
  d.size = *size;
  d.media_type = JsonString(j, "mediaType").value_or("");
  if (const json* a = JsonField(j, "annotations"))
    d.ref_name = JsonString(*a, "org.opencontainers.image.ref.name").value_or("");
  if (const json* p = JsonField(j, "platform")) {
    d.os = JsonString(*p, "os").value_or("");
    d.arch = JsonString(*p, "architecture").value_or("");
    d.variant = JsonString(*p, "variant").value_or("");
  }
  return d;
}

absl::StatusOr<std::vector<Descriptor>> ParseDescriptorList(const json& j, const char* key,
                                                            std::string_view what) {
  const json* list = JsonField(j, key);
  if (list == nullptr || !list->is_array())
    return absl::InvalidArgumentError(StrCat(what, ": missing \"", key, "\" array"));
  std::vector<Descriptor> out;
  for (const json& item : *list) {
    absl::StatusOr<Descriptor> d = ParseDescriptor(item, StrCat(what, " ", key, "[", out.size(), "]"));
    if (!d.ok()) return d.status();
    out.push_back(std::move(*d));
  }
  return out;
}

class OciLayout {
 public:
  OciLayout(std::string ref, std::string dir) : ref_(std::move(ref)), dir_(std::move(dir)) {}

  absl::StatusOr<std::string> BlobPath(std::string_view digest, std::string_view what) const {
    absl::StatusOr<Digest> d = ParseDigest(digest, what);
    if (!d.ok()) return d.status();
    return StrCat(dir_, "/blobs/sha256/", DigestHex(*d));
  }

  // A small blob (manifest, index, config), verified against its descriptor.
  absl::StatusOr<std::string> ReadBlob(const Descriptor& d, uint64_t limit, std::string_view what) const {
    if (d.size > limit)
      return absl::InvalidArgumentError(
          StrCat(ref_, ": ", what, " ", d.digest, " is too large (", d.size, " bytes)"));
    absl::StatusOr<std::string> path = BlobPath(d.digest, StrCat(ref_, ": ", what));
    if (!path.ok()) return path.status();
    absl::StatusOr<std::unique_ptr<FileRangeStream>> file = FileRangeStream::Open(*path, 0, std::nullopt);
    if (!file.ok())
      return absl::NotFoundError(StrCat(ref_, ": ", what, " blob missing: ", file.status().message()));
    Digest expected;
    ParseDigestHex(d.digest, &expected);
    VerifyingStream in(std::move(*file), expected, d.size, StrCat(ref_, ": ", what, " ", d.digest));
    return ReadAll(in, limit, StrCat(ref_, ": ", what));
  }

  absl::StatusOr<json> ReadIndexJson() const {
    std::string path = dir_ + "/index.json";
    absl::StatusOr<std::unique_ptr<FileRangeStream>> file = FileRangeStream::Open(path, 0, std::nullopt);
    if (!file.ok())
      return absl::NotFoundError(StrCat(ref_, ": not an OCI image layout: ", file.status().message()));
    absl::StatusOr<std::string> text = ReadAll(**file, kMaxManifestBytes, path);
    if (!text.ok()) return text.status();
    return ParseJson(*text, path);
  }

  absl::StatusOr<Descriptor> SelectTagged(const json& index, const std::optional<std::string>& tag) const;
  absl::StatusOr<json> ResolveManifest(const Descriptor& d, int depth) const;

  const std::string& ref() const { return ref_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string ref_;
  std::string dir_;
};

std::string TagList(const std::vector<Descriptor>& ds) {
  std::vector<std::string> tags;
  for (const Descriptor& d : ds) tags.push_back(d.ref_name.empty() ? "(untagged " + d.digest + ")" : d.ref_name);
  return absl::StrJoin(tags, ", ");
}

absl::StatusOr<Descriptor> OciLayout::SelectTagged(const json& index,
                                                   const std::optional<std::string>& tag) const {
  absl::StatusOr<std::vector<Descriptor>> ds = ParseDescriptorList(index, "manifests", ref_ + ": index.json");
  if (!ds.ok()) return ds.status();
  if (ds->empty()) return absl::NotFoundError(StrCat(ref_, ": the layout has no images"));
  if (tag) {
    for (const Descriptor& d : *ds)
      if (d.ref_name == *tag) return d;
    return absl::NotFoundError(
        StrCat(ref_, ": no image tagged ", Quote(*tag), "; available tags: ", TagList(*ds)));
  }
  if (ds->size() == 1) return (*ds)[0];
  for (const Descriptor& d : *ds)
    if (d.ref_name == "latest") return d;
  return absl::InvalidArgumentError(StrCat(ref_, ": the layout holds ", ds->size(),
                                           " images; pick one with oci:DIR:TAG; available tags: ", TagList(*ds)));
}

absl::StatusOr<Descriptor> PickPlatform(const std::vector<Descriptor>& ds, std::string_view what) {
  for (const Descriptor& d : ds)
    if (d.os == "linux" && d.arch == "amd64") return d;
  if (ds.size() == 1 && ds[0].os.empty()) return ds[0];
  std::vector<std::string> platforms;
  for (const Descriptor& d : ds)
    platforms.push_back(StrCat(d.os, "/", d.arch, d.variant.empty() ? "" : "/", d.variant));
  return absl::NotFoundError(StrCat(what, ": no linux/amd64 image; platforms: ", absl::StrJoin(platforms, ", ")));
}

absl::StatusOr<json> OciLayout::ResolveManifest(const Descriptor& d, int depth) const {
  std::string what = StrCat(ref_, ": manifest ", d.digest);
  if (depth > 4) return absl::InvalidArgumentError(StrCat(what, ": image indexes nested too deeply"));
  absl::StatusOr<std::string> blob = ReadBlob(d, kMaxManifestBytes, "manifest");
  if (!blob.ok()) return blob.status();
  absl::StatusOr<json> j = ParseJson(*blob, what);
  if (!j.ok()) return j.status();
  std::string media = d.media_type.empty() ? JsonString(*j, "mediaType").value_or("") : d.media_type;
  if (media.empty())
    media = JsonField(*j, "manifests") ? "application/vnd.oci.image.index.v1+json"
                                       : "application/vnd.oci.image.manifest.v1+json";
  if (IsManifestMediaType(media)) return j;
  if (!IsIndexMediaType(media))
    return absl::InvalidArgumentError(StrCat(what, ": media type ", Quote(media), " is not an image manifest"));
  absl::StatusOr<std::vector<Descriptor>> ds = ParseDescriptorList(*j, "manifests", what);
  if (!ds.ok()) return ds.status();
  absl::StatusOr<Descriptor> pick = PickPlatform(*ds, what);
  if (!pick.ok()) return pick.status();
  return ResolveManifest(*pick, depth + 1);
}

class OciLayoutSource : public ImageSource {
 public:
  OciLayoutSource(OciLayout layout, std::string config, std::vector<LayerDescriptor> layers)
      : layout_(std::move(layout)), config_(std::move(config)), layers_(std::move(layers)) {}

  std::string Describe() const override { return layout_.ref(); }
  const std::string& config_json() const override { return config_; }
  const std::vector<LayerDescriptor>& layers() const override { return layers_; }

  absl::StatusOr<std::unique_ptr<ByteStream>> OpenLayer(size_t i) const override {
    if (i >= layers_.size()) return absl::OutOfRangeError(StrCat(layout_.ref(), ": no layer ", i));
    const LayerDescriptor& l = layers_[i];
    std::string what = StrCat("layer ", l.digest);
    absl::StatusOr<std::string> path = layout_.BlobPath(l.digest, what);
    if (!path.ok()) return path.status();
    absl::StatusOr<std::unique_ptr<FileRangeStream>> file = FileRangeStream::Open(*path, 0, std::nullopt);
    if (!file.ok())
      return absl::NotFoundError(
          StrCat(what, " : blob missing from ", layout_.dir(), ": ", file.status().message()));
    // Cheap early check; the digest is verified as the layer streams.
    if ((*file)->length() != l.size)
      return absl::DataLossError(
          StrCat(what, " : size mismatch: manifest says ", l.size, " bytes, blob has ", (*file)->length()));
    Digest expected;
    ParseDigestHex(l.digest, &expected);
    return std::unique_ptr<ByteStream>(
        std::make_unique<VerifyingStream>(std::move(*file), expected, l.size, what + " "));
  }

 private:
  OciLayout layout_;
  std::string config_;
  std::vector<LayerDescriptor> layers_;
};

absl::StatusOr<std::vector<LayerDescriptor>> ManifestLayers(const OciLayout& layout, const json& manifest,
                                                            std::string_view what) {
  absl::StatusOr<std::vector<Descriptor>> ds = ParseDescriptorList(manifest, "layers", what);
  if (!ds.ok()) return ds.status();
  std::vector<LayerDescriptor> out;
  for (const Descriptor& d : *ds) {
    if (!IsLayerMediaType(d.media_type))
      return absl::InvalidArgumentError(StrCat(what, ": layer ", d.digest, " has unsupported media type ",
                                               Quote(d.media_type), " (not a tar layer)"));
    if (auto s = layout.BlobPath(d.digest, StrCat(what, ": layer")); !s.ok()) return s.status();
    out.push_back({d.media_type, d.digest, d.size});
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageSource>> OpenOciLayout(const std::string& ref, const std::string& dir,
                                                           const std::optional<std::string>& tag) {
  OciLayout layout(ref, dir);
  absl::StatusOr<json> index = layout.ReadIndexJson();
  if (!index.ok()) return index.status();
  absl::StatusOr<Descriptor> top = layout.SelectTagged(*index, tag);
  if (!top.ok()) return top.status();
  absl::StatusOr<json> manifest = layout.ResolveManifest(*top, 0);
  if (!manifest.ok()) return manifest.status();
  std::string what = StrCat(ref, ": manifest");
  const json* cfg = JsonField(*manifest, "config");
  if (cfg == nullptr) return absl::InvalidArgumentError(StrCat(what, ": no config descriptor"));
  absl::StatusOr<Descriptor> config = ParseDescriptor(*cfg, what + " config");
  if (!config.ok()) return config.status();
  if (!IsConfigMediaType(config->media_type))
    return absl::InvalidArgumentError(
        StrCat(what, ": config media type ", Quote(config->media_type), " is not a container image config"));
  absl::StatusOr<std::string> config_json = layout.ReadBlob(*config, kMaxConfigBytes, "config");
  if (!config_json.ok()) return config_json.status();
  if (auto j = ParseJson(*config_json, ref + ": config"); !j.ok()) return j.status();
  absl::StatusOr<std::vector<LayerDescriptor>> layers = ManifestLayers(layout, *manifest, what);
  if (!layers.ok()) return layers.status();
  return std::unique_ptr<ImageSource>(
      std::make_unique<OciLayoutSource>(std::move(layout), std::move(*config_json), std::move(*layers)));
}

}  // namespace d4c::oci_internal
