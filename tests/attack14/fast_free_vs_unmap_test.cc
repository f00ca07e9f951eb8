// The free fast path's read section against unmapping. Each round fills
// arenas of a few classes, frees everything on a thread that then exits (its
// cache goes to the transfer caches), and then, at once:
//   * one thread trims the heap (transfer caches to arenas, empty arenas
//     unmapped after a grace period, their metadata with them),
//   * a thread that already has a reader slot (fast section entered) double-
//     and interior-frees every old pointer,
//   * fresh threads whose first call is such a free (no slot yet: the fast
//     section is not entered, the slow path claims one),
//   * a thread whose frees come from inside a read section of its own (a
//     pthread key destructor after the slot was handed back, i.e. no slot).
// No allocation happens meanwhile, so every free must be refused and counted,
// and no reader may touch unmapped metadata (a crash here).
#include <doctest/doctest.h>

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"

using dropalloc::core::alloc_error;
using dropalloc::core::heap;

namespace {

constexpr std::size_t kSizes[] = {16, 48, 64, 112, 1024, 4096};

struct round_state {
  heap* h;
  std::vector<void*> ptrs;
  std::atomic<int> go{0};
  std::atomic<std::uint64_t> frees{0};
};

void bad_frees(round_state* r, std::size_t start, std::size_t step) {
  for (std::size_t i = start; i < r->ptrs.size(); i += step) {
    auto* p = static_cast<unsigned char*>(r->ptrs[i]);
    r->h->deallocate(p);       // double free
    r->h->deallocate(p + 8);   // interior
    r->frees.fetch_add(2, std::memory_order_relaxed);
  }
}

pthread_key_t g_key;
round_state* g_round = nullptr;
void key_dtor(void* arg) {
  // Runs at thread exit, after the allocator's own key (made at load time)
  // has handed the reader slot back.
  auto start = reinterpret_cast<std::uintptr_t>(arg) - 1;
  bad_frees(g_round, start, 7);
}

}  // namespace

TEST_CASE("double and interior frees racing trim's unmapping are all refused") {
  REQUIRE(pthread_key_create(&g_key, key_dtor) == 0);
  heap h;
  alloc_error err;
  std::uint64_t expect = 0;
  for (int round = 0; round < 60; ++round) {
    round_state r;
    r.h = &h;
    g_round = &r;
    for (std::size_t size : kSizes) {
      std::size_t n = (size <= 64 ? 3000 : size <= 1024 ? 400 : 120);
      for (std::size_t i = 0; i < n; ++i) {
        void* p = h.allocate(size, 8, &err);
        REQUIRE(p != nullptr);
        r.ptrs.push_back(p);
      }
    }
    std::thread([&] {
      for (void* p : r.ptrs) h.deallocate(p);
    }).join();
    REQUIRE(h.stats().misuse_refused == expect);
    std::vector<std::thread> ts;
    ts.emplace_back([&] {
      while (r.go.load() == 0) {
      }
      h.trim();
    });
    ts.emplace_back([&] {
      (void)h.owns(r.ptrs[0]);  // claims a slot: later frees enter the fast section
      while (r.go.load() == 0) {
      }
      bad_frees(&r, 0, 7);
    });
    for (std::size_t k = 1; k < 6; ++k) {
      ts.emplace_back([&, k] {
        while (r.go.load() == 0) {
        }
        bad_frees(&r, k, 7);  // this thread's first call: no slot yet
      });
    }
    ts.emplace_back([&] {
      pthread_setspecific(g_key, reinterpret_cast<void*>(std::uintptr_t{6} + 1));
      while (r.go.load() == 0) {
      }
    });
    r.go.store(1);
    h.trim();
    for (auto& t : ts) t.join();
    expect += r.frees.load();
    REQUIRE(r.frees.load() == 2 * r.ptrs.size());
    REQUIRE(h.stats().misuse_refused == expect);
    h.trim();
    REQUIRE(h.stats().blocks_live == 0);
  }
  pthread_key_delete(g_key);
}
