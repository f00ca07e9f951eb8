// The OS layer's aligned arena mappings (allocator/os/linux_os.cc): every
// arena starts on its alignment, takes only address space that was free, and
// never replaces a mapping someone else put where the next arena would go,
// whether the first try in the layer's window lands or misses. Runs in every
// sanitizer stage too, where the window is the sanitizer's own and the layer
// stops trying it (os_window_taken_test does that without a sanitizer).
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "allocator/os/os.h"

namespace {

constexpr std::size_t kAlign = std::size_t{4} << 20;

using range = std::pair<std::uintptr_t, std::uintptr_t>;  // [first, second)

std::vector<range> mappings() {
  std::vector<range> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) out.emplace_back(lo, hi);
  }
  return out;
}

bool overlaps_any(const std::vector<range>& before, std::uintptr_t lo, std::uintptr_t hi) {
  for (const range& r : before) {
    if (lo < r.second && r.first < hi) return true;
  }
  return false;
}

// A page of ours with a known pattern, at `at` exactly (or nowhere).
void* place_sentinel(std::uintptr_t at) {
  void* p = mmap(reinterpret_cast<void*>(at), 4096, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (p != reinterpret_cast<void*>(at)) {
    munmap(p, 4096);
    return nullptr;
  }
  memset(p, 0xa5, 4096);
  return p;
}

bool sentinel_intact(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < 4096; ++i) {
    if (b[i] != 0xa5) return false;
  }
  return true;
}

struct arena {
  void* p;
  std::size_t bytes;
};

// Maps one arena with `os` and checks it: aligned, in address space that was
// free just before, writable.
arena map_checked(dropalloc::os::os_interface& os, std::size_t bytes, std::size_t align = kAlign) {
  const std::vector<range> before = mappings();
  int err = 0;
  void* p = os.map_arena(bytes, align, &err);
  REQUIRE_MESSAGE(p != nullptr, "errno " << err);
  const auto lo = reinterpret_cast<std::uintptr_t>(p);
  CHECK(lo % align == 0);
  CHECK_FALSE(overlaps_any(before, lo, lo + bytes));
  static_cast<volatile char*>(p)[0] = 1;
  static_cast<volatile char*>(p)[bytes - 1] = 2;
  return {p, bytes};
}

void run_on(dropalloc::os::os_interface& os) {
  std::vector<arena> arenas;
  std::vector<void*> sentinels;
  const std::size_t sizes[] = {64 << 10, 4096, 1 << 20, kAlign, kAlign + 4096, 9 << 20, 300 << 10};
  // Most rounds put pages of ours where the next arena would most likely go
  // (the window's next spots after the last arena).
  for (int round = 0; round < 100; ++round) {
    const std::size_t bytes = sizes[round % 7];
    arena a = map_checked(os, bytes);
    arenas.push_back(a);
    if (round % 3 != 2) {
      // The layer leaves a quarter of each mapping's size free after it.
      const std::uintptr_t next =
          reinterpret_cast<std::uintptr_t>(a.p) + (a.bytes + a.bytes / 4 + kAlign - 1) / kAlign * kAlign;
      for (std::uintptr_t at : {next, next + kAlign, next + 2 * kAlign}) {
        if (void* s = place_sentinel(at)) sentinels.push_back(s);
      }
    }
    if (round % 5 == 4) {  // free some, so spots open again
      os.unmap_arena(arenas.front().p, arenas.front().bytes);
      arenas.erase(arenas.begin());
    }
  }
  // A larger alignment than the arenas' usual one.
  arena big = map_checked(os, 1 << 20, kAlign * 4);
  arenas.push_back(big);
  for (void* s : sentinels) CHECK(sentinel_intact(s));
  for (const arena& a : arenas) os.unmap_arena(a.p, a.bytes);
  for (void* s : sentinels) munmap(s, 4096);
}

}  // namespace

TEST_CASE("arenas mapped from two threads at once never overlap") {
  dropalloc::os::os_interface& os = dropalloc::os::ordinary_os();
  std::vector<arena> mine, theirs;
  auto work = [&os](std::vector<arena>* out) {
    for (int i = 0; i < 200; ++i) {
      int err = 0;
      const std::size_t bytes = (i % 4 + 1) * (256 << 10);
      void* p = os.map_arena(bytes, kAlign, &err);
      if (p == nullptr) continue;
      out->push_back({p, bytes});
      memset(p, 0x5a, 4096);
    }
  };
  std::thread other(work, &theirs);
  work(&mine);
  other.join();
  REQUIRE(mine.size() + theirs.size() == 400);
  for (const arena& a : mine) {
    const auto lo = reinterpret_cast<std::uintptr_t>(a.p);
    CHECK(lo % kAlign == 0);
    for (const arena& b : theirs) {
      const auto blo = reinterpret_cast<std::uintptr_t>(b.p);
      CHECK_FALSE((lo < blo + b.bytes && blo < lo + a.bytes));
    }
  }
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Without a sanitizer owning the far addresses, most arenas go right after
  // the one before (one mmap each): the first try of the layer works.
  std::size_t next_to_last = 0;
  for (std::size_t i = 1; i < mine.size(); ++i) {
    const auto end = reinterpret_cast<std::uintptr_t>(mine[i - 1].p) + mine[i - 1].bytes;
    const auto lo = reinterpret_cast<std::uintptr_t>(mine[i].p);
    if (lo > end && lo - end < 2 * kAlign) ++next_to_last;
  }
  CHECK(next_to_last > mine.size() / 2);
#endif
  for (const arena& a : mine) os.unmap_arena(a.p, a.bytes);
  for (const arena& a : theirs) os.unmap_arena(a.p, a.bytes);
}

TEST_CASE("arenas of the droppable OS layer (or its fallback) are aligned, in free space, and replace nothing") {
  run_on(dropalloc::os::system_os());
}

TEST_CASE("arenas of the ordinary OS layer likewise") {
  run_on(dropalloc::os::ordinary_os());
}
