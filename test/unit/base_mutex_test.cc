// d4c/base/mutex.h: mutual exclusion, waits that wake on a signal, timeouts.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "d4c/base/mutex.h"

namespace {

TEST_CASE("MutexLock excludes other threads from the guarded counter", "[base][mutex]") {
  d4c::Mutex mu;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        d4c::MutexLock l(&mu);
        ++counter;
      }
    });
  for (auto& t : threads) t.join();
  d4c::MutexLock l(&mu);
  REQUIRE(counter == 80000);
}

TEST_CASE("a CondVar waiter sees the state its signaller set", "[base][mutex]") {
  d4c::Mutex mu;
  d4c::CondVar cv;
  int stage = 0;  // 0: nothing, 1: the waiter is ready, 2: the value is set
  int value = 0;
  std::thread waiter([&] {
    d4c::MutexLock l(&mu);
    stage = 1;
    cv.SignalAll();
    while (stage != 2) cv.Wait(&mu);
    value += 1;  // runs only once the signaller's value is visible
  });
  {
    d4c::MutexLock l(&mu);
    while (stage != 1) cv.Wait(&mu);
    value = 41;
    stage = 2;
  }
  cv.SignalAll();
  waiter.join();
  d4c::MutexLock l(&mu);
  REQUIRE(value == 42);
}

TEST_CASE("WaitWithTimeout reports a timeout when nobody signals, and not before it", "[base][mutex]") {
  d4c::Mutex mu;
  d4c::CondVar cv;
  d4c::MutexLock l(&mu);
  auto start = std::chrono::steady_clock::now();
  bool timed_out = false;
  // Spurious wake-ups return false early: wait until the deadline passes.
  while (!timed_out && std::chrono::steady_clock::now() - start < std::chrono::milliseconds(20))
    timed_out = cv.WaitWithTimeout(&mu, absl::Milliseconds(20));
  REQUIRE(timed_out);
  REQUIRE(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(20));
}

TEST_CASE("WaitWithTimeout returns early, without a timeout, when signalled", "[base][mutex]") {
  d4c::Mutex mu;
  d4c::CondVar cv;
  bool ready = false;
  std::thread signaller([&] {
    d4c::MutexLock l(&mu);
    ready = true;
    cv.Signal();
  });
  bool timed_out = false;
  {
    d4c::MutexLock l(&mu);
    while (!ready && !timed_out) timed_out = cv.WaitWithTimeout(&mu, absl::Seconds(60));
    REQUIRE(ready);
  }
  signaller.join();
  REQUIRE_FALSE(timed_out);
}

}  // namespace
