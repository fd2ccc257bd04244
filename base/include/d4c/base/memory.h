// Big allocations in transparent huge pages: one page fault per 2 MiB
// instead of per 4 KiB (base/src/memory.cc says why and how).
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define D4C_OUR_OPERATOR_NEW 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define D4C_OUR_OPERATOR_NEW 0
#endif
#endif
#ifndef D4C_OUR_OPERATOR_NEW
#define D4C_OUR_OPERATOR_NEW 1
#endif

namespace d4c {

// From this size on a C++ allocation (the global operator new in memory.cc)
// is placed for huge pages. Lower thresholds cost more than they save where
// many blocks of 1-4 MiB come and go: each becomes a whole 2 MiB page that
// glibc's heap keeps once freed (patching debian-python: +60% peak memory at
// 1 MiB, docs/benchmarks.md "2026-12-06").
inline constexpr size_t kHugeAllocationFrom = size_t{4} << 20;

// `size` bytes that free() releases; null when out of memory. From
// `huge_from` on, 2 MiB-aligned, rounded up to whole 2 MiB and advised
// MADV_HUGEPAGE; plain malloc below. Every C++ `new` of ours comes here with
// kHugeAllocationFrom, except in sanitizer builds, whose own operator new
// checks more.
void* AllocateMaybeHuge(size_t size, size_t huge_from = kHugeAllocationFrom);

// Faults in, with one system call, every whole page of [p, p + size) that
// is about to be written from start to end (Linux's MADV_POPULATE_WRITE):
// pages the kernel fills in a loop instead of one page-fault exception each.
// For buffers of `min_size` (default kPrefaultFrom) bytes or more: smaller
// ones are mostly reused heap, unless the caller knows the block is fresh;
// advice only: without kernel support nothing happens.
inline constexpr size_t kPrefaultFrom = size_t{1} << 20;
void PrefaultForWrite(void* p, size_t size, size_t min_size = kPrefaultFrom);

// Whether this build's global operator new is memory.cc's (not in sanitizer
// builds, which keep the sanitizer's: it checks more).
inline constexpr bool kOurOperatorNew = D4C_OUR_OPERATOR_NEW;

}  // namespace d4c
