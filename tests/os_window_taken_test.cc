// The OS layer's arena window (allocator/os/linux_os.cc) when something else
// holds all of the address space the window can be chosen from, before the
// first arena: every try there misses, the arenas come from the kernel's own
// placement instead (aligned, in free space), the holder's mapping stays
// whole, and after its misses the layer stops trying (seen with strace: 16
// mmap calls with an address in the range, then none). Its own process: the
// window's state is per process and chosen at the first arena.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "allocator/os/os.h"

namespace {

constexpr std::uintptr_t kFrom = std::uintptr_t{2} << 40;  // where the window may be: [2 TiB, 18 TiB)
constexpr std::size_t kBytes = std::size_t{16} << 40;
constexpr std::size_t kAlign = std::size_t{4} << 20;

// Whether /proc/self/maps has one mapping exactly [lo, hi).
bool mapped_whole(std::uintptr_t lo, std::uintptr_t hi) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    unsigned long a = 0, b = 0;
    if (sscanf(line.c_str(), "%lx-%lx", &a, &b) == 2 && a == lo && b == hi) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("with the window's whole range taken, arenas still come aligned and take nothing of it") {
  // A sanitizer may own part of the range already (its shadow): then that is
  // the holder, and the reservation below is not needed.
  void* held = mmap(reinterpret_cast<void*>(kFrom), kBytes, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  const bool ours = held == reinterpret_cast<void*>(kFrom);
  if (held != MAP_FAILED && !ours) {
    munmap(held, kBytes);
    held = MAP_FAILED;
  }
  MESSAGE(std::string(ours ? "range reserved by the test" : "range not free: held by someone else already"));

  dropalloc::os::os_interface& os = dropalloc::os::ordinary_os();
  void* arenas[100];
  for (int i = 0; i < 100; ++i) {
    int err = 0;
    const std::size_t bytes = (i % 3 + 1) * (1 << 20);
    arenas[i] = os.map_arena(bytes, kAlign, &err);
    REQUIRE_MESSAGE(arenas[i] != nullptr, "errno " << err);
    const auto lo = reinterpret_cast<std::uintptr_t>(arenas[i]);
    CHECK(lo % kAlign == 0);
    if (ours) CHECK_FALSE((lo < kFrom + kBytes && kFrom < lo + bytes));
    static_cast<volatile char*>(arenas[i])[bytes - 1] = 1;
  }
  if (ours) CHECK(mapped_whole(kFrom, kFrom + kBytes));
  for (int i = 0; i < 100; ++i) os.unmap_arena(arenas[i], (i % 3 + 1) * (1 << 20));
  if (ours) munmap(held, kBytes);
}
