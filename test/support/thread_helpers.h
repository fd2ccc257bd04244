// ThreadHelpers: a d4c::Helpers that runs each task of a Run on a thread of
// its own, all at once (nested Runs too), so that tests of code that splits
// its work over helpers see the tasks really run concurrently. Counts the
// Runs of more than one task. Thread-safe: Run may be called from several
// threads; the counter is atomic.
#pragma once

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "d4c/codec.h"

namespace d4c::testing {

class ThreadHelpers final : public Helpers {
 public:
  void Run(const std::vector<std::function<void()>>& tasks) override {
    runs_ += tasks.size() > 1;
    std::vector<std::thread> threads;
    for (const auto& t : tasks) threads.emplace_back(t);
    for (auto& t : threads) t.join();
  }
  int Borrow(int) override { return 0; }
  void Release(int) override {}
  int parallel_runs() const { return runs_; }

 private:
  std::atomic<int> runs_{0};
};

}  // namespace d4c::testing
