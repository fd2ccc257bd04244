// Compaction of the snapshotter's store (compaction.h): the planner on its
// own, then real cdimg chains in a real store under a Snapshotter (fake
// mounter): ids and every file's bytes are kept, chains end shallow, what
// nothing needs is deleted, a failure changes nothing, a restart cleans up.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "d4c/base/strcat.h"
#include "d4c/chain.h"
#include "d4c/delta.h"
#include "d4c/snap/compaction.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/snapshotter.h"
#include "snap_fakes.h"

using namespace d4c;
using namespace d4c::snap;
using d4c::snap::testing::FakeMounter;
namespace fs = std::filesystem;

namespace {

std::string FreshDir(const std::string& name) {
  auto dir = fs::temp_directory_path() / StrCat("d4c-compact-test-", getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

Labels ImageLabels(const std::string& id) {
  return {{kImageIdLabel, "sha256:" + id}, {kSnapshotRefLabel, "sha256:" + id}};
}

std::vector<std::string> StoreIds(const Snapshotter& sn) { return sn.store().List(); }

// Version i of a 200-line text: line k says which version last changed it.
std::string Version(int i) {
  std::string s;
  for (int k = 0; k < 200; ++k) s += StrCat("line ", k, " of the file, changed in version ", k <= i ? k : 0, "\n");
  return s;
}

// Full images v0..v(n-1) in `files`, and the deltas v(i-1) -> v(i); returns the ids.
std::vector<std::string> MakeSeries(const std::string& files, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back(testing::WriteImage(StrCat(files, "/full-", i, ".cdimg"), Version(i)));
  for (int i = 1; i < n; ++i) {
    auto a = ImageChain::Open(StrCat(files, "/full-", i - 1, ".cdimg"), {});
    auto b = ImageChain::Open(StrCat(files, "/full-", i, ".cdimg"), {});
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(DiffImages(**a, **b, StrCat(files, "/d-", i, ".cdimg"), {}).ok());
  }
  return ids;
}

// Loads v0 (full) and the deltas up to v(n-1) into the store.
void LoadSeries(Snapshotter& sn, const std::string& files, int n) {
  REQUIRE(sn.store().Add(files + "/full-0.cdimg").ok());
  for (int i = 1; i < n; ++i) REQUIRE(sn.store().Add(StrCat(files, "/d-", i, ".cdimg")).ok());
}

std::string ContentOf(const Snapshotter& sn, const std::string& id) {
  auto c = sn.store().Resolve(id);
  REQUIRE(c.ok());
  auto chain = ImageChain::Open(c->paths[0], {c->paths.begin() + 1, c->paths.end()});
  REQUIRE(chain.ok());
  auto bytes = (*chain)->ReadFile(1);  // entry 0 is "/", 1 is "hello"
  REQUIRE(bytes.ok());
  return *bytes;
}

std::string ParentOf(const Snapshotter& sn, const std::string& id) {
  auto p = sn.store().ParentOf(id);
  REQUIRE(p.ok());
  return *p;
}

std::unique_ptr<Snapshotter> Open(const std::string& root, CompactionPolicy policy, bool background = false) {
  Snapshotter::Options o;
  o.root = root;
  o.mounter = std::make_shared<FakeMounter>(root);
  o.compaction = policy;
  o.background_compaction = background;
  auto sn = Snapshotter::Open(o);
  REQUIRE(sn.ok());
  return std::move(*sn);
}

}  // namespace

TEST_CASE("compaction planner: depth for the newest of a family, waste for any, nothing twice") {
  // F <- A <- B <- C <- D <- E, and G <- F (another image on F).
  std::vector<StoreImage> store = {{"F", "", 1000}, {"A", "F", 100}, {"B", "A", 100},
                                   {"C", "B", 100},  {"D", "C", 100}, {"E", "D", 100}};
  CompactionPolicy depth;
  depth.max_depth = 4;
  std::map<std::string, int64_t> all = {{"F", 1}, {"A", 2}, {"B", 3}, {"C", 4}, {"D", 5}, {"E", 6}};

  auto p = PlanCompaction(store, all, depth);
  REQUIRE(p);
  CHECK(p->top == "E");
  CHECK(p->rebased == std::vector<std::string>{"D", "C", "B", "A", "F"});
  CHECK(p->expected_parents.front() == std::pair<std::string, std::string>{"E", "D"});
  CHECK(p->expected_parents.back() == std::pair<std::string, std::string>{"F", ""});
  CHECK(p->reason == "chain of 5 deltas > 4");
  // Not deep enough; an image that failed is not chosen again.
  depth.max_depth = 5;
  CHECK(!PlanCompaction(store, all, depth));
  depth.max_depth = 4;
  CHECK(!PlanCompaction(store, all, depth, {"E"}));
  // After a compaction the oldest image is deep (reverse deltas), but not the
  // newest of its family: no compaction back and forth.
  std::vector<StoreImage> reversed = {{"E", "", 1000}, {"D", "E", 100}, {"C", "D", 100},
                                      {"B", "C", 100}, {"A", "B", 100}, {"F", "A", 100}};
  CHECK(!PlanCompaction(reversed, all, depth));
  // Waste: only E is served, the whole chain below it is kept for it alone.
  CompactionPolicy waste;
  waste.max_waste = 0.3;
  auto w = PlanCompaction(store, {{"E", 6}}, waste);
  REQUIRE(w);
  CHECK(w->top == "E");
  CHECK(w->rebased.empty());
  CHECK(w->reason == "images only its chain keeps: 1400 B > 30% of its full image's 1000 B");
  // F is also G's base: it is not waste of E's.
  store.push_back({"G", "F", 50});
  waste.max_waste = 0.5;
  CHECK(!PlanCompaction(store, {{"E", 6}, {"G", 7}}, waste));
  waste.max_waste = 0.3;
  CHECK(PlanCompaction(store, {{"E", 6}, {"G", 7}}, waste));
  // A chain that does not resolve is never planned; nothing without a policy.
  CHECK(!PlanCompaction({{"X", "missing", 10}}, {{"X", 1}}, waste));
  CHECK(!PlanCompaction(store, {{"E", 6}}, CompactionPolicy{}));
}

TEST_CASE("compaction: the newest becomes full, served older images reverse deltas, same ids and bytes") {
  auto root = FreshDir("depth");
  auto files = root + "/files";
  fs::create_directories(files);
  auto ids = MakeSeries(files, 6);
  CompactionPolicy policy;
  policy.max_depth = 2;
  auto sn = Open(root + "/sn", policy);
  LoadSeries(*sn, files, 6);
  for (const auto& id : ids) CHECK(absl::IsAlreadyExists(sn->Prepare("x-" + id, "", ImageLabels(id)).status()));
  CHECK(ParentOf(*sn, ids[5]) == ids[4]);

  auto done = sn->CompactOnce();
  REQUIRE(done.ok());
  CHECK(*done);
  CHECK(ParentOf(*sn, ids[5]) == "");
  for (int i = 0; i < 5; ++i) CHECK(ParentOf(*sn, ids[i]) == ids[i + 1]);
  for (int i = 0; i < 6; ++i) CHECK(ContentOf(*sn, ids[i]) == Version(i));
  CHECK(StoreIds(*sn).size() == 6);
  CHECK(fs::is_empty(layout::CompactDir(sn->store().dir() + "/..")));
  // v0 is now 5 deltas deep but older than v5: nothing more to do.
  auto again = sn->CompactOnce();
  REQUIRE(again.ok());
  CHECK(!*again);

  // The old images go: nothing keeps them any more.
  for (int i = 0; i < 5; ++i) REQUIRE(sn->Remove("sha256:" + ids[i]).ok());
  CHECK(StoreIds(*sn) == std::vector<std::string>{ids[5]});
  CHECK(ContentOf(*sn, ids[5]) == Version(5));
}

TEST_CASE("compaction: images only a chain keeps are freed, in the background too") {
  auto root = FreshDir("waste");
  auto files = root + "/files";
  fs::create_directories(files);
  auto ids = MakeSeries(files, 3);
  CompactionPolicy policy;
  policy.max_waste = 0.3;

  SECTION("CompactOnce") {
    auto sn = Open(root + "/sn", policy);
    LoadSeries(*sn, files, 3);
    CHECK(absl::IsAlreadyExists(sn->Prepare("x", "", ImageLabels(ids[2])).status()));
    auto done = sn->CompactOnce();
    REQUIRE(done.ok());
    CHECK(*done);
    CHECK(StoreIds(*sn) == std::vector<std::string>{ids[2]});
    CHECK(ParentOf(*sn, ids[2]) == "");
    CHECK(ContentOf(*sn, ids[2]) == Version(2));
  }
  SECTION("background: the image snapshot's creation wakes the compactor") {
    auto sn = Open(root + "/sn", policy, /*background=*/true);
    LoadSeries(*sn, files, 3);
    CHECK(absl::IsAlreadyExists(sn->Prepare("x", "", ImageLabels(ids[2])).status()));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (StoreIds(*sn).size() != 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(StoreIds(*sn) == std::vector<std::string>{ids[2]});
    CHECK(ParentOf(*sn, ids[2]) == "");
    CHECK(ContentOf(*sn, ids[2]) == Version(2));
  }
}

TEST_CASE("compaction: a compaction that cannot be built changes nothing, a restart empties the work dir") {
  auto root = FreshDir("fail");
  auto files = root + "/files";
  fs::create_directories(files);
  auto ids = MakeSeries(files, 3);
  CompactionPolicy policy;
  policy.max_waste = 0.3;
  std::string sroot = root + "/sn";
  std::vector<std::pair<std::string, std::string>> before;
  {
    auto sn = Open(sroot, policy);
    LoadSeries(*sn, files, 3);
    CHECK(absl::IsAlreadyExists(sn->Prepare("x", "", ImageLabels(ids[2])).status()));
    // Damage the content of the full image at the bottom of the chain (its
    // headers stay valid, so the chain still opens): the patch fails.
    std::string full = sn->store().PathFor(ids[0]);
    {
      std::string bytes;
      {
        std::ifstream in(full, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
      }
      bytes[14] ^= 0x55;  // inside the first blob (blobs start at offset 10)
      std::ofstream(full, std::ios::binary | std::ios::trunc) << bytes;
    }
    for (const auto& id : StoreIds(*sn)) {
      std::ifstream in(sn->store().PathFor(id), std::ios::binary);
      before.push_back({id, std::string(std::istreambuf_iterator<char>(in), {})});
    }
    std::set<std::string> skip;
    auto done = sn->CompactOnce(&skip);
    CHECK(!done.ok());
    CHECK_THAT(std::string(done.status().message()), Catch::Contains("store unchanged"));
    CHECK(skip == std::set<std::string>{ids[2]});
    std::vector<std::pair<std::string, std::string>> after;
    for (const auto& id : StoreIds(*sn)) {
      std::ifstream in(sn->store().PathFor(id), std::ios::binary);
      after.push_back({id, std::string(std::istreambuf_iterator<char>(in), {})});
    }
    CHECK(after == before);
    CHECK(fs::is_empty(layout::CompactDir(sroot)));
    // The image that failed is not tried again in this run.
    auto again = sn->CompactOnce(&skip);
    REQUIRE(again.ok());
    CHECK(!*again);
  }
  // What a killed compaction leaves in the work dir goes at the next start.
  { std::ofstream(layout::CompactDir(sroot) + "/" + ids[2] + ".cdimg") << "half written"; }
  auto sn = Open(sroot, CompactionPolicy{});
  CHECK(fs::is_empty(layout::CompactDir(sroot)));
  CHECK(StoreIds(*sn).size() == 3);
}

TEST_CASE("compaction: a crash between any two renames leaves a store whose every image reads right") {
  auto root = FreshDir("prefix");
  auto files = root + "/files";
  fs::create_directories(files);
  auto ids = MakeSeries(files, 5);
  CompactionPolicy policy;
  policy.max_depth = 2;
  auto sn = Open(root + "/sn", policy);
  LoadSeries(*sn, files, 5);
  std::map<std::string, int64_t> served;
  for (size_t i = 0; i < ids.size(); ++i) served[ids[i]] = static_cast<int64_t>(i);
  auto scanned = ScanStore(sn->store());
  REQUIRE(scanned.ok());
  auto plan = PlanCompaction(*scanned, served, policy);
  REQUIRE(plan);
  CHECK(plan->top == ids[4]);
  std::string work = root + "/work";
  fs::create_directories(work);
  auto built = BuildCompaction(sn->store(), *plan, work, policy);
  REQUIRE(built.ok());
  REQUIRE(built->size() == 5);
  // Commit only the first k renames, in commit order, into a copy of the store.
  for (size_t k = 0; k <= built->size(); ++k) {
    std::string dir = StrCat(root, "/copy-", k);
    fs::create_directories(dir);
    for (const auto& id : ids) fs::copy_file(sn->store().PathFor(id), StrCat(dir, "/", id, ".cdimg"));
    ImageStore copy(dir);
    for (size_t j = 0; j < k; ++j) {
      std::string f = StrCat(dir, "/new-", j);
      fs::copy_file((*built)[j].second, f);
      REQUIRE(copy.Replace((*built)[j].first, f).ok());
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      INFO("renames done: " << k << ", image v" << i);
      auto c = copy.Resolve(ids[i]);
      REQUIRE(c.ok());
      auto chain = ImageChain::Open(c->paths[0], {c->paths.begin() + 1, c->paths.end()});
      REQUIRE(chain.ok());
      auto bytes = (*chain)->ReadFile(1);
      REQUIRE(bytes.ok());
      CHECK(*bytes == Version(static_cast<int>(i)));
    }
  }
  // Replace refuses a file of another image.
  ImageStore store(sn->store().dir());
  auto wrong = store.Replace(ids[1], (*built)[0].second);
  CHECK(absl::IsInvalidArgument(wrong));
  CHECK_THAT(std::string(wrong.message()), Catch::Contains("not put in the store"));
}
