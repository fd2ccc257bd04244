// A fixed set of worker threads running queued tasks (no futures: callers
// collect results themselves). Destruction waits for queued work.
//
// Thread-safety: internally synchronized. Submit may be called from any
// thread, including a task of the pool itself; the destructor must run on a
// thread that is not one of the pool's (it joins them).
#pragma once

#include <algorithm>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "d4c/base/mutex.h"

namespace d4c::internal {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Run(); });
  }
  ~ThreadPool() {
    {
      MutexLock l(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    for (auto& t : workers_) t.join();
  }
  void Submit(std::function<void()> task) {
    {
      MutexLock l(&mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.Signal();
  }
  size_t size() const { return workers_.size(); }

 private:
  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        MutexLock l(&mu_);
        while (!stop_ && tasks_.empty()) cv_.Wait(&mu_);
        if (tasks_.empty()) return;  // stopping, and the queue is drained
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  Mutex mu_;
  CondVar cv_;  // signalled when a task is queued or stop_ is set
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // set in the constructor, immutable after
};

// Runs f(k) for every k in [0, n) on a pool of up to `threads` threads (0:
// all CPUs) and returns the first error in index order, once all have run.
// f is called from several threads at once and must not throw: a pool
// thread has no caller to catch it (catch bad_alloc inside f).
inline absl::Status ParallelFor(size_t n, int threads, const std::function<absl::Status(size_t)>& f) {
  if (n == 0) return absl::OkStatus();
  std::vector<absl::Status> status(n);
  {
    ThreadPool pool(threads > 0 ? static_cast<int>(std::min<size_t>(n, threads)) : 0);
    for (size_t k = 0; k < n; ++k) pool.Submit([&status, &f, k] { status[k] = f(k); });
  }  // the destructor waits for every task
  for (const absl::Status& s : status)
    if (!s.ok()) return s;
  return absl::OkStatus();
}

}  // namespace d4c::internal
