// Why: on the reference VM (a PVM guest, docs/benchmarks.md "2026-12-06") a
// page fault costs ~25 us, and a fresh buffer costs one per 4 KiB page
// touched: patching biome's 28.6 MB binary took ~18,000 faults (the
// decompressed base, the stored blob read whole, the x86 form's operand and
// triple vectors, the rebuilt file). A transparent huge page is one fault
// per 2 MiB, but only for a whole 2 MiB-aligned range inside one mapping:
// malloc's big chunks start 16 bytes into their mapping, so advising their
// aligned part (what AllocateBuffer did) still left up to 511 small faults in
// front of it (529 of a 28 MB buffer's faults here). Here big blocks are
// aligned_alloc'ed at 2 MiB, rounded up to whole huge pages and advised;
// free() releases them. Debian's THP mode is "madvise", so nothing else
// changes. The price is memory: a block's last huge page is whole, and once
// glibc serves big blocks from its heap (after the first big free) freed
// huge pages stay resident there; hence 4 MiB for operator new
// (kHugeAllocationFrom): biome's patch 18,000 -> ~10,000 faults, peak memory
// unchanged, debian-python's +15%.
//
// The global operator new below sends every C++ allocation through it; the
// archive member is linked into every binary that links d4c_base, because
// operator new is still undefined when the linker reaches the archive. The
// other forms (new[], nothrow) call this one in libstdc++; operator delete
// is libstdc++'s, which calls free().
#include "d4c/base/memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace d4c {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

void* AllocateMaybeHuge(size_t size, size_t huge_from) {
  if (size < huge_from) return std::malloc(size);
  if (size > SIZE_MAX - kHugePage) return nullptr;
  const size_t whole = (size + kHugePage - 1) & ~(kHugePage - 1);
  void* p = std::aligned_alloc(kHugePage, whole);
#ifdef MADV_HUGEPAGE
  if (p != nullptr) madvise(p, whole, MADV_HUGEPAGE);  // advice only: errors ignored
#endif
  return p;
}

void PrefaultForWrite(void* p, size_t size, size_t min_size) {
  if (size < min_size) return;
  constexpr uintptr_t kPage = 4096;
  uintptr_t from = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
  uintptr_t to = (reinterpret_cast<uintptr_t>(p) + size) & ~(kPage - 1);
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; older kernels say EINVAL
#endif
  if (to > from) madvise(reinterpret_cast<void*>(from), to - from, MADV_POPULATE_WRITE);  // advice: errors ignored
}

}  // namespace d4c

#if D4C_OUR_OPERATOR_NEW
void* operator new(std::size_t size) {
  for (;;) {
    if (void* p = d4c::AllocateMaybeHuge(size != 0 ? size : 1)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}
#endif
