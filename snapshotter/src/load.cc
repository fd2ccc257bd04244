#include "d4c/snap/load.h"

#include <unistd.h>

#include <chrono>

#include "d4c/cdimg.h"
#include "d4c/chain.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/snap/image_store.h"
#include "d4c/base/strcat.h"
#include "d4c/metadata_keys.h"
#include "d4c/snap/layout.h"
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

absl::StatusOr<RootMarker> VerifySnapshotterRoot(ContainerdApi& c, const std::string& snapshotter,
                                                 const std::string& root) {
  std::string key = StrCat("di3fs-root-probe-", getpid(), "-", std::chrono::steady_clock::now().time_since_epoch().count());
  auto probe = c.PrepareSnapshot(snapshotter, key, "", {{keys::kSnapshotRootProbeLabel, "1"}});
  if (probe.ok()) {
    (void)c.RemoveSnapshot(snapshotter, key);
    return absl::FailedPreconditionError(
        StrCat("snapshotter \"", snapshotter, "\" (containerd at ", c.address(), ") does not answer label ",
               keys::kSnapshotRootProbeLabel, ": it is not the di3fs snapshotter, or one older than this ctr-cli "
               "(fix --snapshotter, or update and restart the snapshotter)"));
  }
  std::string real_root, real_id;
  if (!ParseRootProbeAnswer(Msg(probe.message()), &real_root, &real_id))
    return absl::Status(probe.code(), StrCat("cannot ask snapshotter \"", snapshotter, "\" through containerd at ",
                                             c.address(), " for its root (is it running and named so in "
                                             "containerd's proxy_plugins?): ", Msg(probe.message())));
  auto marker = ReadRootMarker(root);
  if (!marker.ok())
    return absl::FailedPreconditionError(
        StrCat("--snapshotter-root ", root, " is not the root of snapshotter \"", snapshotter, "\" (",
               Msg(marker.status().message()), "); that snapshotter runs with --root ", real_root,
               ": pass --snapshotter-root ", real_root));
  if (marker->root_id != real_id)
    return absl::FailedPreconditionError(
        StrCat("--snapshotter-root ", root, " (root id ", marker->root_id, ") is not the root of snapshotter \"",
               snapshotter, "\" that containerd at ", c.address(), " uses: it runs with --root ", real_root,
               " (root id ", real_id, "); pass --snapshotter-root ", real_root,
               " (an image stored elsewhere would never be seen by it)"));
  return marker;
}

absl::StatusOr<RootMarker> VerifySnapshotterRoot(const LoadOptions& o) {
  auto client = ContainerdClient::Connect(o.address, o.ns);
  if (!client.ok()) return client.status();
  return VerifySnapshotterRoot(**client, o.snapshotter, o.snapshotter_root);
}

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o) {
  if (o.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  // containerd must answer before the store changes.
  auto client = ContainerdClient::Connect(o.address, o.ns);
  if (!client.ok()) return client.status();
  return LoadImage(o, **client);
}

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o, ContainerdApi& c) {
  if (o.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  // 0. The store must be the one the snapshotter containerd uses reads.
  if (auto v = VerifySnapshotterRoot(c, o.snapshotter, o.snapshotter_root); !v.ok()) return v.status();
  ImageStore store(layout::StoreDir(o.snapshotter_root));
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

  auto lease = c.CreateLease(3600);
  if (!lease.ok()) return lease.status();
  c.set_lease(*lease);
  // Undoes a failed load (declared after the lease guard's data, destroyed
  // before the lease is deleted), then drops the lease.
  struct Guard {
    ContainerdApi& c;
    const LoadOptions& o;
    const ImageStore& store;
    const LoadResult& res;
    std::string lease, hex;
    bool done = false;
    ~Guard() {
      if (!done) {
        if (res.snapshot_created) (void)c.RemoveSnapshot(o.snapshotter, res.chain_id);
        if (res.stored) {
          auto still = c.SnapshotExists(o.snapshotter, res.chain_id);
          if (!still.ok() || !*still) (void)store.Delete(hex);
        }
      }
      c.set_lease("");
      (void)c.DeleteLease(lease);
    }
  } guard{c, o, store, res, *lease, hex};

  // 2. Store.
  auto added = store.Add(o.cdimg, &res.stored);
  if (!added.ok()) return added.status();

  // 3. Snapshot (remote-snapshot protocol through containerd's metadata).
  auto exists = c.SnapshotExists(o.snapshotter, res.chain_id);
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    std::string key = StrCat("di3fs-load-", hex.substr(0, 12), "-", getpid(), "-",
                             std::chrono::steady_clock::now().time_since_epoch().count());
    auto s = c.PrepareSnapshot(o.snapshotter, key, "",
                               {{kImageIdLabel, res.image_id}, {kSnapshotRefLabel, res.chain_id}});
    if (s.ok()) {
      // The snapshotter made an ordinary active snapshot: it is not ours.
      (void)c.RemoveSnapshot(o.snapshotter, key);
      return absl::FailedPreconditionError(
          StrCat("snapshotter \"", o.snapshotter, "\" does not know label ", kImageIdLabel,
                 " (is it the di3fs snapshotter?)"));
    }
    if (!absl::IsAlreadyExists(s)) return s;
    auto now = c.SnapshotExists(o.snapshotter, res.chain_id);
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
  if (auto s = c.WriteBlob("di3fs-layer-" + layer_digest, layer_bytes, layer_digest,
                           {{keys::kUncompressedLabel, res.image_id}});
      !s.ok())
    return s;
  std::string name = o.cdimg.substr(o.cdimg.find_last_of('/') + 1);
  auto cfg = ImageConfig(config_src, res.image_id, name);
  if (!cfg.ok()) return cfg.status();
  std::string cfg_digest = DigestString(Sha256(*cfg));
  if (auto s = c.WriteBlob("di3fs-config-" + cfg_digest, *cfg, cfg_digest,
                           {{StrCat(keys::kGcRefSnapshotPrefix, o.snapshotter), res.chain_id}});
      !s.ok())
    return s;
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", keys::kOciManifestType},
                   {"config", {{"mediaType", keys::kOciConfigType}, {"digest", cfg_digest}, {"size", cfg->size()}}},
                   {"layers",
                    {{{"mediaType", keys::kLoadedLayerType},
                      {"digest", layer_digest},
                      {"size", layer_bytes.size()},
                      {"annotations", {{keys::kImageId, res.image_id}}}}}}};
  std::string mbytes = manifest.dump();
  res.manifest_digest = DigestString(Sha256(mbytes));
  if (auto s = c.WriteBlob("di3fs-manifest-" + res.manifest_digest, mbytes, res.manifest_digest,
                           {{keys::kGcRefContentConfig, cfg_digest},
                            {StrCat(keys::kGcRefContentLayerPrefix, 0), layer_digest}});
      !s.ok())
    return s;

  // 5. Image record.
  ImageRecord img;
  img.name = o.image;
  img.target = {keys::kOciManifestType, res.manifest_digest, static_cast<int64_t>(mbytes.size())};
  img.labels = {{keys::kImageId, res.image_id}};
  if (auto s = c.PutImage(img); !s.ok()) return s;
  guard.done = true;
  return res;
}

}  // namespace d4c::snap
