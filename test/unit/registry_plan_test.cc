// The pull planner: cheapest by bytes from what is local, over full images,
// deltas and merged skip-deltas.
#include <catch2/catch.hpp>

#include "d4c/registry/pull_plan.h"
#include "d4c/base/strcat.h"

using namespace d4c::registry;

namespace {

std::string Id(int n) { return "sha256:" + std::string(63, '0') + static_cast<char>('0' + n); }

Artifact Full(int id, uint64_t size) {
  Artifact a;
  a.image_id = Id(id);
  a.size = size;
  a.manifest_digest = "sha256:" + std::string(63, 'f') + static_cast<char>('0' + id);
  return a;
}

Artifact Delta(int from, int to, uint64_t size) {
  Artifact a = Full(to, size);
  a.parent_id = Id(from);
  a.manifest_digest = "sha256:" + std::string(62, 'd') + static_cast<char>('0' + from) + static_cast<char>('0' + to);
  return a;
}

std::vector<std::string> Ids(const PullPlan& p) {
  std::vector<std::string> v;
  for (const auto& s : p.steps) v.push_back((s.is_delta() ? s.parent_id.substr(70) + ">" : "full>") + s.image_id.substr(70));
  return v;
}

}  // namespace

TEST_CASE("nothing local: the full image, or a full ancestor plus deltas if cheaper") {
  Catalog c{{Full(1, 1000), Delta(1, 2, 10), Delta(2, 3, 10), Full(3, 1005)}};
  auto p = PlanPull(c, {}, Id(3));
  REQUIRE(p.ok());
  CHECK(p->bytes == 1005);
  CHECK(Ids(*p) == std::vector<std::string>{"full>3"});
  c.artifacts[3].size = 5000;
  p = PlanPull(c, {}, Id(3));
  REQUIRE(p.ok());
  CHECK(p->bytes == 1020);
  CHECK(Ids(*p) == std::vector<std::string>{"full>1", "1>2", "2>3"});
  CHECK(p->from.empty());
}

TEST_CASE("a local image starts the chain, a skip-delta wins when it is smaller") {
  Catalog c{{Full(1, 1000), Delta(1, 2, 40), Delta(2, 3, 40), Delta(1, 3, 60), Full(3, 1000)}};
  auto p = PlanPull(c, {Id(1)}, Id(3));
  REQUIRE(p.ok());
  CHECK(Ids(*p) == std::vector<std::string>{"1>3"});
  CHECK(p->bytes == 60);
  CHECK(p->from == Id(1));
  // from v2, only the last delta
  p = PlanPull(c, {Id(1), Id(2)}, Id(3));
  REQUIRE(p.ok());
  CHECK(Ids(*p) == std::vector<std::string>{"2>3"});
  CHECK(p->from == Id(2));
}

TEST_CASE("equal bytes: fewer downloads") {
  Catalog c{{Delta(1, 2, 30), Delta(2, 3, 30), Delta(1, 3, 60)}};
  auto p = PlanPull(c, {Id(1)}, Id(3));
  REQUIRE(p.ok());
  CHECK(Ids(*p) == std::vector<std::string>{"1>3"});
}

TEST_CASE("the wanted image is already here: an empty plan") {
  Catalog c{{Full(1, 1000)}};
  auto p = PlanPull(c, {Id(1)}, Id(1));
  REQUIRE(p.ok());
  CHECK(p->steps.empty());
  CHECK(p->bytes == 0);
}

TEST_CASE("unreachable: a clear error") {
  Catalog c{{Delta(1, 2, 30), Delta(4, 5, 3)}};
  auto p = PlanPull(c, {Id(3)}, Id(2));
  REQUIRE_FALSE(p.ok());
  CHECK(absl::IsNotFound(p.status()));
  CHECK_THAT(d4c::Msg(p.status().message()), Catch::Contains("no full image") && Catch::Contains(Id(2)));
}

TEST_CASE("delta cycles in a catalog do not loop") {
  Catalog c{{Delta(1, 2, 5), Delta(2, 1, 5), Delta(2, 3, 5)}};
  auto p = PlanPull(c, {Id(1)}, Id(3));
  REQUIRE(p.ok());
  CHECK(Ids(*p) == std::vector<std::string>{"1>2", "2>3"});
}
