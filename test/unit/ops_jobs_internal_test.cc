// RunJobs: every job runs once, idle workers help running jobs (Helpers),
// and never more threads are busy than asked for.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "d4c/base/strcat.h"
#include "oci_fixture.h"
#include "delta_internal.h"

using namespace d4c;
using namespace d4c::delta_internal;

namespace {

// Counts threads inside tasks and jobs at once.
struct Busy {
  std::atomic<int> now{0}, peak{0};
  void Enter() {
    int n = ++now;
    for (int p = peak; n > p && !peak.compare_exchange_weak(p, n);) {
    }
  }
  void Leave() { --now; }
  void Work() {
    Enter();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    Leave();
  }
};

}  // namespace

TEST_CASE("jobs get help from idle workers, within the thread count", "[delta]") {
  oci_test::ScratchDir tmp;
  auto spool = Spool::Create(tmp.path() + "/out");
  REQUIRE(spool.ok());
  int threads = GENERATE(1, 2, 3);
  INFO(threads << " threads");
  Busy busy;
  std::atomic<int> tasks_run{0}, borrowed_max{0};
  std::vector<BlobJob> jobs;
  for (size_t i = 0; i < 6; ++i) {
    jobs.push_back({i, 100 + i, 1, [&, i](Helpers& h) -> absl::StatusOr<BlobResult> {
                      busy.Enter();
                      std::vector<std::function<void()>> tasks;
                      for (int t = 0; t < 10; ++t) tasks.push_back([&] { busy.Work(); ++tasks_run; });
                      busy.Leave();  // the caller takes tasks itself, counted there
                      h.Run(tasks);
                      int n = h.Borrow(8);
                      for (int p = borrowed_max; n > p && !borrowed_max.compare_exchange_weak(p, n);) {
                      }
                      for (int k = 0; k < n; ++k) busy.Enter();  // what a library would start
                      busy.Work();
                      for (int k = 0; k < n; ++k) busy.Leave();
                      h.Release(n);
                      BlobResult r;
                      r.recipe.kind = Recipe::Kind::kFull;
                      r.blob = StrCat("blob", i);
                      return r;
                    }});
  }
  auto out = RunJobs(std::move(jobs), **spool, {threads, 1ull << 30, nullptr});
  REQUIRE(out.ok());
  REQUIRE(out->size() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(*(*spool)->Get(out->at(i).recipe.blob) == StrCat("blob", i));
  CHECK(tasks_run == 60);
  CHECK(busy.peak <= threads);
  CHECK(borrowed_max <= threads - 1);
  if (threads > 1) CHECK(busy.peak >= 2);  // helpers did run
}

// A job or a task lent to a pool thread that throws (std::bad_alloc, where a
// library allocates without a Status) is that job's error, naming its file;
// the process and the other jobs go on as for any failed job.
TEST_CASE("a job whose task throws fails with an error naming its file", "[delta]") {
  oci_test::ScratchDir tmp;
  auto spool = Spool::Create(tmp.path() + "/out");
  REQUIRE(spool.ok());
  int threads = GENERATE(1, 2);
  bool in_task = GENERATE(false, true);
  INFO(threads << " threads, thrown " << (in_task ? "by a lent task" : "by the job"));
  std::vector<Entry> entries(3);
  for (size_t i = 0; i < entries.size(); ++i) entries[i].path = StrCat("usr/lib/file", i);
  std::vector<BlobJob> jobs;
  for (size_t i = 0; i < entries.size(); ++i) {
    jobs.push_back({i, 100 - i, 1, [&, i](Helpers& h) -> absl::StatusOr<BlobResult> {
                      std::vector<std::function<void()>> tasks(4, [] {
                        std::this_thread::sleep_for(std::chrono::milliseconds(2));
                      });
                      if (i == 1 && in_task) tasks[2] = [] { throw std::bad_alloc(); };
                      if (i == 1 && !in_task) throw std::bad_alloc();
                      h.Run(tasks);
                      BlobResult r;
                      r.recipe.kind = Recipe::Kind::kFull;
                      r.blob = "blob";
                      return r;
                    }});
  }
  auto out = RunJobs(std::move(jobs), **spool, {threads, 1ull << 30, nullptr, &entries});
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(out.status().message()),
             Catch::Contains("/usr/lib/file1: out of memory") && Catch::Contains("--threadNum"));
}
