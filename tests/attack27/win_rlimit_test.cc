// A process whose first arena maps fail under a temporary RLIMIT_AS (a
// program probing how much it can get, or a start-up under a tight limit
// raised later) uses the arena window once the limit is gone: a failed mmap
// is no miss of the window's spot. The window's first version counted it as
// one, and 64 such failures before the first success turned it off for the
// process's life (0/50 arenas in the window afterwards). Own binary: the
// window's state is per process and this must be its first arena.
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "allocator/os/os.h"

namespace {
std::size_t vm_size() {
  std::ifstream s("/proc/self/status");
  for (std::string line; std::getline(s, line);) {
    unsigned long kb;
    if (sscanf(line.c_str(), "VmSize: %lu kB", &kb) == 1) return kb << 10;
  }
  return 0;
}
constexpr std::uintptr_t kLo = std::uintptr_t{2} << 40, kHi = std::uintptr_t{18} << 40;
}  // namespace

TEST_CASE("maps failed under a temporary RLIMIT_AS leave the window in use") {
  auto& os = dropalloc::os::ordinary_os();
  rlimit old{};
  getrlimit(RLIMIT_AS, &old);
  rlimit tight = old;
  tight.rlim_cur = vm_size() + (64 << 20);
  REQUIRE(setrlimit(RLIMIT_AS, &tight) == 0);
  int failed = 0;
  for (int i = 0; i < 70; ++i) {
    int err = 0;
    void* p = os.map_arena(std::size_t{1} << 30, std::size_t{4} << 20, &err);  // 1 GiB: over the limit
    if (p == nullptr) ++failed;
    else os.unmap_arena(p, std::size_t{1} << 30);
  }
  REQUIRE(setrlimit(RLIMIT_AS, &old) == 0);
  MESSAGE("failed under the limit: " << failed);
  int in_window = 0;
  for (int i = 0; i < 50; ++i) {
    int err = 0;
    void* p = os.map_arena(std::size_t{4} << 20, std::size_t{4} << 20, &err);
    REQUIRE(p != nullptr);
    auto lo = reinterpret_cast<std::uintptr_t>(p);
    if (lo >= kLo && lo < kHi) ++in_window;
  }
  MESSAGE("arenas in the window after the limit was lifted: " << in_window << "/50");
  CHECK(in_window > 0);  // expected: the window is used again once the limit is gone
}
