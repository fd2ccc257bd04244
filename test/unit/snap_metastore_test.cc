// di3fs snapshotter: metadata store semantics (containerd's snapshots/storage
// rules), filters, image store chain checks, and the snapshotter's mounts and
// directories (without FUSE: a fake image mounter, snap_fakes.h).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/snap/filters.h"
#include "d4c/snap/image_store.h"
#include "d4c/snap/metastore.h"
#include "d4c/snap/snapshotter.h"
#include "d4c/base/strcat.h"
#include "snap_fakes.h"

using namespace d4c;
using namespace d4c::snap;
namespace fs = std::filesystem;

namespace {

std::string FreshDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-snap-test-", getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::unique_ptr<MetaStore> OpenStore(const std::string& dir) {
  auto m = MetaStore::Open(dir + "/metadata.db");
  REQUIRE(m.ok());
  return std::move(*m);
}

std::vector<std::string> Names(MetaStore& m, const std::vector<std::string>& filters) {
  auto f = Filter::ParseAll(filters);
  REQUIRE(f.ok());
  std::vector<std::string> out;
  REQUIRE(m.Walk(*f, [&](const Record& r) {
             out.push_back(r.info.name);
             return absl::OkStatus();
           }).ok());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("metastore: create, commit and remove follow containerd's rules") {
  auto dir = FreshDir("rules");
  auto m = OpenStore(dir);

  auto a = m->Create(Kind::kActive, "a", "", {{"x", "1"}});
  REQUIRE(a.ok());
  CHECK(a->info.kind == Kind::kActive);
  CHECK(a->info.labels.at("x") == "1");
  CHECK(absl::IsAlreadyExists(m->Create(Kind::kView, "a", "", {}).status()));
  CHECK(absl::IsInvalidArgument(m->Create(Kind::kCommitted, "c", "", {}).status()));
  CHECK(absl::IsNotFound(m->Create(Kind::kActive, "b", "missing", {}).status()));
  // The parent must be committed.
  CHECK(absl::IsInvalidArgument(m->Create(Kind::kActive, "b", "a", {}).status()));

  // Commit keeps the id, renames, replaces the labels.
  auto c = m->Commit("a", "layer1", {4096, 2}, {{"y", "2"}});
  REQUIRE(c.ok());
  CHECK(c->id == a->id);
  CHECK(c->info.kind == Kind::kCommitted);
  CHECK(c->info.labels == Labels{{"y", "2"}});
  CHECK(c->usage.size == 4096);
  CHECK(absl::IsNotFound(m->Get("a").status()));
  CHECK(absl::IsNotFound(m->Commit("a", "other", {}, {}).status()));

  auto v = m->Create(Kind::kView, "v", "layer1", {});
  REQUIRE(v.ok());
  CHECK(v->info.parent == "layer1");
  REQUIRE(v->parent_ids == std::vector<int64_t>{c->id});
  CHECK(absl::IsFailedPrecondition(m->Commit("v", "x", {}, {}).status()));  // a view is not active
  auto b = m->Create(Kind::kActive, "b", "layer1", {});
  REQUIRE(b.ok());
  CHECK(absl::IsAlreadyExists(m->Commit("b", "layer1", {}, {}).status()));  // name taken
  REQUIRE(m->Commit("b", "layer2", {}, {}).ok());
  auto top = m->Create(Kind::kActive, "top", "layer2", {});
  REQUIRE(top.ok());
  CHECK(top->parent_ids.size() == 2);  // layer2, then layer1
  CHECK(top->parent_ids[1] == c->id);

  // Children block removal.
  CHECK(absl::IsFailedPrecondition(m->Remove("layer1").status()));
  CHECK(absl::IsFailedPrecondition(m->Remove("layer2").status()));
  CHECK(absl::IsNotFound(m->Remove("nope").status()));
  REQUIRE(m->Remove("top").ok());
  REQUIRE(m->Remove("layer2").ok());
  REQUIRE(m->Remove("v").ok());
  REQUIRE(m->Remove("layer1").ok());

  // Ids are never reused (directories are named by id).
  auto again = m->Create(Kind::kActive, "a", "", {});
  REQUIRE(again.ok());
  CHECK(again->id > top->id);
}

TEST_CASE("metastore: labels updates, validation and persistence") {
  auto dir = FreshDir("labels");
  {
    auto m = OpenStore(dir);
    REQUIRE(m->Create(Kind::kActive, "s", "", {{"a", "1"}, {"b", "2"}}).ok());
    Info in;
    in.name = "s";
    in.labels = {{"a", "10"}, {"c", "3"}};
    auto u = m->Update(in, {"labels.a"});
    REQUIRE(u.ok());
    CHECK(u->labels == Labels{{"a", "10"}, {"b", "2"}});
    u = m->Update(in, {"labels.b"});  // absent in info: removed
    REQUIRE(u.ok());
    CHECK(u->labels == Labels{{"a", "10"}});
    u = m->Update(in, {});  // all mutable fields: labels replaced
    REQUIRE(u.ok());
    CHECK(u->labels == in.labels);
    CHECK(u->updated_ns >= u->created_ns);
    CHECK(absl::IsInvalidArgument(m->Update(in, {"parent"}).status()));
    in.name = "missing";
    CHECK(absl::IsNotFound(m->Update(in, {}).status()));
    CHECK(absl::IsInvalidArgument(m->Create(Kind::kActive, "big", "", {{"k", std::string(5000, 'v')}}).status()));
  }
  auto m = OpenStore(dir);  // reopened: everything is there
  auto s = m->Get("s");
  REQUIRE(s.ok());
  CHECK(s->info.labels == Labels{{"a", "10"}, {"c", "3"}});
}

TEST_CASE("metastore: a failing hook rolls the transaction back") {
  auto dir = FreshDir("hook");
  auto m = OpenStore(dir);
  auto fail = [](const Record&) { return absl::InternalError("disk full"); };
  CHECK(absl::IsInternal(m->Create(Kind::kActive, "a", "", {}, fail).status()));
  CHECK(absl::IsNotFound(m->Get("a").status()));
  REQUIRE(m->Create(Kind::kActive, "a", "", {}).ok());
  CHECK(absl::IsInternal(m->Commit("a", "c", {}, {}, fail).status()));
  auto a = m->Get("a");
  REQUIRE(a.ok());
  CHECK(a->info.kind == Kind::kActive);
  CHECK(absl::IsInternal(m->Remove("a", fail).status()));
  CHECK(m->Get("a").ok());
  CHECK(absl::IsInternal(m->CreateImage("img", "ab", {}, {}, fail).status()));
  CHECK(absl::IsNotFound(m->Get("img").status()));
}

TEST_CASE("filters: containerd syntax on snapshots") {
  auto dir = FreshDir("filters");
  auto m = OpenStore(dir);
  REQUIRE(m->Create(Kind::kActive, "base-key", "", {}).ok());
  REQUIRE(m->Commit("base-key", "sha256:base", {}, {{"containerd.io/snapshot.ref", "sha256:base"}}).ok());
  REQUIRE(m->Create(Kind::kActive, "default/3/ctr1", "sha256:base", {{"app", "web"}}).ok());
  REQUIRE(m->Create(Kind::kView, "view1", "sha256:base", {{"app", "db"}}).ok());
  REQUIRE(m->CreateImage("sha256:img", "00ff", {{"containerd.io/snapshot.ref", "sha256:img"}}, {}).ok());

  using V = std::vector<std::string>;
  CHECK(Names(*m, {}) == V{"default/3/ctr1", "sha256:base", "sha256:img", "view1"});
  CHECK(Names(*m, {"kind==committed"}) == V{"sha256:base", "sha256:img"});
  CHECK(Names(*m, {"kind==active", "kind==view"}) == V{"default/3/ctr1", "view1"});  // any
  CHECK(Names(*m, {"parent==sha256:base,labels.app==web"}) == V{"default/3/ctr1"});  // all
  CHECK(Names(*m, {"labels.app"}) == V{"default/3/ctr1", "view1"});                   // presence
  CHECK(Names(*m, {"labels.app!=web"}) == V{"sha256:base", "sha256:img", "view1"});
  CHECK(Names(*m, {"name~=^default/"}) == V{"default/3/ctr1"});
  CHECK(Names(*m, {"name~=/^sha256:i/"}) == V{"sha256:img"});
  // The exact filter containerd's metadata layer sends for remote snapshots.
  CHECK(Names(*m, {R"(labels."containerd.io/snapshot.ref"==sha256:img,parent=="")"}) == V{"sha256:img"});
  CHECK(Names(*m, {"  kind == committed , parent==\"\" "}) == V{"sha256:base", "sha256:img"});

  for (std::string bad : {"kind==", "==x", "kind=x", "kind==a,,", "labels.\"open", "name~=(", "kind==a b"}) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(Filter::ParseAll({bad}).status()));
  }
}

TEST_CASE("image store: chains resolve from the store, a missing parent changes nothing") {
  auto dir = FreshDir("store");
  std::string a = dir + "/a.cdimg", b = dir + "/b.cdimg", d = dir + "/d.cdimg";
  std::string id_a = testing::WriteImage(a, "version 1\n");
  std::string id_b = testing::WriteImage(b, "version 2\n");
  auto ca = ImageChain::Open(a, {});
  auto cb = ImageChain::Open(b, {});
  REQUIRE(ca.ok());
  REQUIRE(cb.ok());
  DiffOptions dopt;
  dopt.threads = 1;
  REQUIRE(DiffImages(**ca, **cb, d, dopt).ok());

  ImageStore store(dir + "/store");
  auto missing = store.Check(d);
  CHECK(absl::IsFailedPrecondition(missing.status()));
  CHECK(Msg(missing.status().message()).find(id_a) != std::string::npos);  // names the missing parent
  CHECK(absl::IsFailedPrecondition(store.Add(d).status()));
  CHECK(!fs::exists(store.PathFor(id_b)));
  CHECK(absl::IsNotFound(store.Resolve(id_b).status()));

  bool added = false;
  auto ra = store.Add(a, &added);
  REQUIRE(ra.ok());
  CHECK(added);
  CHECK(ra->paths == std::vector<std::string>{store.PathFor(id_a)});
  REQUIRE(store.Add(a, &added).ok());
  CHECK(!added);  // twice is harmless
  auto rd = store.Add(d, &added);
  REQUIRE(rd.ok());
  CHECK(added);
  CHECK(DigestHex(rd->top.image_id) == id_b);
  auto chain = store.Resolve(id_b);
  REQUIRE(chain.ok());
  CHECK(chain->paths == std::vector<std::string>{store.PathFor(id_b), store.PathFor(id_a)});
  CHECK(chain->entries == 2);
  CHECK(absl::IsInvalidArgument(ParseSha256("sha256:xyz").status()));
}

TEST_CASE("snapshotter: overlay mounts, directories, image snapshots (no FUSE)") {
  auto root = FreshDir("sn");
  Snapshotter::Options o;
  o.root = root;
  o.mounter = std::make_shared<testing::FakeMounter>(root);
  auto sn = Snapshotter::Open(o);
  REQUIRE(sn.ok());
  Snapshotter& s = **sn;

  auto m = s.Prepare("k1", "", {});
  REQUIRE(m.ok());
  REQUIRE(m->size() == 1);
  CHECK((*m)[0].type == "bind");
  CHECK((*m)[0].options == std::vector<std::string>{"rw", "rbind"});
  std::string upper = (*m)[0].source;
  std::ofstream(upper + "/file") << "data";
  REQUIRE(s.Commit("c1", "k1", {}).ok());
  auto usage = s.GetUsage("c1");
  REQUIRE(usage.ok());
  CHECK(usage->inodes == 2);
  CHECK(absl::IsFailedPrecondition(s.Mounts("c1").status()));

  m = s.Prepare("k2", "c1", {});
  REQUIRE(m.ok());
  REQUIRE(m->size() == 1);
  CHECK((*m)[0].type == "overlay");
  auto& opts = (*m)[0].options;
  REQUIRE(opts.size() == 3);
  CHECK(opts[0].starts_with("workdir=" + root + "/snapshots/"));
  CHECK(opts[1].starts_with("upperdir=" + root + "/snapshots/"));
  CHECK(opts[2] == "lowerdir=" + upper);
  auto mm = s.Mounts("k2");
  REQUIRE(mm.ok());
  CHECK((*mm)[0].options == opts);
  m = s.View("v1", "c1", {});
  REQUIRE(m.ok());
  CHECK((*m)[0].type == "bind");
  CHECK((*m)[0].source == upper);
  CHECK((*m)[0].options == std::vector<std::string>{"ro", "rbind"});

  // Image snapshots through the remote-snapshot labels.
  std::string id = testing::WriteImage(root + "/img.cdimg", "hello\n");
  Labels l = {{kImageIdLabel, "sha256:" + id}, {kSnapshotRefLabel, "sha256:" + id}};
  CHECK(absl::IsNotFound(s.Prepare("default/1/extract", "", l).status()));  // not in the store yet
  REQUIRE(s.store().Add(root + "/img.cdimg").ok());
  CHECK(absl::IsInvalidArgument(s.Prepare("default/1/extract", "c1", l).status()));
  CHECK(absl::IsInvalidArgument(s.Prepare("default/1/extract", "", {{kImageIdLabel, "sha256:" + id}}).status()));
  auto img = s.Prepare("default/1/extract", "", l);
  CHECK(absl::IsAlreadyExists(img.status()));
  auto info = s.Stat("sha256:" + id);
  REQUIRE(info.ok());
  CHECK(info->kind == Kind::kCommitted);
  CHECK(info->parent.empty());
  CHECK(info->labels.at(kSnapshotRefLabel) == "sha256:" + id);
  CHECK(absl::IsNotFound(s.Stat("default/1/extract").status()));  // no leftover key
  CHECK(absl::IsAlreadyExists(s.Prepare("default/2/extract", "", l).status()));  // twice: same answer
  auto iu = s.GetUsage("sha256:" + id);
  REQUIRE(iu.ok());
  CHECK(iu->inodes == 2);

  m = s.Prepare("ctr", "sha256:" + id, {});
  REQUIRE(m.ok());
  CHECK((*m)[0].type == "overlay");
  CHECK((*m)[0].options.back() == "lowerdir=" + root + "/mnt/" + id);
  m = s.View("ctr-view", "sha256:" + id, {});
  REQUIRE(m.ok());
  CHECK((*m)[0].type == "bind");
  CHECK((*m)[0].source == root + "/mnt/" + id);
  CHECK(absl::IsFailedPrecondition(s.Remove("sha256:" + id)));

  // Remove deletes the directory; Cleanup removes orphans.
  REQUIRE(s.Remove("k2").ok());
  fs::create_directories(root + "/snapshots/99999/fs");
  REQUIRE(s.Cleanup().ok());
  CHECK(!fs::exists(root + "/snapshots/99999"));
  size_t dirs = 0;
  for (auto& e : fs::directory_iterator(root + "/snapshots")) {
    (void)e;
    ++dirs;
  }
  CHECK(dirs == 4);  // c1, v1, ctr, ctr-view (the image snapshot has none)

  std::vector<std::string> listed;
  REQUIRE(s.List({"kind==committed"}, [&](const Info& i) {
             listed.push_back(i.name);
             return absl::OkStatus();
           }).ok());
  std::sort(listed.begin(), listed.end());
  CHECK(listed == std::vector<std::string>{"c1", "sha256:" + id});
  CHECK(absl::IsInvalidArgument(s.List({"kind=="}, [](const Info&) { return absl::OkStatus(); })));
}
