// SpawningHelpers: every task runs once, never more extra threads at once
// than it was given (nested and concurrent Runs and Borrows share them), and
// with none free the caller runs the tasks.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "d4c/codec.h"

namespace d4c {
namespace {

// Tasks that each stay busy a little, counting how many run at once.
struct Busy {
  std::atomic<int> now{0}, most{0}, ran{0};
  std::function<void()> Task() {
    return [this] {
      int n = ++now;
      for (int m = most.load(); n > m && !most.compare_exchange_weak(m, n);) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      ++ran;
      --now;
    };
  }
};

TEST_CASE("SpawningHelpers: every task once, at most `extra` threads beside the caller", "[helpers]") {
  for (int extra : {0, 1, 3}) {
    SpawningHelpers helpers(extra);
    Busy b;
    std::vector<std::function<void()>> tasks(12, b.Task());
    helpers.Run(tasks);
    INFO("extra " << extra);
    CHECK(b.ran == 12);
    CHECK(b.most <= extra + 1);
    if (extra > 0) {
      // Two tasks that wait for each other (up to 10 s) meet: they really
      // run side by side.
      std::atomic<int> started{0};
      std::atomic<bool> met{true};
      auto wait_other = [&] {
        ++started;
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (started < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
        if (started < 2) met = false;
      };
      helpers.Run({wait_other, wait_other});
      CHECK(met);
    }
    // Everything lent was given back.
    CHECK(helpers.Borrow(100) == extra);
  }
}

TEST_CASE("SpawningHelpers: nested and concurrent Runs share the threads", "[helpers]") {
  SpawningHelpers helpers(2);
  Busy b;
  std::vector<std::function<void()>> inner(6, b.Task());
  std::function<void()> nest = [&] { helpers.Run(inner); };
  std::vector<std::function<void()>> outer(3, nest);
  // Two callers at once, each running three tasks that each run six: at
  // most the two callers and two lent threads busy at any time.
  std::thread other([&] { helpers.Run(outer); });
  helpers.Run(outer);
  other.join();
  CHECK(b.ran == 2 * 3 * 6);
  CHECK(b.most <= 4);
  CHECK(helpers.Borrow(100) == 2);
}

TEST_CASE("SpawningHelpers: with nothing free the caller runs the tasks itself", "[helpers]") {
  SpawningHelpers helpers(1);
  CHECK(helpers.Borrow(5) == 1);
  const auto me = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  std::vector<std::function<void()>> tasks(4, [&] { elsewhere += std::this_thread::get_id() != me; });
  helpers.Run(tasks);
  CHECK(elsewhere == 0);
  helpers.Release(1);
  helpers.Run({});  // no tasks: nothing happens
  CHECK(helpers.Borrow(5) == 1);
}

TEST_CASE("SpawningHelpers: a task's exception reaches the caller after every thread finished", "[helpers]") {
  SpawningHelpers helpers(2);
  std::atomic<int> started{0}, finished{0};
  std::vector<std::function<void()>> tasks;
  for (int k = 0; k < 3; ++k)
    tasks.push_back([&] {
      ++started;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ++finished;
    });
  tasks[1] = [] { throw std::bad_alloc(); };
  CHECK_THROWS_AS(helpers.Run(tasks), std::bad_alloc);
  CHECK(finished == started);       // every task started ran to its end first
  CHECK(helpers.Borrow(100) == 2);  // and the threads were given back
}

}  // namespace
}  // namespace d4c
