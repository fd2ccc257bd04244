#include "d4c/snap/store_report.h"

#include <algorithm>
#include <filesystem>

#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"
#include "d4c/cdimg.h"
#include "d4c/metadata_keys.h"

namespace d4c::snap {
namespace fs = std::filesystem;

const StoreEntry* StoreReport::Find(const std::string& id_hex) const {
  auto it = std::lower_bound(images.begin(), images.end(), id_hex,
                             [](const StoreEntry& e, const std::string& id) { return e.id_hex < id; });
  return it != images.end() && it->id_hex == id_hex ? &*it : nullptr;
}

std::string Di3fsImageIdOf(const ImageRecord& image) { return keys::ImageIdOf(image.labels); }

absl::StatusOr<std::vector<StoreEntry>> ScanStore(const std::string& store_dir) {
  std::vector<StoreEntry> out;
  std::error_code ec;
  if (!fs::exists(store_dir, ec)) return out;
  fs::directory_iterator it(store_dir, ec);
  if (ec) return absl::PermissionDeniedError(StrCat(store_dir, ": cannot list the snapshotter's store (", ec.message(),
                                                    "): run ctr-cli as a user that may read it"));
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return absl::InternalError(StrCat(store_dir, ": ", ec.message()));
    std::string name = it->path().filename().string();
    // <64 hex>.cdimg; anything else is a copy in progress (the store's temp files).
    Digest d;
    if (name.size() != 64 + 6 || !name.ends_with(".cdimg") || !ParseDigestHex(name.substr(0, 64), &d)) continue;
    StoreEntry e;
    e.id_hex = name.substr(0, 64);
    std::error_code sec;
    e.file_bytes = it->file_size(sec);
    if (sec) continue;  // removed meanwhile (the snapshotter collected it)
    auto h = CdimgImage::ReadHeader(it->path().string());
    if (!h.ok()) {
      e.error = Msg(h.status().message());
    } else if (DigestHex(h->image_id) != e.id_hex) {
      e.error = StrCat("the file holds image sha256:", DigestHex(h->image_id), ", not the image its name says");
    } else {
      e.is_delta = h->is_delta;
      if (h->is_delta) e.parent_hex = DigestHex(h->parent_id);
    }
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const StoreEntry& a, const StoreEntry& b) { return a.id_hex < b.id_hex; });
  return out;
}

StoreReport BuildStoreReport(std::vector<StoreEntry> store, const std::vector<ImageRecord>& images,
                             const std::vector<SnapshotRecord>& snapshots) {
  StoreReport r;
  r.images = std::move(store);
  std::sort(r.images.begin(), r.images.end(), [](const StoreEntry& a, const StoreEntry& b) { return a.id_hex < b.id_hex; });
  std::map<std::string, StoreEntry*> by_id;
  for (auto& e : r.images) {
    by_id[e.id_hex] = &e;
    r.total_bytes += e.file_bytes;
  }
  // Chains: walk up each image's parents (bounded by the store's size: a
  // cycle, impossible for content-addressed ids, cannot loop).
  for (auto& e : r.images) {
    e.chain_bytes = e.file_bytes;
    const StoreEntry* cur = &e;
    for (size_t steps = 0; cur->is_delta && steps <= r.images.size(); ++steps) {
      auto p = by_id.find(cur->parent_hex);
      if (p == by_id.end()) {
        e.missing_ancestor = cur->parent_hex;
        break;
      }
      ++e.depth;
      cur = p->second;
      e.chain_bytes += cur->file_bytes;
      if (!cur->error.empty()) {
        e.missing_ancestor = cur->id_hex;  // unreadable counts as missing
        break;
      }
    }
    if (e.is_delta)
      if (auto p = by_id.find(e.parent_hex); p != by_id.end()) p->second->children.push_back(e.id_hex);
  }
  // Names: the image records labelled with an image id.
  for (const auto& img : images) {
    std::string id = Di3fsImageIdOf(img);
    if (id.empty()) continue;
    std::string hex = id.starts_with("sha256:") ? id.substr(7) : id;
    auto e = by_id.find(hex);
    if (e == by_id.end()) {
      r.broken.push_back({img.name, id, "its cdimg is not in the snapshotter's store (load or pull it again)"});
      continue;
    }
    e->second->names.push_back(img.name);
    if (!e->second->error.empty())
      r.broken.push_back({img.name, id, StrCat("its cdimg does not read: ", e->second->error)});
    else if (!e->second->missing_ancestor.empty())
      r.broken.push_back({img.name, id, StrCat("its chain lacks image sha256:", e->second->missing_ancestor,
                                               " in the store (load or pull that image again)")});
  }
  // Snapshots: image snapshots are named by the chain id sha256:<hex>.
  std::map<std::string, std::string> image_of_snapshot;  // snapshot name -> hex
  for (const auto& s : snapshots) {
    if (s.kind != SnapshotRecord::Kind::kCommitted || !s.name.starts_with("sha256:")) continue;
    auto e = by_id.find(s.name.substr(7));
    if (e == by_id.end()) continue;
    e->second->image_snapshot = true;
    image_of_snapshot[s.name] = e->first;
  }
  for (const auto& s : snapshots) {
    if (s.kind == SnapshotRecord::Kind::kCommitted || s.parent.empty()) continue;
    if (auto i = image_of_snapshot.find(s.parent); i != image_of_snapshot.end()) by_id[i->second]->users.push_back(s.name);
  }
  for (auto& e : r.images) {
    std::sort(e.names.begin(), e.names.end());
    std::sort(e.users.begin(), e.users.end());
    std::sort(e.children.begin(), e.children.end());
  }
  return r;
}

std::set<std::string> StillNeeded(const StoreReport& r, const std::set<std::string>& drop) {
  std::set<std::string> needed;
  for (const auto& e : r.images) {
    bool root = e.image_snapshot ? !drop.count(e.id_hex) : e.children.empty();
    if (!root) continue;
    // The image and its ancestors.
    const StoreEntry* cur = &e;
    for (size_t steps = 0; cur && steps <= r.images.size(); ++steps) {
      if (!needed.insert(cur->id_hex).second) break;
      cur = cur->is_delta ? r.Find(cur->parent_hex) : nullptr;
    }
  }
  return needed;
}

}  // namespace d4c::snap
