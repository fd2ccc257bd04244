// The snapshotter's runtime half over its seams (snap_fakes.h), without FUSE,
// processes or containerd: image snapshots with a fake mounter, Di3fsMounter's
// adoption and dead-mount recovery over a fake mount table, LoadImage's root
// check and rollback over a fake containerd routed to a real Snapshotter.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/metadata_keys.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/load.h"
#include "d4c/snap/mounter.h"
#include "d4c/snap/snapshotter.h"
#include "d4c/base/strcat.h"
#include "snap_fakes.h"

using namespace d4c;
using namespace d4c::snap;
using d4c::snap::testing::FakeContainerd;
using d4c::snap::testing::FakeMounter;
using d4c::snap::testing::FakeMountSystem;
namespace fs = std::filesystem;

namespace {

std::string FreshDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-snaprt-test-", getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::unique_ptr<Snapshotter> Open(const std::string& root, std::shared_ptr<ImageMounter> m) {
  Snapshotter::Options o;
  o.root = root;
  o.mounter = std::move(m);
  auto sn = Snapshotter::Open(o);
  REQUIRE(sn.ok());
  return std::move(*sn);
}

Labels ImageLabels(const std::string& id) {
  return {{kImageIdLabel, "sha256:" + id}, {kSnapshotRefLabel, "sha256:" + id}};
}

std::vector<std::string> StoreFiles(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(layout::StoreDir(root), ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("snapshotter: image snapshots prepare, commit and remove over the image mounter") {
  auto root = FreshDir("img");
  auto mounter = std::make_shared<FakeMounter>(root);
  auto sn = Open(root, mounter);
  std::string id = testing::WriteImage(root + "/img.cdimg", "hello\n");
  REQUIRE(sn->store().Add(root + "/img.cdimg").ok());

  // The image snapshot: created committed, nothing mounted yet.
  CHECK(absl::IsAlreadyExists(sn->Prepare("extract-1", "", ImageLabels(id)).status()));
  CHECK(mounter->mounted.empty());
  // A container on top mounts the image chain from the store.
  auto m = sn->Prepare("ctr", "sha256:" + id, {});
  REQUIRE(m.ok());
  REQUIRE(mounter->mounted.count(id) == 1);
  CHECK(mounter->chains[id] == std::vector<std::string>{layout::StorePath(root, id)});
  CHECK((*m)[0].options.back() == "lowerdir=" + layout::MountPoint(root, id));
  // Commit the container; a second layer on top still lists the image last.
  std::ofstream(sn->SnapshotDir(2) + "/fs/x") << "x";
  REQUIRE(sn->Commit("layer2", "ctr", {}).ok());
  auto m2 = sn->Prepare("ctr2", "layer2", {});
  REQUIRE(m2.ok());
  CHECK((*m2)[0].options.back().ends_with(":" + layout::MountPoint(root, id)));
  // A mount failure is the Prepare's error and creates nothing.
  mounter->mounted.clear();
  mounter->fail_ensure = "no fuse here";
  auto bad = sn->Prepare("ctr3", "layer2", {});
  CHECK(Msg(bad.status().message()) == "no fuse here");
  CHECK(absl::IsNotFound(sn->Stat("ctr3").status()));
  mounter->fail_ensure.clear();

  // Removing the last snapshot of the image unmounts it, not before.
  REQUIRE(sn->Remove("ctr2").ok());
  REQUIRE(sn->Remove("layer2").ok());
  mounter->calls.clear();
  REQUIRE(sn->Remove("sha256:" + id).ok());
  CHECK(mounter->calls == std::vector<std::string>{"unmount " + id});
}

TEST_CASE("snapshotter: a restart recovers and mounts the images that snapshots need") {
  auto root = FreshDir("restart");
  std::string id = testing::WriteImage(root + "/img.cdimg", "hello\n");
  std::string unused = testing::WriteImage(root + "/other.cdimg", "other\n");
  {
    auto sn = Open(root, std::make_shared<FakeMounter>(root));
    REQUIRE(sn->store().Add(root + "/img.cdimg").ok());
    REQUIRE(sn->store().Add(root + "/other.cdimg").ok());
    CHECK(absl::IsAlreadyExists(sn->Prepare("x1", "", ImageLabels(id)).status()));
    CHECK(absl::IsAlreadyExists(sn->Prepare("x2", "", ImageLabels(unused)).status()));
    REQUIRE(sn->Prepare("ctr", "sha256:" + id, {}).ok());
  }
  auto mounter = std::make_shared<FakeMounter>(root);
  auto sn = Open(root, mounter);
  // Only the image with children is kept and mounted again; the marker keeps its id.
  CHECK(mounter->recovered_keep == std::vector<std::string>{id});
  CHECK(mounter->calls.at(0) == "recover 1");
  CHECK(mounter->calls.at(1) == "ensure " + id);
  CHECK(mounter->mounted == std::set<std::string>{id});
  auto again = ReadRootMarker(root);
  REQUIRE(again.ok());
  CHECK(again->root_id == sn->marker().root_id);
}

// The node-wide cache budget the mounter wrote (ROOT/cache/.budget, d4c/cache_budget.h).
static uint64_t BudgetFile(const std::string& root) {
  std::ifstream f(layout::CacheDir(root) + "/.budget");
  uint64_t v = 0;
  f >> v;
  return v;
}

TEST_CASE("di3fs mounter: argv, adoption of live mounts, dead mounts detached before a remount") {
  auto root = FreshDir("mounter");
  std::string a(64, 'a'), b(64, 'b'), c(64, 'c');
  auto sys_owned = std::make_unique<FakeMountSystem>();
  FakeMountSystem* sys = sys_owned.get();
  Di3fsMounter m({.root = root, .di3fs = "/opt/di3fs", .cache_size = 12345}, std::move(sys_owned));

  SECTION("first mount: the di3fs command line of di3fs_args.h") {
    REQUIRE(m.Ensure(a, {"/s/top.cdimg", "/s/parent.cdimg"}).ok());
    REQUIRE(sys->spawned.size() == 1);
    CHECK(sys->spawned[0] == std::vector<std::string>{"/opt/di3fs", "--cdimg", "/s/top.cdimg", "--base",
                                                      "/s/parent.cdimg", "--cache-dir",
                                                      layout::CacheDirFor(root, a), "--cache-root",
                                                      layout::CacheDir(root), "--cache-size", "12345", "-o",
                                                      "allow_other", "-o", "nosuid", "-o", "nodev",
                                                      layout::MountPoint(root, a)});
    std::ifstream pf(layout::PidFile(root, a));
    int pid = 0;
    pf >> pid;
    CHECK(pid == 1000);
    // A second Ensure reuses the live mount.
    REQUIRE(m.Ensure(a, {"/s/top.cdimg", "/s/parent.cdimg"}).ok());
    CHECK(sys->spawned.size() == 1);
  }

  SECTION("after a restart: live mounts adopted, dead ones detached, unneeded ones unmounted") {
    // State a previous snapshotter left: a live mount (a), a dead one (b),
    // a live one no snapshot needs any more (c).
    for (const auto& id : {a, b, c}) {
      fs::create_directories(layout::MountPoint(root, id));
      std::ofstream(layout::PidFile(root, id)) << (id == a ? 500 : id == b ? 501 : 502) << "\n";
    }
    sys->mounts[layout::MountPoint(root, a)] = {true, true, "fuse.di3fs"};
    sys->procs[500] = layout::MountPoint(root, a);
    sys->mounts[layout::MountPoint(root, b)] = {true, false, "fuse.di3fs"};  // ENOTCONN
    sys->mounts[layout::MountPoint(root, c)] = {true, true, "fuse.di3fs"};
    sys->procs[502] = layout::MountPoint(root, c);

    m.Recover({a, b});
    CHECK(sys->log == std::vector<std::string>{"detach " + layout::MountPoint(root, b), "kill 502 15"});
    CHECK(!sys->mounts.count(layout::MountPoint(root, c)));
    CHECK(!fs::exists(layout::MountPoint(root, c)));
    CHECK(!fs::exists(layout::PidFile(root, c)));
    CHECK(sys->mounts.at(layout::MountPoint(root, a)).alive);  // adopted, untouched

    sys->log.clear();
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());  // adopted mount reused
    REQUIRE(m.Ensure(b, {"/s/b.cdimg"}).ok());  // remounted
    CHECK(sys->log == std::vector<std::string>{"spawn " + layout::MountPoint(root, b)});
  }

  SECTION("a mount that died while running is detached, then mounted again") {
    sys->mounts[layout::MountPoint(root, a)] = {true, false, "fuse.di3fs"};
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    CHECK(sys->log == std::vector<std::string>{"detach " + layout::MountPoint(root, a),
                                               "spawn " + layout::MountPoint(root, a)});
    CHECK(sys->mounts.at(layout::MountPoint(root, a)).alive);
  }

  SECTION("a di3fs that exits before mounting is an error naming the image") {
    sys->spawn_exits = true;
    auto st = m.Ensure(a, {"/s/a.cdimg"});
    CHECK(absl::IsInternal(st));
    CHECK_THAT(Msg(st.message()), Catch::Contains("sha256:" + a) && Catch::Contains("before mounting"));
  }

  SECTION("prune unmounts images nothing uses and deletes their cache") {
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    REQUIRE(m.Ensure(b, {"/s/b.cdimg"}).ok());
    fs::create_directories(layout::CacheDirFor(root, c));  // cache of an image long gone
    REQUIRE(m.Prune({a}).ok());
    CHECK(sys->mounts.count(layout::MountPoint(root, a)));
    CHECK(!sys->mounts.count(layout::MountPoint(root, b)));
    CHECK(!fs::exists(layout::CacheDirFor(root, b)));
    CHECK(!fs::exists(layout::CacheDirFor(root, c)));
    CHECK(fs::exists(layout::CacheDirFor(root, a)));
    CHECK(BudgetFile(root) == 12345);  // the root's files are not an image's
  }

  SECTION("kernel without FUSE_NOTIFY_RESEND: no connection is held") {
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    CHECK(m.HeldCount() == 0);
    CHECK(sys->open_fds.empty());
  }

  SECTION("a killed di3fs is replaced on its held connection: no detach, no new mount") {
    sys->hold_fds = true;
    std::string mp = layout::MountPoint(root, a);
    REQUIRE(m.Ensure(a, {"/s/top.cdimg", "/s/parent.cdimg"}).ok());
    CHECK(m.HeldCount() == 1);
    CHECK(sys->open_fds == std::set<int>{1100});
    std::vector<std::string> takeover = sys->spawned[0];
    takeover.insert(takeover.end() - 1, {"--takeover-fd", "3"});

    sys->Crash(1000);
    m.Reap();  // the watcher (every 500 ms in the snapshotter)
    REQUIRE(sys->spawned.size() == 2);
    CHECK(sys->spawned[1] == takeover);
    CHECK(sys->passed_fds[1] == 1100);  // inherited as descriptor 3
    std::ifstream pf(layout::PidFile(root, a));
    int pid = 0;
    pf >> pid;
    CHECK(pid == 1001);
    m.Reap();  // alive: nothing more
    CHECK(sys->spawned.size() == 2);

    sys->Crash(1001);  // found by Ensure before the watcher: replaced there, argv not grown
    REQUIRE(m.Ensure(a, {"/s/top.cdimg", "/s/parent.cdimg"}).ok());
    REQUIRE(sys->spawned.size() == 3);
    CHECK(sys->spawned[2] == takeover);
    for (const auto& l : sys->log) CHECK(l.rfind("detach", 0) != 0);
    CHECK(sys->mounts.at(mp).alive);

    sys->log.clear();
    REQUIRE(m.Unmount(a).ok());
    // The copy is closed before the daemon is stopped (a dead daemon's
    // connection then ends instead of waiting for a replacement).
    REQUIRE(sys->log.size() >= 2);
    CHECK(sys->log[0] == "close 1100");
    CHECK(sys->log[1] == "kill 1002 15");
    CHECK(sys->open_fds.empty());
    CHECK(m.HeldCount() == 0);
  }

  SECTION("replacements that exit at once: after 3 the connection is let go, then mounted anew") {
    sys->hold_fds = true;
    std::string mp = layout::MountPoint(root, a);
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    sys->Crash(1000);
    sys->spawn_exits = true;
    m.Reap();
    m.Reap();
    auto st = m.Ensure(a, {"/s/a.cdimg"});
    CHECK(absl::IsUnavailable(st));
    CHECK_THAT(Msg(st.message()), Catch::Contains("sha256:" + a) && Catch::Contains("exited at once"));
    CHECK(sys->spawned.size() == 4);
    CHECK(m.HeldCount() == 1);
    m.Reap();  // the 4th death: let go
    CHECK(sys->spawned.size() == 4);
    CHECK(m.HeldCount() == 0);
    CHECK(sys->open_fds.empty());
    // Without a holder the kernel ends the connection: the old way from here.
    sys->mounts[mp].alive = false;
    sys->spawn_exits = false;
    sys->log.clear();
    REQUIRE(m.Ensure(a, {"/s/a.cdimg"}).ok());
    CHECK(sys->log == std::vector<std::string>{"detach " + mp, "spawn " + mp});
    CHECK(m.HeldCount() == 1);
  }

  SECTION("an adopted daemon's connection is held too; its replacement runs its command line") {
    sys->hold_fds = true;
    std::string mp = layout::MountPoint(root, a);
    fs::create_directories(mp);
    std::ofstream(layout::PidFile(root, a)) << 500 << "\n";
    sys->mounts[mp] = {true, true, "fuse.di3fs"};
    sys->procs[500] = mp;
    // It was itself a replacement: its --takeover-fd is not repeated.
    sys->cmdlines[500] = {"/old/di3fs", "--cdimg", "/s/a.cdimg", "--takeover-fd", "3", mp};
    m.Recover({a});
    CHECK(m.HeldCount() == 1);
    sys->Crash(500);
    m.Reap();
    REQUIRE(sys->spawned.size() == 1);
    CHECK(sys->spawned[0] == std::vector<std::string>{"/old/di3fs", "--cdimg", "/s/a.cdimg", "--takeover-fd", "3", mp});
    CHECK(sys->passed_fds[0] == 600);
  }

  SECTION("--cache-size is written as the node-wide budget, for adopted daemons too") {
    CHECK(BudgetFile(root) == 12345);
    Di3fsMounter restarted({.root = root, .di3fs = "/opt/di3fs", .cache_size = 999}, std::make_unique<FakeMountSystem>());
    CHECK(BudgetFile(root) == 999);
  }
}

TEST_CASE("load: the image reaches the store of the snapshotter containerd uses, through it, or nothing stays") {
  auto root = FreshDir("load-root");
  auto files = FreshDir("load-files");
  std::string id = testing::WriteImage(files + "/img.cdimg", "hello\n");
  auto sn = Open(root, std::make_shared<FakeMounter>(root));
  FakeContainerd ctd("di3fs", sn.get());
  LoadOptions o;
  o.image = "example/img:v1";
  o.cdimg = files + "/img.cdimg";

  SECTION("success: store, snapshot, content, image record with the one d4c key") {
    auto r = LoadImage(o, ctd);
    REQUIRE(r.ok());
    CHECK(r->image_id == "sha256:" + id);
    CHECK(r->stored);
    CHECK(r->snapshot_created);
    CHECK(StoreFiles(root) == std::vector<std::string>{id + ".cdimg"});
    CHECK(sn->Stat("sha256:" + id).ok());
    const auto& img = ctd.images.at("example/img:v1");
    CHECK(img.labels.at(keys::kImageId) == "sha256:" + id);
    CHECK(keys::ImageIdOf(img.labels) == "sha256:" + id);
    CHECK(ctd.blobs.at(r->manifest_digest).find(keys::kLoadedLayerType) != std::string::npos);
    CHECK(ctd.leases.empty());
    // Twice: harmless, nothing new.
    auto again = LoadImage(o, ctd);
    REQUIRE(again.ok());
    CHECK(!again->stored);
    CHECK(!again->snapshot_created);
    // The right root, given, is accepted too.
    o.snapshotter_root = root;
    CHECK(LoadImage(o, ctd).ok());
  }

  SECTION("the image enters the store only through the snapshotter: a file of another id is refused") {
    std::string other = testing::WriteImage(files + "/other.cdimg", "other\n");
    auto direct = sn->Prepare("k", "", {{kImageIdLabel, "sha256:" + id},
                                        {kSnapshotRefLabel, "sha256:" + id},
                                        {keys::kSnapshotImportLabel, files + "/other.cdimg"}});
    REQUIRE(absl::IsInvalidArgument(direct.status()));
    CHECK_THAT(Msg(direct.status().message()),
               Catch::Contains(files + "/other.cdimg holds image sha256:" + other) &&
                   Catch::Contains("not the image sha256:" + id));
    CHECK(StoreFiles(root).empty());
    auto relative = sn->Prepare("k", "", {{kImageIdLabel, "sha256:" + id},
                                          {kSnapshotRefLabel, "sha256:" + id},
                                          {keys::kSnapshotImportLabel, "img.cdimg"}});
    CHECK(absl::IsInvalidArgument(relative.status()));
    CHECK(StoreFiles(root).empty());
  }

  SECTION("removing the last snapshot of an image deletes it from the store") {
    REQUIRE(LoadImage(o, ctd).ok());
    REQUIRE(StoreFiles(root) == std::vector<std::string>{id + ".cdimg"});
    REQUIRE(sn->Remove("sha256:" + id).ok());
    CHECK(StoreFiles(root).empty());
    // And a restart removes what an interrupted import left.
    { std::ofstream(layout::StoreDir(root) + "/" + id + ".cdimg.tmp.abc123") << "partial"; }
    sn.reset();
    sn = Open(root, std::make_shared<FakeMounter>(root));
    CHECK(StoreFiles(root).empty());
  }

  SECTION("a pull's hand-over: intermediate images stay as long as an image built on them") {
    // A (full) -> M (delta) -> Y (delta); the node held nothing.
    std::string a = id;
    std::string m = testing::WriteImage(files + "/m-full.cdimg", "hello, m\n");
    std::string y = testing::WriteImage(files + "/y-full.cdimg", "hello, y\n");
    auto open = [](const std::string& p) {
      auto c = ImageChain::Open(p, {});
      REQUIRE(c.ok());
      return std::move(*c);
    };
    auto ca = open(o.cdimg), cm = open(files + "/m-full.cdimg"), cy = open(files + "/y-full.cdimg");
    REQUIRE(DiffImages(*ca, *cm, files + "/a-m.cdimg", {}).ok());
    REQUIRE(DiffImages(*cm, *cy, files + "/m-y.cdimg", {}).ok());
    o.image = "example/img:v3";
    {
      auto h = Handover::Begin(o, ctd);
      REQUIRE(h.ok());
      CHECK((*h)->HeldImages().empty());
      REQUIRE((*h)->Import(o.cdimg).ok());
      auto im = (*h)->Import(files + "/a-m.cdimg");
      REQUIRE(im.ok());
      CHECK(im->stored);
      CHECK((*h)->HeldImages() == std::set<std::string>{"sha256:" + a, "sha256:" + m});
      auto ly = (*h)->Load(files + "/m-y.cdimg");
      REQUIRE(ly.ok());
      CHECK(ly->chain_depth == 3);
      (*h)->Commit();
    }
    // Only Y's snapshot is left; its chain keeps A and M in the store.
    CHECK(ctd.images.at("example/img:v3").labels.at(keys::kImageId) == "sha256:" + y);
    CHECK(sn->Stat("sha256:" + y).ok());
    CHECK(absl::IsNotFound(sn->Stat("sha256:" + m).status()));
    CHECK(absl::IsNotFound(sn->Stat("sha256:" + a).status()));
    std::vector<std::string> chain_files = {a + ".cdimg", m + ".cdimg", y + ".cdimg"};
    std::sort(chain_files.begin(), chain_files.end());
    CHECK(StoreFiles(root) == chain_files);
    // The image goes (containerd's GC removes its snapshot): so does its chain.
    REQUIRE(sn->Remove("sha256:" + y).ok());
    CHECK(StoreFiles(root).empty());
  }

  SECTION("a hand-over that fails midway leaves nothing") {
    std::string m = testing::WriteImage(files + "/m-full.cdimg", "hello, m\n");
    auto ca = ImageChain::Open(o.cdimg, {});
    auto cm = ImageChain::Open(files + "/m-full.cdimg", {});
    REQUIRE((ca.ok() && cm.ok()));
    REQUIRE(DiffImages(**ca, **cm, files + "/a-m.cdimg", {}).ok());
    ctd.fail_put_image = "images service down";
    {
      auto h = Handover::Begin(o, ctd);
      REQUIRE(h.ok());
      REQUIRE((*h)->Import(o.cdimg).ok());
      CHECK(!(*h)->Load(files + "/a-m.cdimg").ok());
      CHECK(StoreFiles(root).size() == 2);
    }
    CHECK(StoreFiles(root).empty());
    CHECK(absl::IsNotFound(sn->Stat("sha256:" + m).status()));
    CHECK(ctd.leases.empty());
  }

  SECTION("the lease of a killed hand-over ends with the next one; a live one's stays") {
    std::string self = ProcessIdentity(getpid());
    REQUIRE(!self.empty());
    pid_t child = fork();
    if (child == 0) _exit(0);
    REQUIRE(child > 0);
    int st = 0;
    REQUIRE(waitpid(child, &st, 0) == child);
    std::string boot = self.substr(0, self.find('/'));
    auto dead = ctd.CreateLease(3600, {{keys::kLeaseOwnerLabel, StrCat(boot, "/", child, "/12345")}});
    auto live = ctd.CreateLease(3600, {{keys::kLeaseOwnerLabel, self}});
    auto other = ctd.CreateLease(3600, {{"some.other.label", "x"}});
    REQUIRE((dead.ok() && live.ok() && other.ok()));
    REQUIRE(LoadImage(o, ctd).ok());
    CHECK(ctd.leases == std::set<std::string>{*live, *other});
  }

  SECTION("a delta whose parent the snapshotter lacks is refused before anything is written") {
    std::string m = testing::WriteImage(files + "/m-full.cdimg", "hello, m\n");
    auto ca = ImageChain::Open(o.cdimg, {});
    auto cm = ImageChain::Open(files + "/m-full.cdimg", {});
    REQUIRE((ca.ok() && cm.ok()));
    REQUIRE(DiffImages(**ca, **cm, files + "/a-m.cdimg", {}).ok());
    o.cdimg = files + "/a-m.cdimg";
    auto r = LoadImage(o, ctd);
    REQUIRE(absl::IsFailedPrecondition(r.status()));
    CHECK_THAT(Msg(r.status().message()), Catch::Contains("is a delta from image sha256:" + id) &&
                                              Catch::Contains("load or pull the parent image first"));
    CHECK(StoreFiles(root).empty());
    CHECK(ctd.images.empty());
  }

  SECTION("a load failing after the copy leaves nothing in the store and no snapshot") {
    ctd.fail_put_image = "images service down";
    auto r = LoadImage(o, ctd);
    REQUIRE(!r.ok());
    CHECK_THAT(Msg(r.status().message()), Catch::Contains("images service down"));
    CHECK(StoreFiles(root).empty());
    CHECK(absl::IsNotFound(sn->Stat("sha256:" + id).status()));
    CHECK(ctd.leases.empty());
    // A later load works.
    ctd.fail_put_image.clear();
    REQUIRE(LoadImage(o, ctd).ok());
    CHECK(StoreFiles(root) == std::vector<std::string>{id + ".cdimg"});
  }

  SECTION("a failure before the snapshot exists also removes the copy") {
    ctd.fail_write_blob = "content store full";
    CHECK(!LoadImage(o, ctd).ok());
    CHECK(StoreFiles(root).empty());
  }

  SECTION("a root of another snapshotter is refused, naming the right --snapshotter-root") {
    auto other = FreshDir("load-other-root");
    auto sn2 = Open(other, std::make_shared<FakeMounter>(other));  // a marker, another root id
    o.snapshotter_root = other;
    auto r = LoadImage(o, ctd);
    REQUIRE(absl::IsFailedPrecondition(r.status()));
    CHECK_THAT(Msg(r.status().message()),
               Catch::Contains("--snapshotter-root " + other) && Catch::Contains("pass --snapshotter-root " + root) &&
                   Catch::Contains("or leave the option out"));
    CHECK(StoreFiles(other).empty());
    CHECK(StoreFiles(root).empty());
    CHECK(ctd.blobs.empty());
    CHECK(ctd.images.empty());
  }

  SECTION("a directory that is no snapshotter root is refused") {
    auto plain = FreshDir("load-plain");
    o.snapshotter_root = plain;
    auto r = LoadImage(o, ctd);
    REQUIRE(absl::IsFailedPrecondition(r.status()));
    CHECK_THAT(Msg(r.status().message()),
               Catch::Contains("snapshotter.json") && Catch::Contains("pass --snapshotter-root " + root));
    CHECK(!fs::exists(layout::StoreDir(plain)));
  }

  SECTION("a wrong plugin name fails before anything is written") {
    o.snapshotter = "overlayfs-typo";
    auto r = LoadImage(o, ctd);
    REQUIRE(!r.ok());
    CHECK_THAT(Msg(r.status().message()), Catch::Contains("overlayfs-typo"));
    CHECK(StoreFiles(root).empty());
  }
}

TEST_CASE("root marker and probe answer: one format on both sides") {
  auto root = FreshDir("marker");
  CHECK(absl::IsNotFound(ReadRootMarker(root).status()));
  auto m = WriteRootMarker(root, "/run/x.sock");
  REQUIRE(m.ok());
  CHECK(m->root_id.size() == 32);
  auto m2 = WriteRootMarker(root, "/run/y.sock");
  REQUIRE(m2.ok());
  CHECK(m2->root_id == m->root_id);  // the id is the root's, kept across restarts
  auto read = ReadRootMarker(root);
  REQUIRE(read.ok());
  CHECK(read->address == "/run/y.sock");
  std::string r, id;
  REQUIRE(ParseRootProbeAnswer("prepare k: " + RootProbeAnswer(*read) + ": failed precondition", &r, &id));
  CHECK(r == root);
  CHECK(id == m->root_id);
  CHECK(!ParseRootProbeAnswer("snapshotter not loaded: di3fs", &r, &id));
  std::ofstream(layout::MarkerPath(root)) << "{}";
  CHECK(absl::IsDataLoss(ReadRootMarker(root).status()));
  // Legacy image-id label is still read.
  CHECK(keys::ImageIdOf({{keys::kLegacyImageId, "sha256:1"}}) == "sha256:1");
  CHECK(keys::ImageIdOf({{keys::kLegacyImageId, "sha256:1"}, {keys::kImageId, "sha256:2"}}) == "sha256:2");
}
