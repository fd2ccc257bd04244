// d4c/base/memory.h: big blocks start on huge-page boundaries and are whole
// huge pages; small ones are malloc's; every C++ new of ours goes through it.
#include <malloc.h>

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

}  // namespace
