#include "d4c/snap/load.h"

#include <unistd.h>

#include <chrono>

#include "d4c/cdimg.h"
#include "d4c/chain.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/snap/image_store.h"
#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

namespace d4c::snap {
namespace {

using json = nlohmann::json;

// The image config containerd sees: the cdimg's OCI config with one layer
// (the squashed tree, diffID = sha256:<image id>).
absl::StatusOr<std::string> ImageConfig(std::string_view original, const std::string& diff_id,
                                        const std::string& cdimg_name) {
  json cfg = json::parse(original.begin(), original.end(), nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) cfg = json::object();
  if (!cfg.contains("architecture") || !cfg["architecture"].is_string()) cfg["architecture"] = "amd64";
  if (!cfg.contains("os") || !cfg["os"].is_string()) cfg["os"] = "linux";
  cfg["rootfs"] = {{"type", "layers"}, {"diff_ids", json::array({diff_id})}};
  // Keep the history for people, but as empty layers, plus one entry for the
  // squashed layer, so history and diff_ids agree for tools that check.
  json hist = json::array();
  if (cfg.contains("history") && cfg["history"].is_array()) {
    for (auto h : cfg["history"]) {
      if (!h.is_object()) continue;
      h["empty_layer"] = true;
      hist.push_back(h);
    }
  }
  hist.push_back({{"created_by", StrCat("ctr-cli load ", cdimg_name, " (squashed by d4c, served by di3fs)")},
                  {"comment", "d4c cdimg"}});
  cfg["history"] = hist;
  return cfg.dump();
}

}  // namespace

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o) {
  if (o.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  ImageStore store(o.snapshotter_root + "/store");
  // 1. Check the file and its chain before touching anything.
  auto checked = store.Check(o.cdimg);
  if (!checked.ok()) return checked.status();
  LoadResult res;
  std::string hex = DigestHex(checked->top.image_id);
  res.image_id = "sha256:" + hex;
  res.chain_id = res.image_id;  // one layer: chainID == diffID
  res.chain_depth = checked->paths.size();
  std::string config_src;
  if (checked->top.is_delta) {
    // A delta's index needs its parent: open through the chain.
    std::vector<std::string> bases(checked->paths.begin() + 1, checked->paths.end());
    auto chain = ImageChain::Open(o.cdimg, bases);
    if (!chain.ok()) return chain.status();
    config_src = std::string((*chain)->top().config());
  } else {
    auto top = CdimgImage::Open(o.cdimg, nullptr);
    if (!top.ok()) return top.status();
    config_src = std::string((*top)->config());
  }

  // containerd must answer before the store changes.
  auto client = ContainerdClient::Connect(o.address, o.ns);
  if (!client.ok()) return client.status();
  auto lease = (*client)->CreateLease(3600);
  if (!lease.ok()) return lease.status();
  (*client)->set_lease(*lease);
  struct LeaseGuard {
    ContainerdClient* c;
    std::string id;
    ~LeaseGuard() {
      c->set_lease("");
      (void)c->DeleteLease(id);
    }
  } guard{client->get(), *lease};

  // 2. Store.
  auto added = store.Add(o.cdimg, &res.stored);
  if (!added.ok()) return added.status();

  // 3. Snapshot (remote-snapshot protocol through containerd's metadata).
  auto exists = (*client)->SnapshotExists(o.snapshotter, res.chain_id);
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    std::string key = StrCat("di3fs-load-", hex.substr(0, 12), "-", getpid(), "-",
                             std::chrono::steady_clock::now().time_since_epoch().count());
    auto s = (*client)->PrepareSnapshot(o.snapshotter, key, "",
                                        {{kImageIdLabel, res.image_id}, {kSnapshotRefLabel, res.chain_id}});
    if (s.ok()) {
      // The snapshotter made an ordinary active snapshot: it is not ours.
      (void)(*client)->RemoveSnapshot(o.snapshotter, key);
      return absl::FailedPreconditionError(
          StrCat("snapshotter \"", o.snapshotter, "\" does not know label ", kImageIdLabel,
                 " (is it the di3fs snapshotter?)"));
    }
    if (!absl::IsAlreadyExists(s)) return s;
    auto now = (*client)->SnapshotExists(o.snapshotter, res.chain_id);
    if (!now.ok()) return now.status();
    if (!*now) return absl::InternalError(StrCat("snapshot ", res.chain_id, " missing after prepare"));
    res.snapshot_created = true;
  }

  // 4. Content: layer placeholder, config, manifest (children first).
  json layer = {{"image_id", res.image_id},
                {"kind", checked->top.is_delta ? "delta" : "full"},
                {"parent_id", checked->top.is_delta ? DigestString(checked->top.parent_id) : ""},
                {"cdimg_size", checked->top.file_size},
                {"snapshotter", o.snapshotter}};
  std::string layer_bytes = layer.dump();
  std::string layer_digest = DigestString(Sha256(layer_bytes));
  if (auto s = (*client)->WriteBlob("di3fs-layer-" + layer_digest, layer_bytes, layer_digest,
                                    {{"containerd.io/uncompressed", res.image_id}});
      !s.ok())
    return s;
  std::string name = o.cdimg.substr(o.cdimg.find_last_of('/') + 1);
  auto cfg = ImageConfig(config_src, res.image_id, name);
  if (!cfg.ok()) return cfg.status();
  std::string cfg_digest = DigestString(Sha256(*cfg));
  if (auto s = (*client)->WriteBlob("di3fs-config-" + cfg_digest, *cfg, cfg_digest,
                                    {{StrCat("containerd.io/gc.ref.snapshot.", o.snapshotter), res.chain_id}});
      !s.ok())
    return s;
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config",
                    {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                     {"digest", cfg_digest},
                     {"size", cfg->size()}}},
                   {"layers",
                    {{{"mediaType", kCdimgLayerMediaType},
                      {"digest", layer_digest},
                      {"size", layer_bytes.size()},
                      {"annotations", {{"io.d4c.cdimg.image-id", res.image_id}}}}}}};
  std::string mbytes = manifest.dump();
  res.manifest_digest = DigestString(Sha256(mbytes));
  if (auto s = (*client)->WriteBlob("di3fs-manifest-" + res.manifest_digest, mbytes, res.manifest_digest,
                                    {{"containerd.io/gc.ref.content.config", cfg_digest},
                                     {"containerd.io/gc.ref.content.l.0", layer_digest}});
      !s.ok())
    return s;

  // 5. Image record.
  ImageRecord img;
  img.name = o.image;
  img.target = {"application/vnd.oci.image.manifest.v1+json", res.manifest_digest, static_cast<int64_t>(mbytes.size())};
  img.labels = {{"io.d4c.cdimg.image-id", res.image_id}};
  if (auto s = (*client)->PutImage(img); !s.ok()) return s;
  return res;
}

}  // namespace d4c::snap
