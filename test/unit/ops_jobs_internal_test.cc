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
  RunOptions o;
  o.threads = threads;
  auto out = RunJobs(std::move(jobs), **spool, o);
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
  RunOptions o;
  o.threads = threads;
  o.entries = &entries;
  auto out = RunJobs(std::move(jobs), **spool, o);
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(out.status().message()),
             Catch::Contains("/usr/lib/file1: out of memory") && Catch::Contains("--threadNum"));
}

namespace {

BlobResult FullBlob(std::string bytes) {
  BlobResult r;
  r.recipe.kind = Recipe::Kind::kFull;
  r.blob = std::move(bytes);
  return r;
}

}  // namespace

// patch's writer follows entry order: the jobs under entry_order_below run
// after the bigger ones (largest first), in entry order.
TEST_CASE("small jobs run in entry order after the big ones", "[delta]") {
  oci_test::ScratchDir tmp;
  auto spool = Spool::Create(tmp.path() + "/out");
  REQUIRE(spool.ok());
  const std::vector<uint64_t> sizes = {10, 5000, 30, 20, 9000, 40, 7000};
  Mutex mu;
  std::vector<size_t> started;
  std::vector<BlobJob> jobs;
  for (size_t i = 0; i < sizes.size(); ++i)
    jobs.push_back({i, sizes[i], 1, [&, i](Helpers&) -> absl::StatusOr<BlobResult> {
                      MutexLock l(&mu);
                      started.push_back(i);
                      return FullBlob(StrCat("blob", i));
                    }});
  RunOptions o;
  o.threads = 1;
  o.entry_order_below = 1000;
  auto out = RunJobs(std::move(jobs), **spool, o);
  REQUIRE(out.ok());
  CHECK(started == std::vector<size_t>{4, 6, 1, 0, 2, 3, 5});
  for (size_t i = 0; i < sizes.size(); ++i) CHECK(*(*spool)->Get(out->at(i).recipe.blob) == StrCat("blob", i));

  SECTION("without it every job runs largest first") {
    started.clear();
    std::vector<BlobJob> again;
    for (size_t i = 0; i < sizes.size(); ++i)
      again.push_back({i, sizes[i], 1, [&, i](Helpers&) -> absl::StatusOr<BlobResult> {
                         MutexLock l(&mu);
                         started.push_back(i);
                         return FullBlob("x");
                       }});
    RunOptions plain;
    plain.threads = 1;
    REQUIRE(RunJobs(std::move(again), **spool, plain).ok());
    CHECK(started == std::vector<size_t>{4, 6, 1, 5, 2, 3, 0});
  }
}

// A writer that failed (patch) stops the jobs: none starts after `cancelled`
// says so, the running ones finish, and RunJobs reports the cancellation
// unless a job failed.
TEST_CASE("a cancelled run starts no more jobs", "[delta]") {
  oci_test::ScratchDir tmp;
  auto spool = Spool::Create(tmp.path() + "/out");
  REQUIRE(spool.ok());
  int threads = GENERATE(1, 2);
  bool job_fails = GENERATE(false, true);
  INFO(threads << " threads" << (job_fails ? ", the first job fails" : ""));
  std::atomic<int> ran{0};
  std::atomic<bool> stop{false};
  std::vector<BlobJob> jobs;
  for (size_t i = 0; i < 20; ++i)
    jobs.push_back({i, 100 - i, 1, [&, i](Helpers&) -> absl::StatusOr<BlobResult> {
                      ++ran;
                      stop = true;
                      std::this_thread::sleep_for(std::chrono::milliseconds(5));
                      if (job_fails && i == 0) return absl::DataLossError("entry 0 is corrupt");
                      return FullBlob("x");
                    }});
  RunOptions o;
  o.threads = threads;
  o.cancelled = [&] { return stop.load(); };
  auto out = RunJobs(std::move(jobs), **spool, o);
  REQUIRE_FALSE(out.ok());
  if (job_fails) CHECK(out.status().code() == absl::StatusCode::kDataLoss);
  else CHECK(out.status().code() == absl::StatusCode::kCancelled);
  CHECK(ran <= threads);
}
