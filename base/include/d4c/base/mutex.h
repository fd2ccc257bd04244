// Mutex, MutexLock and CondVar for the code that runs in short-lived
// processes (ctr-cli's commands, di3fs): the std:: primitives with abseil's
// names and thread-safety annotations, so that ABSL_GUARDED_BY and
// ABSL_EXCLUSIVE_LOCKS_REQUIRED keep stating (and clang checking) the locking.
//
// Why not absl::Mutex: the first time any thread of a process blocks on one
// (absl's Enqueue reads the thread's priority and dates the next read one
// CycleClock::Frequency() ahead), abseil measures the TSC frequency, unless
// the kernel exports /sys/devices/system/cpu/cpu0/tsc_freq_khz (Google's
// kernels do, Debian's do not), by sleeping 1 ms, 2 ms, ... until two
// measurements agree: 3.3 ms on the reference VM, spent holding that mutex's
// spin lock, so every other thread touching it spins for as long. A
// `cdimg merge --compose` takes ~12 ms (docs/benchmarks.md, "2026-12-06").
// glibc's mutex and condition variable sleep on a futex with no such cost.
//
// The snapshotter keeps absl::Mutex: gRPC's own threads block on absl
// mutexes anyway, and the daemon pays the measurement once in its life.
//
// Thread-safety: Mutex and CondVar are themselves thread-safe; a MutexLock
// belongs to the thread that made it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace d4c {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// Waits may wake spuriously: callers wait in a loop on their condition, and
// whoever changes that condition signals (under the mutex or after it).
class CondVar {
 public:
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lk(mu->mu_, std::adopt_lock);
    cv_.wait(lk);
    lk.release();  // still held: the caller's lock owns it
  }
  // True if `timeout` passed (or the wait woke spuriously at its end).
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lk(mu->mu_, std::adopt_lock);
    std::cv_status s = cv_.wait_for(lk, absl::ToChronoNanoseconds(timeout));
    lk.release();
    return s == std::cv_status::timeout;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace d4c
