// Attack on the arena window (allocator/os/linux_os.cc map_in_window):
// threads mapping and unmapping at once through the three OS layers, with
// 1 GiB arenas among them so the cursor wraps around the 64 GiB window many
// times, and long-lived arenas (patterned) that the wrapped cursor runs into.
// Checks: no two live arenas overlap, every arena aligned, every pattern
// intact, nothing outside the allocator replaced (sentinel pages placed in
// the window ahead of the cursor).
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/os/os.h"

namespace {

constexpr std::size_t kAlign = std::size_t{4} << 20;
constexpr std::uintptr_t kLo = std::uintptr_t{2} << 40, kHi = std::uintptr_t{18} << 40;

std::mutex g_lock;
std::map<std::uintptr_t, std::uintptr_t> g_live;  // lo -> hi
std::atomic<long> g_overlaps{0}, g_misaligned{0}, g_corrupt{0}, g_failed{0}, g_in_window{0}, g_total{0};

void add_live(std::uintptr_t lo, std::uintptr_t hi) {
  std::lock_guard<std::mutex> g(g_lock);
  auto it = g_live.upper_bound(lo);
  if (it != g_live.end() && it->first < hi) ++g_overlaps;
  if (it != g_live.begin()) {
    auto prev = std::prev(it);
    if (prev->second > lo) ++g_overlaps;
  }
  g_live[lo] = hi;
}
void del_live(std::uintptr_t lo) {
  std::lock_guard<std::mutex> g(g_lock);
  g_live.erase(lo);
}

dropalloc::os::os_interface& layer(int i) {
  switch (i % 3) {
    case 0: return dropalloc::os::ordinary_os();
    case 1: return dropalloc::os::fallback_os();
    default: return dropalloc::os::system_os();
  }
}

struct arena {
  void* p;
  std::size_t bytes;
  int layer;
  std::uint64_t tag;
};

void stamp(const arena& a) {
  auto* b = static_cast<std::uint64_t*>(a.p);
  b[0] = a.tag;
  *reinterpret_cast<std::uint64_t*>(static_cast<char*>(a.p) + (a.bytes & ~std::size_t{7}) - 8) = ~a.tag;
}
bool stamped(const arena& a) {
  auto* b = static_cast<std::uint64_t*>(a.p);
  return b[0] == a.tag &&
         *reinterpret_cast<std::uint64_t*>(static_cast<char*>(a.p) + (a.bytes & ~std::size_t{7}) - 8) == ~a.tag;
}

arena map_one(int layer_no, std::size_t bytes, std::uint64_t tag) {
  int err = 0;
  void* p = layer(layer_no).map_arena(bytes, kAlign, &err);
  if (p == nullptr) {
    ++g_failed;
    return {nullptr, 0, 0, 0};
  }
  auto lo = reinterpret_cast<std::uintptr_t>(p);
  ++g_total;
  if (lo >= kLo && lo < kHi) ++g_in_window;
  if (lo % kAlign != 0) ++g_misaligned;
  add_live(lo, lo + bytes);
  arena a{p, bytes, layer_no, tag};
  stamp(a);
  return a;
}

void unmap_one(const arena& a) {
  // Droppable memory may be dropped by the kernel under pressure (zeros); the
  // other two layers never are.
  if (!stamped(a) && a.layer % 3 != 2) ++g_corrupt;
  del_live(reinterpret_cast<std::uintptr_t>(a.p));
  layer(a.layer).unmap_arena(a.p, a.bytes);
}

}  // namespace

TEST_CASE("threads churning arenas across many wraps of the window: no overlap, no clobber") {
  // Long-lived arenas first (on the non-droppable layers), then churn.
  std::vector<arena> keep;
  for (int i = 0; i < 48; ++i) keep.push_back(map_one(i % 2, (i % 3 + 1) * (1 << 20), 0xabc000 + i));
  // Sentinel pages of "somebody else" in the window, just past the kept arenas.
  std::vector<void*> sentinels;
  for (const arena& a : keep) {
    auto at = (reinterpret_cast<std::uintptr_t>(a.p) + a.bytes + 2 * kAlign - 1) / kAlign * kAlign + kAlign;
    void* s = mmap(reinterpret_cast<void*>(at), 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (s == reinterpret_cast<void*>(at)) {
      memset(s, 0xa5, 4096);
      sentinels.push_back(s);
    } else if (s != MAP_FAILED) {
      munmap(s, 4096);
    }
  }
  constexpr int kThreads = 4;
  constexpr int kOps = 4000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([t] {
      std::mt19937_64 rng(t * 7919 + 1);
      std::vector<arena> mine;
      for (int i = 0; i < kOps; ++i) {
        std::size_t bytes;
        switch (rng() % 8) {
          case 0: bytes = std::size_t{1} << 30; break;              // 1 GiB: wraps come fast
          case 1: bytes = (rng() % 2048 + 1) * 4096 + 123; break;   // odd size
          case 2: bytes = kAlign; break;
          default: bytes = (rng() % 12 + 1) << 20; break;
        }
        arena a = map_one(static_cast<int>(rng() % 3), bytes, (std::uint64_t{static_cast<unsigned>(t)} << 32) | i);
        if (a.p != nullptr) mine.push_back(a);
        if (mine.size() > 24 || (rng() % 3 == 0 && !mine.empty())) {
          std::size_t k = rng() % mine.size();
          unmap_one(mine[k]);
          mine.erase(mine.begin() + static_cast<long>(k));
        }
      }
      for (const arena& a : mine) unmap_one(a);
    });
  }
  for (auto& th : ts) th.join();
  for (const arena& a : keep) {
    CHECK(stamped(a));
    unmap_one(a);
  }
  int bad_sentinels = 0;
  for (void* s : sentinels) {
    for (int i = 0; i < 4096; ++i) {
      if (static_cast<unsigned char*>(s)[i] != 0xa5) {
        ++bad_sentinels;
        break;
      }
    }
    munmap(s, 4096);
  }
  MESSAGE("arenas " << g_total.load() << ", in window " << g_in_window.load() << ", failed " << g_failed.load()
                    << ", sentinels " << sentinels.size());
  CHECK(g_overlaps.load() == 0);
  CHECK(g_misaligned.load() == 0);
  CHECK(g_corrupt.load() == 0);
  CHECK(g_failed.load() == 0);
  CHECK(bad_sentinels == 0);
}

TEST_CASE("growth in place of the newest window arena past its step: the next arena does not land on it") {
  auto& os = dropalloc::os::ordinary_os();
  int err = 0;
  auto* a = static_cast<unsigned char*>(os.map_arena(kAlign, kAlign, &err));
  REQUIRE(a != nullptr);
  // Grow well past the cursor's next spots (40 MiB).
  int rc = os.extend_arena(a, kAlign, 40 << 20);
  MESSAGE("extend rc " << rc);
  if (rc == 0) memset(a, 0x77, 40 << 20);
  std::vector<std::pair<void*, std::size_t>> more;
  for (int i = 0; i < 20; ++i) {
    void* p = os.map_arena(kAlign, kAlign, &err);
    REQUIRE(p != nullptr);
    auto lo = reinterpret_cast<std::uintptr_t>(p);
    auto alo = reinterpret_cast<std::uintptr_t>(a);
    if (rc == 0) CHECK_FALSE((lo < alo + (40 << 20) && alo < lo + kAlign));
    memset(p, 0x11, kAlign);
    more.emplace_back(p, kAlign);
  }
  if (rc == 0) {
    for (std::size_t i = 0; i < (40u << 20); i += 4096) REQUIRE(a[i] == 0x77);
  }
  for (auto& m : more) os.unmap_arena(m.first, m.second);
  os.unmap_arena(a, rc == 0 ? (40 << 20) : kAlign);
}

TEST_CASE("sizes at and around the window cap, odd sizes, larger alignments") {
  auto& os = dropalloc::os::ordinary_os();
  const std::size_t sizes[] = {std::size_t{8} << 30, (std::size_t{8} << 30) + 1, (std::size_t{8} << 30) - 4096,
                               1, 4095, 4097, (std::size_t{4} << 20) - 1, (std::size_t{4} << 20) + 1,
                               std::size_t{63} << 30};
  const std::size_t aligns[] = {kAlign, kAlign * 2, std::size_t{1} << 30, 4096};
  for (std::size_t al : aligns) {
    std::vector<std::pair<void*, std::size_t>> got;
    for (std::size_t s : sizes) {
      int err = 0;
      void* p = os.map_arena(s, al, &err);
      REQUIRE_MESSAGE(p != nullptr, "size " << s << " align " << al << " errno " << err);
      auto lo = reinterpret_cast<std::uintptr_t>(p);
      CHECK_MESSAGE(lo % (al < kAlign ? al : al) == 0, "size " << s << " align " << al);
      for (auto& g : got) {
        auto glo = reinterpret_cast<std::uintptr_t>(g.first);
        CHECK_FALSE((lo < glo + g.second && glo < lo + s));
      }
      static_cast<volatile char*>(p)[0] = 1;
      static_cast<volatile char*>(p)[s - 1] = 1;
      got.emplace_back(p, s);
    }
    for (auto& g : got) os.unmap_arena(g.first, g.second);
  }
}

TEST_CASE("fork: children map arenas (window state inherited) beside the parent's, parent's stay intact") {
  auto& os = dropalloc::os::ordinary_os();
  std::vector<arena> parent;
  for (int i = 0; i < 8; ++i) parent.push_back(map_one(0, 5 << 20, 0xfeed00 + i));
  for (int round = 0; round < 4; ++round) {
    pid_t pid = fork();
    if (pid == 0) {
      int bad = 0;
      std::vector<std::pair<void*, std::size_t>> got;
      for (int i = 0; i < 300; ++i) {
        int err = 0;
        void* p = os.map_arena((i % 5 + 1) << 20, kAlign, &err);
        if (p == nullptr) { bad |= 1; continue; }
        memset(p, 0x33, 4096);
        got.emplace_back(p, (i % 5 + 1) << 20);
      }
      for (const arena& a : parent) if (!stamped(a)) bad |= 2;
      for (auto& g : got) if (static_cast<unsigned char*>(g.first)[100] != 0x33) bad |= 4;
      _exit(bad);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    // The parent keeps mapping too: same cursor as the child had.
    parent.push_back(map_one(0, 3 << 20, 0xbeef00 + round));
  }
  for (const arena& a : parent) {
    CHECK(stamped(a));
    unmap_one(a);
  }
}
