// CRI pulls through the snapshotter (remote.h, snapshotter.h): containerd's
// unpacker Prepares each layer with the snapshot annotations; the top layer's
// Prepare is served from the cdimgs attached to the image manifest as OCI
// referrers (a fake registry), lower layers and images without cdimgs stay
// ordinary, and a failure leaves nothing in the store.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "d4c/base/strcat.h"
#include "d4c/cdimg.h"
#include "d4c/convert.h"
#include "d4c/registry/transfer.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/remote.h"
#include "d4c/snap/snapshotter.h"
#include "fake_registry.h"
#include "snap_fakes.h"

using namespace d4c;
using namespace d4c::snap;
using d4c::registry_test::FakeRegistry;
using d4c::registry_test::MemorySourceImage;
using d4c::snap::testing::FakeMounter;
namespace fs = std::filesystem;

namespace {

std::string FreshDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-snapcri-test-", getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

Entry Dir() {
  Entry e;
  e.path = "";
  e.type = EntryType::kDirectory;
  e.mode = 0755;
  return e;
}
Entry File(const std::string& path, const std::string& content) {
  Entry f;
  f.path = path;
  f.type = EntryType::kRegular;
  f.mode = 0644;
  f.size = content.size();
  f.digest = Sha256(content);
  return f;
}
std::string Config(int v) { return StrCat(R"({"architecture":"amd64","os":"linux","config":{},"v":)", v, "}"); }

// Release v: "/big" (shared by all releases) and "/vN" = "release N".
void WriteFull(const std::string& path, int v, const std::string& big) {
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::vector<Entry> entries{Dir(), File("big", big), File(StrCat("v", v), StrCat("release ", v))};
  std::vector<Recipe> recipes(entries.size());
  for (size_t i : {1, 2}) {
    auto blob = CompressFullBlob(i == 1 ? big : StrCat("release ", v), 3);
    REQUIRE(blob.ok());
    auto ref = (*w)->AppendBlob(*blob);
    REQUIRE(ref.ok());
    recipes[i].kind = Recipe::Kind::kFull;
    recipes[i].blob = *ref;
  }
  REQUIRE((*w)->Finish(Config(v), entries, recipes).ok());
}

void WriteDelta(const std::string& path, const std::string& parent_path, int v, const std::string& big) {
  auto parent = CdimgImage::Open(parent_path);
  REQUIRE(parent.ok());
  auto w = CdimgWriter::Create(path, {parent->get()});
  REQUIRE(w.ok());
  std::vector<Entry> entries{Dir(), File("big", big), File(StrCat("v", v), StrCat("release ", v))};
  std::vector<Recipe> recipes(entries.size());
  recipes[1].kind = Recipe::Kind::kBase;
  auto blob = CompressFullBlob(StrCat("release ", v), 3);
  REQUIRE(blob.ok());
  auto ref = (*w)->AppendBlob(*blob);
  REQUIRE(ref.ok());
  recipes[2].kind = Recipe::Kind::kFull;
  recipes[2].blob = *ref;
  REQUIRE((*w)->Finish(Config(v), entries, recipes).ok());
}

std::string IdHex(const std::string& path) {
  auto h = CdimgImage::ReadHeader(path);
  REQUIRE(h.ok());
  return DigestHex(h->image_id);
}

// Releases 1 and 2 pushed as runnable two-layer images (tags v1, v2) with
// their full cdimgs and the delta 1 -> 2 attached through the referrers API.
struct World {
  std::string dir, root;
  std::string big = std::string(30000, 'x');
  std::string full[3], delta2, id[3];
  std::unique_ptr<MemorySourceImage> image[3];
  registry::PushResult pushed_full[3], pushed_delta;
  FakeRegistry reg;
  std::string registry_down;  // non-empty: connecting fails with this
  std::shared_ptr<FakeMounter> mounter;
  std::unique_ptr<Snapshotter> sn;

  explicit World(const std::string& name, std::chrono::seconds ttl = std::chrono::seconds(60)) {
    dir = FreshDir(name);
    root = dir + "/root";
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7919) % 26);
    reg.referrers_api = true;
    for (int v : {1, 2}) {
      full[v] = StrCat(dir, "/v", v, ".cdimg");
      WriteFull(full[v], v, big);
      id[v] = IdHex(full[v]);
      image[v] = std::make_unique<MemorySourceImage>(
          Config(v), std::vector<std::string>{StrCat("base layer of ", v), StrCat("app layer of release ", v)});
      pushed_full[v] = Push(full[v], StrCat("v", v), image[v].get());
    }
    delta2 = dir + "/d1-2.cdimg";
    WriteDelta(delta2, full[1], 2, big);
    pushed_delta = Push(delta2, "", nullptr);
    reg.document_gets.clear();  // what the pushes read
    reg.downloads.clear();
    mounter = std::make_shared<FakeMounter>(root);
    Snapshotter::Options o;
    o.root = root;
    o.mounter = mounter;
    o.remote_failure_ttl = ttl;
    o.remote = NewRegistryRemote([this](const registry::ImageReference& ref)
                                     -> absl::StatusOr<std::shared_ptr<registry::RegistryApi>> {
      if (ref.domain != "fake.test:5000") return absl::NotFoundError("no registry " + ref.domain);
      if (!registry_down.empty()) return absl::UnavailableError(registry_down);
      return std::shared_ptr<registry::RegistryApi>(std::shared_ptr<void>(), &reg);  // not owned
    });
    auto s = Snapshotter::Open(o);
    REQUIRE(s.ok());
    sn = std::move(*s);
  }
  registry::PushResult Push(const std::string& file, const std::string& tag, const registry::SourceImage* img) {
    registry::PushOptions o;
    o.cdimg = file;
    o.repository = "team/app";
    o.tag = tag;
    o.image = img;
    auto p = registry::Push(o, reg);
    INFO((p.ok() ? std::string() : Msg(p.status().message())));
    REQUIRE(p.ok());
    return *p;
  }
  // The labels containerd's unpacker passes for layer `i` of release v.
  Labels LayerLabels(int v, size_t i, const std::string& chain, const std::string& manifest = "") {
    const auto& layers = image[v]->layers();
    std::string above;
    for (size_t k = i; k < layers.size(); ++k) above += (above.empty() ? "" : ",") + layers[k].digest;
    return {{keys::kSnapshotRefLabel, chain},
            {kCriImageRefLabel, StrCat("fake.test:5000/team/app:v", v)},
            {kCriManifestDigestLabel, manifest.empty() ? pushed_full[v].subject.digest : manifest},
            {kCriLayerDigestLabel, layers[i].digest},
            {kCriImageLayersLabel, above}};
  }
  // containerd's unpack of the lower layer: an ordinary Prepare, then Commit.
  void UnpackLower(int v, const std::string& chain) {
    std::string key = "extract-lower " + chain;
    auto m = sn->Prepare(key, "", LayerLabels(v, 0, chain));
    REQUIRE(m.ok());
    REQUIRE(m->size() == 1);
    CHECK(m->at(0).type == "bind");  // an ordinary empty snapshot to unpack into
    REQUIRE(sn->Commit(chain, key, {}).ok());
  }
  std::vector<std::string> StoreIds() const { return sn->store().List(); }
  size_t ReadyDirs() const {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(layout::DownloadDir(root)))
      n += e.path().filename().string().starts_with("ready-");
    return n;
  }
};

}  // namespace

TEST_CASE("cri pull: the top layer is served from the cdimgs, the update fetches the delta alone") {
  World w("served");
  // Lower layer: ordinary, and no registry request for it.
  w.UnpackLower(1, "chain-lower-1");
  CHECK(w.reg.document_gets.empty());
  CHECK(w.StoreIds().empty());

  // Top layer: AlreadyExists, the image snapshot exists under the ref.
  auto top = w.sn->Prepare("extract-top chain-top-1", "chain-lower-1", w.LayerLabels(1, 1, "chain-top-1"));
  REQUIRE(absl::IsAlreadyExists(top.status()));
  auto st = w.sn->Stat("chain-top-1");
  REQUIRE(st.ok());
  CHECK(st->kind == Kind::kCommitted);
  CHECK(st->parent == "chain-lower-1");
  CHECK(st->labels.at(kImageIdLabel) == "sha256:" + w.id[1]);
  CHECK(st->labels.at(kCriManifestDigestLabel) == w.pushed_full[1].subject.digest);
  CHECK(absl::IsNotFound(w.sn->Stat("extract-top chain-top-1").status()));  // no active snapshot left
  CHECK(w.StoreIds() == std::vector<std::string>{w.id[1]});
  CHECK(w.reg.downloads == std::vector<std::string>{w.pushed_full[1].artifact.blob_digest});
  CHECK(w.ReadyDirs() == 0);

  // A container on it: the di3fs mount alone, never the lower layer's directory.
  auto lower = w.sn->Stat("chain-lower-1");
  REQUIRE(lower.ok());
  auto c = w.sn->Prepare("container", "chain-top-1", {});
  REQUIRE(c.ok());
  REQUIRE(c->size() == 1);
  CHECK(c->at(0).type == "overlay");
  CHECK(c->at(0).options.back() == "lowerdir=" + layout::MountPoint(w.root, w.id[1]));
  auto v = w.sn->View("view", "chain-top-1", {});
  REQUIRE(v.ok());
  CHECK(v->at(0).type == "bind");
  CHECK(v->at(0).source == layout::MountPoint(w.root, w.id[1]));
  CHECK(w.mounter->mounted.count(w.id[1]) == 1);

  // The update: lower layer unpacked as usual, top layer from the delta 1 -> 2.
  w.UnpackLower(2, "chain-lower-2");
  auto top2 = w.sn->Prepare("extract-top chain-top-2", "chain-lower-2", w.LayerLabels(2, 1, "chain-top-2"));
  REQUIRE(absl::IsAlreadyExists(top2.status()));
  CHECK(w.reg.downloads.back() == w.pushed_delta.artifact.blob_digest);
  CHECK(std::find(w.reg.downloads.begin(), w.reg.downloads.end(), w.pushed_full[2].artifact.blob_digest) ==
        w.reg.downloads.end());
  auto st2 = w.sn->Stat("chain-top-2");
  REQUIRE(st2.ok());
  CHECK(st2->labels.at(kImageIdLabel) == "sha256:" + w.id[2]);
  auto ids = w.StoreIds();
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> want{w.id[1], w.id[2]};
  std::sort(want.begin(), want.end());
  CHECK(ids == want);
  auto c2 = w.sn->Prepare("container-2", "chain-top-2", {});
  REQUIRE(c2.ok());
  CHECK(c2->at(0).options.back() == "lowerdir=" + layout::MountPoint(w.root, w.id[2]));
  CHECK(w.mounter->chains[w.id[2]] ==
        std::vector<std::string>{layout::StorePath(w.root, w.id[2]), layout::StorePath(w.root, w.id[1])});
}

TEST_CASE("cri pull: a one-layer image is served whole, labels without CRI ones or of lower layers are ordinary") {
  World w("onelayer");
  auto one = std::make_unique<MemorySourceImage>(Config(1), std::vector<std::string>{"the only layer"});
  Labels l{{keys::kSnapshotRefLabel, "chain-one"},
           {kCriImageRefLabel, "fake.test:5000/team/app:v1"},
           {kCriManifestDigestLabel, w.pushed_full[1].subject.digest},
           {kCriLayerDigestLabel, one->layers()[0].digest},
           {kCriImageLayersLabel, one->layers()[0].digest}};
  auto top = w.sn->Prepare("extract chain-one", "", l);
  REQUIRE(absl::IsAlreadyExists(top.status()));
  auto st = w.sn->Stat("chain-one");
  REQUIRE(st.ok());
  CHECK(st->parent.empty());
  // No CRI labels: an ordinary Prepare, nothing asked.
  size_t asked = w.reg.document_gets.size();
  REQUIRE(w.sn->Prepare("plain", "", {{keys::kSnapshotRefLabel, "chain-plain"}}).ok());
  CHECK(w.reg.document_gets.size() == asked);
}

TEST_CASE("cri pull: an image without cdimgs is unpacked as usual and asked about once") {
  World w("none");
  std::string other = "sha256:" + std::string(64, 'e');
  auto m = w.sn->Prepare("extract a", "", w.LayerLabels(1, 1, "chain-a", other));
  REQUIRE(m.ok());  // ordinary: containerd unpacks the layer into it
  CHECK(m->at(0).type == "bind");
  CHECK(w.reg.document_gets == std::vector<std::string>{"referrers/" + other});
  CHECK(w.StoreIds().empty());
  // Another node pulling the same image soon after: no second lookup.
  auto m2 = w.sn->Prepare("extract b", "", w.LayerLabels(1, 1, "chain-b", other));
  REQUIRE(m2.ok());
  CHECK(w.reg.document_gets.size() == 1);
}

TEST_CASE("cri pull: a corrupt cdimg blob falls back to layers and leaves nothing in the store") {
  World w("corrupt", std::chrono::seconds(0));
  std::string& blob = w.reg.blobs.at(w.pushed_full[1].artifact.blob_digest);
  blob[blob.size() / 2] ^= 1;
  auto m = w.sn->Prepare("extract-top t1", "", w.LayerLabels(1, 1, "chain-top-1"));
  REQUIRE(m.ok());  // ordinary
  CHECK(w.reg.downloads == std::vector<std::string>{w.pushed_full[1].artifact.blob_digest});
  CHECK(w.StoreIds().empty());
  CHECK(w.ReadyDirs() == 0);
  CHECK(fs::is_empty(layout::StoreDir(w.root)));
  auto st = w.sn->Stat("chain-top-1");
  CHECK(absl::IsNotFound(st.status()));
  // The registry's blob fixed: the next pull (no failure kept, ttl 0) is served.
  blob[blob.size() / 2] ^= 1;
  REQUIRE(w.sn->Remove("extract-top t1").ok());
  auto again = w.sn->Prepare("extract-top t2", "", w.LayerLabels(1, 1, "chain-top-1"));
  CHECK(absl::IsAlreadyExists(again.status()));
  CHECK(w.StoreIds() == std::vector<std::string>{w.id[1]});
}

TEST_CASE("cri pull: two pulls of one image at once download its cdimg once") {
  World w("concurrent");
  absl::Status st[2];
  std::thread a([&] { st[0] = w.sn->Prepare("extract-top a", "", w.LayerLabels(1, 1, "chain-top-1")).status(); });
  std::thread b([&] { st[1] = w.sn->Prepare("extract-top b", "", w.LayerLabels(1, 1, "chain-top-1")).status(); });
  a.join();
  b.join();
  CHECK(absl::IsAlreadyExists(st[0]));
  CHECK(absl::IsAlreadyExists(st[1]));
  CHECK(w.reg.downloads == std::vector<std::string>{w.pushed_full[1].artifact.blob_digest});
  CHECK(w.StoreIds() == std::vector<std::string>{w.id[1]});
}

TEST_CASE("cri pull: a registry that cannot be reached falls back to layers") {
  World w("down", std::chrono::seconds(0));
  w.registry_down = "connect to fake.test:5000: connection refused";
  w.UnpackLower(1, "chain-lower-1");
  auto m = w.sn->Prepare("extract-top t", "chain-lower-1", w.LayerLabels(1, 1, "chain-top-1"));
  REQUIRE(m.ok());  // ordinary: an overlay over the lower layer to unpack into
  CHECK(m->at(0).type == "overlay");
  CHECK(absl::IsNotFound(w.sn->Stat("chain-top-1").status()));
  CHECK(w.StoreIds().empty());
  // containerd unpacks and commits as with any snapshotter.
  REQUIRE(w.sn->Commit("chain-top-1", "extract-top t", {}).ok());
  auto st = w.sn->Stat("chain-top-1");
  REQUIRE(st.ok());
  CHECK(st->labels.count(kImageIdLabel) == 0);
}

TEST_CASE("cri pull: a registry that did not answer is asked again by the next pull") {
  World w("retry");  // failures kept 60 s, as by default
  w.registry_down = "connect to fake.test:5000: connection refused";
  w.UnpackLower(1, "chain-lower-1");
  auto m = w.sn->Prepare("extract-top t1", "chain-lower-1", w.LayerLabels(1, 1, "chain-top-1"));
  REQUIRE(m.ok());  // fell back: ordinary
  CHECK(w.StoreIds().empty());
  // containerd's own pull failed too (same registry); kubelet retries.
  REQUIRE(w.sn->Remove("extract-top t1").ok());
  w.registry_down.clear();
  auto again = w.sn->Prepare("extract-top t2", "chain-lower-1", w.LayerLabels(1, 1, "chain-top-1"));
  CHECK(absl::IsAlreadyExists(again.status()));  // served from the cdimg this time
  CHECK(w.StoreIds() == std::vector<std::string>{w.id[1]});
}
