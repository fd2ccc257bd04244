// d4c/base/memory.h: big blocks start on huge-page boundaries and are whole
// huge pages; small ones are malloc's; every C++ new of ours goes through it.
#include <malloc.h>
#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "d4c/base/memory.h"

namespace {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

bool OnHugeBoundary(const void* p) { return reinterpret_cast<uintptr_t>(p) % kHugePage == 0; }

TEST_CASE("a big block is 2 MiB-aligned, whole huge pages long, and free() releases it", "[base][memory]") {
  for (size_t size : {d4c::kHugeAllocationFrom, size_t{5} << 20, (size_t{28} << 20) + 12345}) {
    void* p = d4c::AllocateMaybeHuge(size);
    REQUIRE(p != nullptr);
    CHECK(OnHugeBoundary(p));
    // Usable up to the next huge-page boundary.
    CHECK(malloc_usable_size(p) >= ((size + kHugePage - 1) & ~(kHugePage - 1)));
    std::memset(p, 0xab, size);
    CHECK(static_cast<unsigned char*>(p)[size - 1] == 0xab);
    std::free(p);
  }
}

TEST_CASE("a small block is malloc's", "[base][memory]") {
  void* p = d4c::AllocateMaybeHuge(100);
  REQUIRE(p != nullptr);
  CHECK(malloc_usable_size(p) < d4c::kHugeAllocationFrom);
  std::free(p);
}

TEST_CASE("a caller's lower threshold places smaller blocks for huge pages", "[base][memory]") {
  void* p = d4c::AllocateMaybeHuge(size_t{3} << 19, size_t{1} << 20);  // 1.5 MiB, as zstd's workspaces
  REQUIRE(p != nullptr);
  CHECK(OnHugeBoundary(p));
  CHECK(malloc_usable_size(p) >= kHugePage);
  std::free(p);
}

TEST_CASE("a block too big to exist is null, not a crash", "[base][memory]") {
  CHECK(d4c::AllocateMaybeHuge(SIZE_MAX - 10) == nullptr);
}

TEST_CASE("C++ allocations of 4 MiB and more go through it", "[base][memory]") {
  std::vector<char> big(size_t{5} << 20);
  std::string text(size_t{4} << 20, 'x');
  auto array = std::make_unique<uint64_t[]>(1 << 19);  // 4 MiB through new[]
  if (!d4c::kOurOperatorNew) {
    SUCCEED("sanitizer build: the sanitizer's operator new is kept");
    return;
  }
  CHECK(OnHugeBoundary(big.data()));
  CHECK(OnHugeBoundary(text.data()));
  CHECK(OnHugeBoundary(array.get()));
  std::vector<char> small(size_t{1} << 20);
  CHECK(malloc_usable_size(small.data()) < d4c::kHugeAllocationFrom);
}

// Pages of [p, p + size) resident (mincore), p page-aligned.
size_t ResidentPages(void* p, size_t size) {
  std::vector<unsigned char> v((size + 4095) / 4096);
  if (mincore(p, size, v.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

TEST_CASE("PrefaultForWrite makes a fresh buffer resident and changes no byte", "[base][memory]") {
  const size_t size = size_t{3} << 20;  // small pages: below kHugeAllocationFrom
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  auto* b = static_cast<unsigned char*>(p);
  b[0] = 1;
  b[size - 1] = 2;
  REQUIRE(ResidentPages(p, size) == 2);
  d4c::PrefaultForWrite(b + 10, size - 20);  // the whole pages inside: all but the first and last
  CHECK(ResidentPages(p, size) == size / 4096);
  CHECK(b[0] == 1);
  CHECK(b[size - 1] == 2);
  CHECK(b[4096] == 0);
  // Below kPrefaultFrom nothing is done.
  void* q = mmap(nullptr, d4c::kPrefaultFrom / 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(q != MAP_FAILED);
  d4c::PrefaultForWrite(q, d4c::kPrefaultFrom / 2);
  CHECK(ResidentPages(q, d4c::kPrefaultFrom / 2) == 0);
  munmap(p, size);
  munmap(q, d4c::kPrefaultFrom / 2);
}

}  // namespace
