// ImageSource over containerd's image and content store.
#include <sys/utsname.h>


#include "d4c/entry.h"
#include "d4c/metadata_keys.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

namespace d4c::snap {
namespace {

using json = nlohmann::json;
constexpr int64_t kMaxJsonBlob = 16 << 20;

std::string HostArch() {
  struct utsname u;
  if (uname(&u) != 0) return "amd64";
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m.starts_with("arm")) return "arm";
  if (m == "i686" || m == "i386") return "386";
  return m;
}

bool IsIndex(const std::string& t) {
  return t == keys::kOciIndexType || t == keys::kDockerManifestListType;
}
bool IsManifest(const std::string& t) {
  return t == keys::kOciManifestType || t == keys::kDockerManifestType;
}

class ContainerdImageSource final : public ImageSource {
 public:
  ContainerdImageSource(ContainerdClient* c, std::string name, std::string config, std::vector<LayerDescriptor> layers)
      : client_(c), name_(std::move(name)), config_(std::move(config)), layers_(std::move(layers)) {}
  std::string Describe() const override { return StrCat(name_, " (containerd ", client_->address(), ")"); }
  const std::string& config_json() const override { return config_; }
  const std::vector<LayerDescriptor>& layers() const override { return layers_; }
  absl::StatusOr<std::unique_ptr<ByteStream>> OpenLayer(size_t i) const override {
    if (i >= layers_.size()) return absl::OutOfRangeError(StrCat("layer ", i, " of ", layers_.size()));
    return client_->OpenBlob(layers_[i].digest);
  }

 private:
  ContainerdClient* client_;
  std::string name_;
  std::string config_;
  std::vector<LayerDescriptor> layers_;
};

absl::StatusOr<json> ReadJson(ContainerdClient* c, const std::string& digest, const std::string& what) {
  auto b = c->ReadBlob(digest, kMaxJsonBlob);
  if (!b.ok()) return b.status();
  absl::StatusOr<Digest> want = ParseDigest(digest, what);
  if (!want.ok() || Sha256(*b) != *want)
    return absl::DataLossError(StrCat(what, " ", digest, ": content does not match its digest"));
  json j = json::parse(*b, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(StrCat(what, " ", digest, ": not a JSON object"));
  return j;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageSource>> OpenContainerdImage(ContainerdClient* client, const std::string& name) {
  auto img = client->GetImage(name);
  if (!img.ok()) return img.status();
  std::string media = img->target.media_type;
  std::string digest = img->target.digest;
  for (int depth = 0; IsIndex(media); ++depth) {
    if (depth > 4) return absl::InvalidArgumentError(StrCat(name, ": nested indexes too deep"));
    auto idx = ReadJson(client, digest, "index");
    if (!idx.ok()) return idx.status();
    const json& ms = (*idx)["manifests"];
    if (!ms.is_array() || ms.empty()) return absl::InvalidArgumentError(StrCat(name, ": index has no manifests"));
    const json* pick = nullptr;
    std::string arch = HostArch();
    for (const auto& m : ms) {
      if (!m.is_object()) continue;
      auto p = m.find("platform");
      if (p == m.end()) continue;
      if (p->value("os", "") == "linux" && p->value("architecture", "") == arch) {
        pick = &m;
        break;
      }
    }
    if (!pick && ms.size() == 1) pick = &ms[0];
    if (!pick) return absl::NotFoundError(StrCat(name, ": no manifest for linux/", arch, " in the index"));
    media = pick->value("mediaType", "");
    digest = pick->value("digest", "");
  }
  if (!IsManifest(media)) return absl::InvalidArgumentError(StrCat(name, ": unsupported media type ", media));
  auto man = ReadJson(client, digest, "manifest");
  if (!man.ok()) return man.status();
  const json& cfg = (*man)["config"];
  if (!cfg.is_object() || !cfg.contains("digest"))
    return absl::InvalidArgumentError(StrCat(name, ": manifest ", digest, " has no config"));
  std::string cfg_digest = cfg.value("digest", "");
  auto cfg_bytes = client->ReadBlob(cfg_digest, kMaxJsonBlob);
  if (!cfg_bytes.ok()) return cfg_bytes.status();
  std::vector<LayerDescriptor> layers;
  const json& ls = (*man)["layers"];
  if (!ls.is_array()) return absl::InvalidArgumentError(StrCat(name, ": manifest ", digest, " has no layers"));
  for (const auto& l : ls) {
    if (!l.is_object()) return absl::InvalidArgumentError(StrCat(name, ": bad layer descriptor"));
    LayerDescriptor d;
    d.media_type = l.value("mediaType", "");
    d.digest = l.value("digest", "");
    d.size = l.value("size", uint64_t{0});
    layers.push_back(std::move(d));
  }
  return std::unique_ptr<ImageSource>(new ContainerdImageSource(client, name, std::move(*cfg_bytes), std::move(layers)));
}

}  // namespace d4c::snap
