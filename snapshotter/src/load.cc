#include "d4c/snap/load.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

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

std::string ProcessIdentity(int64_t pid) {
  auto read = [](const std::string& path) {
    std::ifstream f(path);
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return s;
  };
  std::string boot = read("/proc/sys/kernel/random/boot_id");
  while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
  std::string stat = read(StrCat("/proc/", pid, "/stat"));
  // Field 22 (starttime) counts from the field after the ")" that ends comm.
  std::string start;
  if (auto p = stat.rfind(')'); p != std::string::npos) {
    std::istringstream rest(stat.substr(p + 1));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i)
      if (i == 22) start = field;
  }
  if (start.empty()) return "";
  return StrCat(boot, "/", pid, "/", start);
}

namespace {

// Ends the hand-over leases whose process is gone (killed during a load or
// pull): containerd's GC then drops what they held, and the snapshotter
// deletes the images nothing needs. Leases of live processes are left alone.
void EndOrphanLeases(ContainerdApi& c) {
  auto leases = c.LeasesWithLabel(keys::kLeaseOwnerLabel);
  if (!leases.ok()) return;  // best effort: the lease expires anyway
  for (const auto& [id, labels] : *leases) {
    const std::string& owner = labels.at(keys::kLeaseOwnerLabel);
    // "<boot id>/<pid>/<start>": the process is alive only if this boot's
    // process of that pid started at that time.
    auto first = owner.find('/');
    auto second = first == std::string::npos ? first : owner.find('/', first + 1);
    if (second == std::string::npos) continue;  // not ours to judge
    int64_t pid = 0;
    auto [end, err] = std::from_chars(owner.data() + first + 1, owner.data() + second, pid);
    if (err != std::errc() || end != owner.data() + second || pid <= 0) continue;
    if (ProcessIdentity(pid) == owner) continue;  // alive
    (void)c.DeleteLease(id);
  }
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
  if (root.empty()) {
    // The root it reports, if this process sees the same directory there.
    auto marker = ReadRootMarker(real_root);
    if (!marker.ok() || marker->root_id != real_id)
      return absl::FailedPreconditionError(
          StrCat("snapshotter \"", snapshotter, "\" runs with --root ", real_root, " (root id ", real_id,
                 "), but this process does not see that root there (",
                 marker.ok() ? StrCat("root id ", marker->root_id) : std::string(Msg(marker.status().message())),
                 "): run ctr-cli on the snapshotter's host, in its mount namespace"));
    return marker;
  }
  auto marker = ReadRootMarker(root);
  if (!marker.ok())
    return absl::FailedPreconditionError(
        StrCat("--snapshotter-root ", root, " is not the root of snapshotter \"", snapshotter, "\" (",
               Msg(marker.status().message()), "); that snapshotter runs with --root ", real_root,
               ": pass --snapshotter-root ", real_root, " or leave the option out"));
  if (marker->root_id != real_id)
    return absl::FailedPreconditionError(
        StrCat("--snapshotter-root ", root, " (root id ", marker->root_id, ") is not the root of snapshotter \"",
               snapshotter, "\" that containerd at ", c.address(), " uses: it runs with --root ", real_root,
               " (root id ", real_id, "); pass --snapshotter-root ", real_root, " or leave the option out"));
  return marker;
}

absl::StatusOr<std::unique_ptr<Handover>> Handover::Begin(const LoadOptions& o) {
  auto client = ContainerdClient::Connect(o.address, o.ns);
  if (!client.ok()) return client.status();
  auto h = Begin(o, **client);
  if (!h.ok()) return h.status();
  (*h)->owned_ = std::move(*client);
  return h;
}

absl::StatusOr<std::unique_ptr<Handover>> Handover::Begin(const LoadOptions& o, ContainerdApi& c) {
  std::unique_ptr<Handover> h(new Handover(o, c));
  auto root = VerifySnapshotterRoot(c, o.snapshotter, o.snapshotter_root);
  if (!root.ok()) return root.status();
  h->root_ = *root;
  if (h->root_.root.empty()) h->root_.root = o.snapshotter_root;
  // The marker names the root as the snapshotter was given it; read it the
  // way this process reached it.
  if (!o.snapshotter_root.empty()) h->root_.root = o.snapshotter_root;
  EndOrphanLeases(c);
  auto lease = c.CreateLease(3600, {{keys::kLeaseOwnerLabel, ProcessIdentity(getpid())}});
  if (!lease.ok()) return lease.status();
  h->lease_ = *lease;
  c.set_lease(h->lease_);
  return h;
}

Handover::~Handover() {
  if (!committed_) {
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) (void)c_.RemoveSnapshot(o_.snapshotter, *it);
  }
  c_.set_lease("");
  if (!lease_.empty()) (void)c_.DeleteLease(lease_);
}

std::set<std::string> Handover::HeldImages() const {
  std::set<std::string> ids;
  for (const auto& hex : ImageStore(layout::StoreDir(root_.root)).List()) ids.insert("sha256:" + hex);
  return ids;
}

absl::StatusOr<LoadResult> Handover::Snapshot(const std::string& cdimg, const std::string& image_id) {
  LoadResult res;
  std::string hex, path;
  std::set<std::string> held = HeldImages();
  if (!cdimg.empty()) {
    // 1. The file: a cdimg whose parent is held.
    std::error_code ec;
    path = std::filesystem::absolute(cdimg, ec).lexically_normal().string();
    if (ec) return absl::InvalidArgumentError(StrCat(cdimg, ": ", ec.message()));
    auto h = CdimgImage::ReadHeader(path);
    if (!h.ok()) return absl::InvalidArgumentError(StrCat(cdimg, ": ", Msg(h.status().message())));
    hex = DigestHex(h->image_id);
    if (h->is_delta && !held.count(DigestString(h->parent_id)) && !held.count("sha256:" + hex))
      return absl::FailedPreconditionError(
          StrCat(cdimg, " is a delta from image ", DigestString(h->parent_id), ", which snapshotter \"",
                 o_.snapshotter, "\" does not hold (load or pull the parent image first)"));
  } else {
    auto parsed = ParseSha256(image_id);
    if (!parsed.ok()) return parsed.status();
    hex = *parsed;
    if (!held.count("sha256:" + hex))
      return absl::NotFoundError(StrCat("image sha256:", hex, " is not held by snapshotter \"", o_.snapshotter, "\""));
  }
  res.image_id = "sha256:" + hex;
  res.chain_id = res.image_id;  // one layer: chainID == diffID
  res.stored = !held.count(res.image_id);

  // 2. The snapshotter imports the file and makes the image snapshot.
  auto exists = c_.SnapshotExists(o_.snapshotter, res.chain_id);
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    std::string key = StrCat("di3fs-load-", hex.substr(0, 12), "-", getpid(), "-",
                             std::chrono::steady_clock::now().time_since_epoch().count());
    std::map<std::string, std::string> labels = {{kImageIdLabel, res.image_id}, {kSnapshotRefLabel, res.chain_id}};
    if (!path.empty()) labels[keys::kSnapshotImportLabel] = path;
    auto s = c_.PrepareSnapshot(o_.snapshotter, key, "", labels);
    if (s.ok()) {
      // The snapshotter made an ordinary active snapshot: it is not ours.
      (void)c_.RemoveSnapshot(o_.snapshotter, key);
      return absl::FailedPreconditionError(
          StrCat("snapshotter \"", o_.snapshotter, "\" does not know label ", kImageIdLabel,
                 " (is it the di3fs snapshotter?)"));
    }
    if (!absl::IsAlreadyExists(s)) return s;
    auto now = c_.SnapshotExists(o_.snapshotter, res.chain_id);
    if (!now.ok()) return now.status();
    if (!*now) return absl::InternalError(StrCat("snapshot ", res.chain_id, " missing after prepare"));
    res.snapshot_created = true;
    created_.push_back(res.chain_id);
  } else if (res.stored) {
    // A snapshot of an image the store lacks: the snapshotter lost the file.
    return absl::DataLossError(StrCat("snapshot ", res.chain_id, " exists, but snapshotter \"", o_.snapshotter,
                                      "\" does not hold its image (remove the snapshot: ctr snapshots --snapshotter ",
                                      o_.snapshotter, " rm ", res.chain_id, ")"));
  }
  auto chain = ImageStore(layout::StoreDir(root_.root)).Resolve(hex);
  if (!chain.ok()) return chain.status();
  res.chain_depth = chain->paths.size();
  return res;
}

absl::StatusOr<LoadResult> Handover::Import(const std::string& cdimg) {
  auto r = Snapshot(cdimg, "");
  if (r.ok() && r->snapshot_created) intermediate_.push_back(r->chain_id);
  return r;
}

absl::StatusOr<LoadResult> Handover::Load(const std::string& cdimg, const std::string& image_id) {
  if (o_.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  auto snap = Snapshot(cdimg, image_id);
  if (!snap.ok()) return snap.status();
  LoadResult res = *snap;

  // 3. Content: layer placeholder, config, manifest (children first). The
  // config comes from the image as stored (a delta's needs its chain).
  auto info = ImageStore(layout::StoreDir(root_.root)).Resolve(res.image_id.substr(7));
  if (!info.ok()) return info.status();
  std::vector<std::string> bases(info->paths.begin() + 1, info->paths.end());
  auto chain = ImageChain::Open(info->paths[0], bases);
  if (!chain.ok()) return chain.status();
  std::string config_src((*chain)->top().config());
  json layer = {{"image_id", res.image_id},
                {"kind", info->top.is_delta ? "delta" : "full"},
                {"parent_id", info->top.is_delta ? DigestString(info->top.parent_id) : ""},
                {"cdimg_size", info->top.file_size},
                {"snapshotter", o_.snapshotter}};
  std::string layer_bytes = layer.dump();
  std::string layer_digest = DigestString(Sha256(layer_bytes));
  if (auto s = c_.WriteBlob("di3fs-layer-" + layer_digest, layer_bytes, layer_digest,
                            {{keys::kUncompressedLabel, res.image_id}});
      !s.ok())
    return s;
  std::string name = cdimg.empty() ? res.image_id : cdimg.substr(cdimg.find_last_of('/') + 1);
  auto cfg = ImageConfig(config_src, res.image_id, name);
  if (!cfg.ok()) return cfg.status();
  std::string cfg_digest = DigestString(Sha256(*cfg));
  if (auto s = c_.WriteBlob("di3fs-config-" + cfg_digest, *cfg, cfg_digest,
                            {{StrCat(keys::kGcRefSnapshotPrefix, o_.snapshotter), res.chain_id}});
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
  if (auto s = c_.WriteBlob("di3fs-manifest-" + res.manifest_digest, mbytes, res.manifest_digest,
                            {{keys::kGcRefContentConfig, cfg_digest},
                             {StrCat(keys::kGcRefContentLayerPrefix, 0), layer_digest}});
      !s.ok())
    return s;

  // Image record.
  ImageRecord img;
  img.name = o_.image;
  img.target = {keys::kOciManifestType, res.manifest_digest, static_cast<int64_t>(mbytes.size())};
  img.labels = {{keys::kImageId, res.image_id}};
  if (auto s = c_.PutImage(img); !s.ok()) return s;
  return res;
}

void Handover::Commit() {
  committed_ = true;
  // The intermediate images' snapshots were only there to keep them until an
  // image built on them arrived; the store keeps them for that image's chain.
  for (auto it = intermediate_.rbegin(); it != intermediate_.rend(); ++it)
    (void)c_.RemoveSnapshot(o_.snapshotter, *it);
}

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o) {
  if (o.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  auto h = Handover::Begin(o);
  if (!h.ok()) return h.status();
  auto r = (*h)->Load(o.cdimg);
  if (r.ok()) (*h)->Commit();
  return r;
}

absl::StatusOr<LoadResult> LoadImage(const LoadOptions& o, ContainerdApi& c) {
  if (o.image.empty()) return absl::InvalidArgumentError("--image NAME:TAG is required");
  auto h = Handover::Begin(o, c);
  if (!h.ok()) return h.status();
  auto r = (*h)->Load(o.cdimg);
  if (r.ok()) (*h)->Commit();
  return r;
}

}  // namespace d4c::snap
