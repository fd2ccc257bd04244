// ctr-cli images / rm / prune: what the di3fs snapshotter's store holds, and
// removing images through containerd (whose garbage collection makes the
// snapshotter delete the cdimgs nothing needs). The store is only read here,
// at the root the snapshotter reports (load.h); the logic is in
// d4c/snap/store_report.h.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "cli_util.h"
#include "commands.h"
#include "d4c/metadata_keys.h"
#include "d4c/registry/download_dir.h"
#include "d4c/registry/reference.h"
#include "d4c/snap/containerd_client.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/load.h"
#include "d4c/snap/store_report.h"
#include "nlohmann/json.hpp"

namespace d4c::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct StoreArgs {
  std::string address = "/run/containerd/containerd.sock";
  std::string ns = "default";
  std::string snapshotter = "di3fs";
  std::string snapshotter_root;
};

void AddStoreOptions(CLI::App* c, StoreArgs* a) {
  c->add_option("--address", a->address, "containerd socket")->capture_default_str();
  c->add_option("--namespace,-n", a->ns, "containerd namespace")->capture_default_str();
  c->add_option("--snapshotter", a->snapshotter, "Name of the proxy plugin in containerd's config")->capture_default_str();
  c->add_option("--snapshotter-root", a->snapshotter_root,
                "Not needed: the snapshotter reports its root through containerd. If given, checked against it");
}

// A connection, the snapshotter's root, and what the store and containerd hold.
struct StoreView {
  std::unique_ptr<snap::ContainerdClient> client;
  std::string root;
  snap::StoreReport report;
};

absl::StatusOr<snap::StoreReport> Report(snap::ContainerdClient& c, const std::string& root, const std::string& snapshotter) {
  auto store = snap::ScanStore(snap::layout::StoreDir(root));
  if (!store.ok()) return store.status();
  auto images = c.ListImages();
  if (!images.ok()) return images.status();
  auto snaps = c.ListSnapshots(snapshotter);
  if (!snaps.ok()) return snaps.status();
  return snap::BuildStoreReport(std::move(*store), *images, *snaps);
}

absl::StatusOr<StoreView> OpenStore(const StoreArgs& a) {
  StoreView v;
  auto c = snap::ContainerdClient::Connect(a.address, a.ns);
  if (!c.ok()) return c.status();
  v.client = std::move(*c);
  auto marker = snap::VerifySnapshotterRoot(*v.client, a.snapshotter, a.snapshotter_root);
  if (!marker.ok()) return marker.status();
  v.root = a.snapshotter_root.empty() ? marker->root : a.snapshotter_root;
  auto r = Report(*v.client, v.root, a.snapshotter);
  if (!r.ok()) return r.status();
  v.report = std::move(*r);
  return v;
}

std::string ShortId(const std::string& hex) { return hex.substr(0, 12); }

std::vector<std::string> Prefixed(const std::vector<std::string>& hexes) {
  std::vector<std::string> out;
  for (const auto& h : hexes) out.push_back("sha256:" + h);
  return out;
}

std::string Join(const std::vector<std::string>& v, const char* sep = ",") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// "snapshot, 1 container, base of 1": why the store keeps an image.
std::string UseText(const snap::StoreEntry& e) {
  std::vector<std::string> parts;
  if (!e.users.empty()) parts.push_back(StrCat(e.users.size(), e.users.size() == 1 ? " container" : " containers"));
  else if (e.image_snapshot) parts.push_back("image snapshot");
  if (!e.children.empty()) parts.push_back(StrCat("base of ", e.children.size()));
  return parts.empty() ? "no (not in this namespace)" : Join(parts, ", ");
}

// ---- images ---------------------------------------------------------------

int RunImages(const StoreArgs& a, bool as_json) {
  auto v = OpenStore(a);
  if (!v.ok()) return Fail("images", v.status());
  const auto& r = v->report;
  if (as_json) {
    json out = {{"root", v->root}, {"store", snap::layout::StoreDir(v->root)}, {"namespace", a.ns},
                {"total_bytes", r.total_bytes}, {"images", json::array()}, {"broken", json::array()}};
    for (const auto& e : r.images) {
      out["images"].push_back({{"id", "sha256:" + e.id_hex},
                               {"short_id", ShortId(e.id_hex)},
                               {"names", e.names},
                               {"kind", e.error.empty() ? (e.is_delta ? "delta" : "full") : "unreadable"},
                               {"depth", e.depth},
                               {"parent", e.parent_hex.empty() ? "" : "sha256:" + e.parent_hex},
                               {"bytes", e.file_bytes},
                               {"chain_bytes", e.chain_bytes},
                               {"missing_ancestor", e.missing_ancestor.empty() ? "" : "sha256:" + e.missing_ancestor},
                               {"image_snapshot", e.image_snapshot},
                               {"containers", e.users},
                               {"children", Prefixed(e.children)},
                               {"error", e.error}});
    }
    for (const auto& b : r.broken) out["broken"].push_back({{"name", b.name}, {"id", b.image_id}, {"reason", b.reason}});
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-12s  %-5s  %5s  %-12s  %10s  %10s  %-28s  %s\n", "IMAGE ID", "KIND", "DEPTH", "PARENT", "SIZE",
              "CHAIN SIZE", "IN USE", "NAMES");
  for (const auto& e : r.images) {
    std::string kind = e.error.empty() ? (e.is_delta ? "delta" : "full") : "bad";
    std::printf("%-12s  %-5s  %5zu  %-12s  %10s  %10s  %-28s  %s\n", ShortId(e.id_hex).c_str(), kind.c_str(), e.depth,
                e.parent_hex.empty() ? "-" : ShortId(e.parent_hex).c_str(), HumanBytes(e.file_bytes).c_str(),
                HumanBytes(e.chain_bytes).c_str(), UseText(e).c_str(), e.names.empty() ? "-" : Join(e.names).c_str());
    if (!e.error.empty()) std::printf("  ! %s: %s\n", ShortId(e.id_hex).c_str(), e.error.c_str());
    else if (!e.missing_ancestor.empty())
      std::printf("  ! %s: chain incomplete, image %s is not in the store\n", ShortId(e.id_hex).c_str(),
                  ShortId(e.missing_ancestor).c_str());
  }
  std::printf("%zu images, %s (%llu bytes) in %s\n", r.images.size(), HumanBytes(r.total_bytes).c_str(),
              static_cast<unsigned long long>(r.total_bytes), snap::layout::StoreDir(v->root).c_str());
  for (const auto& b : r.broken)
    std::printf("BROKEN %s -> %s: %s\n", b.name.c_str(), b.image_id.c_str(), b.reason.c_str());
  return r.broken.empty() ? 0 : 2;
}

// ---- what a removal freed -------------------------------------------------

struct Freed {
  std::vector<const snap::StoreEntry*> images;
  uint64_t bytes = 0;
};

// The images of `before` that are not in `after` (measured) or not in
// `needed` (predicted).
Freed Gone(const snap::StoreReport& before, const std::set<std::string>& still) {
  Freed f;
  for (const auto& e : before.images)
    if (!still.count(e.id_hex)) {
      f.images.push_back(&e);
      f.bytes += e.file_bytes;
    }
  return f;
}

std::set<std::string> Ids(const snap::StoreReport& r) {
  std::set<std::string> s;
  for (const auto& e : r.images) s.insert(e.id_hex);
  return s;
}

void PrintFreed(const Freed& f, const char* verb) {
  for (const auto* e : f.images)
    std::printf("%s sha256:%s (%s, %s)%s\n", verb, e->id_hex.c_str(), e->is_delta ? "delta" : "full",
                HumanBytes(e->file_bytes).c_str(), e->names.empty() ? "" : StrCat(" ", Join(e->names)).c_str());
  std::printf("store: %s %zu images, %s (%llu bytes)\n", verb, f.images.size(), HumanBytes(f.bytes).c_str(),
              static_cast<unsigned long long>(f.bytes));
}

// Removes image records `names` (the last one with `sync`), then reports.
// Prints the store images removed (measured with sync, predicted otherwise).
int RemoveAndReport(StoreView& v, const StoreArgs& a, const std::vector<std::string>& names,
                    const std::set<std::string>& drop_snapshots, bool sync, const char* what) {
  auto predicted = Gone(v.report, snap::StillNeeded(v.report, drop_snapshots));
  // Snapshots of images no record names (prune): removed directly.
  size_t removed_snapshots = 0;
  for (const auto& hex : drop_snapshots) {
    const auto* e = v.report.Find(hex);
    if (!e || !e->names.empty()) continue;
    if (auto s = v.client->RemoveSnapshot(a.snapshotter, "sha256:" + hex); !s.ok() && !absl::IsNotFound(s))
      return Fail(StrCat(what, ": remove snapshot sha256:", hex), s);
    std::printf("removed snapshot sha256:%s\n", hex.c_str());
    ++removed_snapshots;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (auto s = v.client->DeleteImage(names[i], sync && i + 1 == names.size()); !s.ok() && !absl::IsNotFound(s))
      return Fail(StrCat(what, " ", names[i]), s);
    std::printf("removed image %s\n", names[i].c_str());
  }
  if (!sync) {
    PrintFreed(predicted, "will free (once containerd collects garbage; --sync waits for it)");
    return 0;
  }
  if (names.empty() || removed_snapshots > 0) {
    if (auto s = v.client->CollectGarbage(); !s.ok()) return Fail(StrCat(what, ": containerd garbage collection"), s);
  }
  auto after = Report(*v.client, v.root, a.snapshotter);
  if (!after.ok()) return Fail(what, after.status());
  PrintFreed(Gone(v.report, Ids(*after)), "freed");
  return 0;
}

// ---- rm -------------------------------------------------------------------

// The snapshotters a containerd image record was unpacked for (its configs'
// gc.ref.snapshot.<name> labels); empty if none or unknown.
std::set<std::string> SnapshottersOf(snap::ContainerdClient& c, const snap::ImageRecord& img) {
  std::set<std::string> out;
  std::vector<std::string> manifests = {img.target.digest};
  for (size_t i = 0; i < manifests.size() && i < 64; ++i) {
    auto body = c.ReadBlob(manifests[i], 4 << 20);
    if (!body.ok()) continue;
    json m = json::parse(*body, nullptr, false);
    if (!m.is_object()) continue;
    if (m.contains("manifests") && m["manifests"].is_array()) {
      for (const auto& d : m["manifests"])
        if (d.is_object() && d.contains("digest") && d["digest"].is_string()) manifests.push_back(d["digest"]);
      continue;
    }
    if (!m.contains("config") || !m["config"].is_object() || !m["config"].contains("digest")) continue;
    if (!m["config"]["digest"].is_string()) continue;
    auto labels = c.ContentLabels(m["config"]["digest"].get<std::string>());
    if (!labels.ok()) continue;
    for (const auto& [k, val] : *labels)
      if (k.starts_with(keys::kGcRefSnapshotPrefix)) out.insert(k.substr(std::string(keys::kGcRefSnapshotPrefix).size()));
  }
  return out;
}

struct RmArgs {
  StoreArgs store;
  std::vector<std::string> names;
  bool sync = false;
  bool force = false;
};

int RunRm(const RmArgs& a) {
  auto v = OpenStore(a.store);
  if (!v.ok()) return Fail("rm", v.status());
  // Every name is checked before anything is removed.
  std::vector<std::string> names;
  std::set<std::string> ids, drop;
  for (const auto& raw : a.names) {
    // The name as typed (ctr images rm), else normalized as ctr does.
    auto img = v->client->GetImage(raw);
    std::string name_used = raw;
    if (absl::IsNotFound(img.status())) {
      auto name = registry::NormalizeImageName(raw);
      if (!name.ok()) return Fail(StrCat("rm ", raw), name.status());
      name_used = *name;
      img = v->client->GetImage(*name);
    }
    if (absl::IsNotFound(img.status()))
      return Fail(StrCat("rm ", raw), absl::NotFoundError(StrCat("no image ", name_used, " in namespace ", a.store.ns,
                                                                 " of containerd at ", a.store.address,
                                                                 " (see ctr-cli images)")));
    if (!img.ok()) return Fail(StrCat("rm ", raw), img.status());
    std::string id = snap::Di3fsImageIdOf(*img);
    if (id.empty() && !a.force) {
      auto sn = SnapshottersOf(*v->client, *img);
      std::string used = sn.empty() ? "it is not unpacked for any snapshotter"
                                    : StrCat("it is unpacked for snapshotter ", Join(std::vector<std::string>(sn.begin(), sn.end()), ", "));
      return Fail(StrCat("rm ", raw),
                  absl::FailedPreconditionError(StrCat(img->name, " is not a di3fs image (no label ", keys::kImageId, "; ", used,
                                                       "): remove it with ctr images rm, or pass --force")));
    }
    names.push_back(img->name);
    if (!id.empty()) ids.insert(id.substr(id.find(':') + 1));
  }
  // An image's snapshot goes once no record of this namespace names it and no
  // container uses it: what the GC then frees is predicted from that.
  for (const auto& hex : ids) {
    const auto* e = v->report.Find(hex);
    if (!e || !e->users.empty()) continue;
    bool named = false;
    for (const auto& n : e->names) named |= std::find(names.begin(), names.end(), n) == names.end();
    if (!named) drop.insert(hex);
  }
  // Only records are removed here (every image in `drop` has a name): their
  // snapshots go with containerd's GC; `drop` predicts what that frees.
  return RemoveAndReport(*v, a.store, names, drop, a.sync, "rm");
}

// ---- prune ----------------------------------------------------------------

struct PruneArgs {
  StoreArgs store;
  bool all = false;
  bool dry_run = false;
  std::string download_dir;
};

// The download files prune deletes: beyond the pull's bounds (PruneDownloadDir),
// or with --all every one not written in the last 10 minutes (a pull running now).
struct DownloadFile {
  std::string name;
  uint64_t bytes = 0;
  fs::file_time_type mtime;
};

std::vector<DownloadFile> DownloadFiles(const std::string& dir) {
  std::vector<DownloadFile> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string n = it->path().filename().string();
    if (!n.ends_with(".cdimg") && !n.ends_with(".cdimg.partial")) continue;
    std::error_code e1, e2;
    DownloadFile f{n, it->file_size(e1), it->last_write_time(e2)};
    if (!e1 && !e2) out.push_back(f);
  }
  return out;
}

int RunPrune(const PruneArgs& a) {
  auto v = OpenStore(a.store);
  if (!v.ok()) return Fail("prune", v.status());
  // Dangling: an image snapshot no record of this namespace names and no
  // container uses. --all: also every named di3fs image no container uses.
  std::set<std::string> drop;
  std::vector<std::string> names;
  for (const auto& e : v->report.images) {
    if (!e.image_snapshot || !e.users.empty()) continue;
    if (e.names.empty()) {
      drop.insert(e.id_hex);
    } else if (a.all) {
      drop.insert(e.id_hex);
      names.insert(names.end(), e.names.begin(), e.names.end());
    }
  }
  std::string dir = a.download_dir.empty() ? kDefaultDownloadDir : a.download_dir;
  auto files = DownloadFiles(dir);
  std::set<std::string> keep;
  registry::DownloadDirLimits limits;
  if (a.all) {
    limits.max_bytes = 0;
    limits.max_age = std::chrono::seconds(0);
    auto recent = fs::file_time_type::clock::now() - std::chrono::minutes(10);
    for (const auto& f : files)
      if (f.mtime > recent) keep.insert(f.name);
  }
  if (a.dry_run) {
    for (const auto& hex : drop)
      if (const auto* e = v->report.Find(hex); e && e->names.empty())
        std::printf("would remove snapshot sha256:%s (no image names it)\n", hex.c_str());
    for (const auto& n : names) std::printf("would remove image %s\n", n.c_str());
    PrintFreed(Gone(v->report, snap::StillNeeded(v->report, drop)), "would free");
    uint64_t total = 0;
    for (const auto& f : files) total += f.bytes;
    std::printf("download dir %s: %zu files, %llu bytes%s\n", dir.c_str(), files.size(),
                static_cast<unsigned long long>(total),
                a.all ? StrCat(" (", files.size() - keep.size(), " would be deleted: all but those written in the last 10 minutes)").c_str()
                      : " (pruned to the pull's bounds)");
    return 0;
  }
  int rc = RemoveAndReport(*v, a.store, names, drop, /*sync=*/true, "prune");
  if (rc != 0) return rc;
  std::map<std::string, uint64_t> sizes;
  for (const auto& f : files) sizes[f.name] = f.bytes;
  uint64_t freed = 0;
  auto deleted = registry::PruneDownloadDir(dir, limits, keep);
  for (const auto& n : deleted) freed += sizes[n];
  std::printf("download dir %s: deleted %zu files, %s (%llu bytes)\n", dir.c_str(), deleted.size(),
              HumanBytes(freed).c_str(), static_cast<unsigned long long>(freed));
  return 0;
}

}  // namespace

void RegisterStore(CLI::App& app) {
  auto ia = std::make_shared<StoreArgs>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* images = app.add_subcommand("images", "List the images the di3fs snapshotter's store holds (exit 2 if some are broken)");
  AddStoreOptions(images, ia.get());
  images->add_flag("--json", *as_json, "JSON instead of a table");
  images->callback([ia, as_json] { ExitCode() = RunImages(*ia, *as_json); });

  auto ra = std::make_shared<RmArgs>();
  CLI::App* rm = app.add_subcommand("rm", "Remove di3fs images from containerd; the snapshotter frees what nothing needs");
  rm->add_option("names", ra->names, "Image names (as typed, else normalized as ctr does)")->required();
  AddStoreOptions(rm, &ra->store);
  rm->add_flag("--sync", ra->sync, "Wait for containerd's garbage collection and report the store images freed");
  rm->add_flag("--force", ra->force, "Also remove names that are not di3fs images (as ctr images rm)");
  rm->callback([ra] { ExitCode() = RunRm(*ra); });

  auto pa = std::make_shared<PruneArgs>();
  CLI::App* prune = app.add_subcommand(
      "prune", "Remove unused di3fs images (dangling ones; --all: every one no container uses) and old downloads");
  AddStoreOptions(prune, &pa->store);
  prune->add_flag("--all", pa->all, "Also remove named images no container uses, and every download not written in the last 10 minutes");
  prune->add_flag("--dry-run", pa->dry_run, "Print what would be removed and freed");
  prune->add_option("--download-dir", pa->download_dir, StrCat("ctr-cli pull's download directory (default ", kDefaultDownloadDir, ")"));
  prune->callback([pa] { ExitCode() = RunPrune(*pa); });
}

}  // namespace d4c::cli
