// Regression (passes): in the private fallback, a neighbour's seal() racing
// with a block's free, reallocation and write never makes the new life's
// written, unsealed bytes reclaimable. Thread A re-seals the middle block of
// three (class 3072: it shares page 0 with b0 and page 1 with b2) over and
// over; thread B frees b0/b2 (sealed), allocates them again, writes a fresh
// pattern, has the kernel reclaim (MADV_PAGEOUT) every lazily-freed page of
// the three, and checks the unsealed new life kept every byte; then seals it,
// so that A's next seal may advise the shared page. The seal locks A holds
// across its advice keep B's free (and so its next write) after the advice.
#include <doctest/doctest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "allocator/dropalloc.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("fallback: neighbour free/reallocate/write racing a seal's advice keeps unsealed data") {
  dropalloc::resource_options o;
  o.force_fallback = true;
  o.thread_cache = false;
  o.background_decay = false;
  droppable_resource res(o);
  REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);
  constexpr std::size_t n = 3000;
  block_ref b0 = res.allocate_block(n, 8), b1 = res.allocate_block(n, 8), b2 = res.allocate_block(n, 8);
  auto base = reinterpret_cast<std::uintptr_t>(b0.ptr) & ~std::uintptr_t{4095};
  REQUIRE(reinterpret_cast<std::uintptr_t>(b2.ptr) + n <= base + 3 * 4096);
  std::memset(b0.ptr, 1, n);
  std::memset(b2.ptr, 2, n);
  REQUIRE(res.seal(b0) == block_state::intact);
  REQUIRE(res.seal(b2) == block_state::intact);
  std::memset(b1.ptr, 3, n);
  std::atomic<bool> stop{false};
  std::thread a([&] {
    while (!stop.load()) {
      if (res.seal(b1) != block_state::intact) res.write_and_seal(b1, std::string(n, '\3').data(), n);
    }
  });
  int rounds = 0, lost = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < until) {
    block_ref* mine[2] = {&b0, &b2};
    for (int k = 0; k < 2; ++k) {
      block_ref& y = *mine[k];
      void* was = y.ptr;
      res.deallocate(y);
      y = res.allocate_block(n, 8);
      REQUIRE(y.ptr == was);  // lowest free block: the same place
      const auto v = static_cast<unsigned char>(0x10 + rounds % 200 + k);
      std::memset(y.ptr, v, n);
      madvise(reinterpret_cast<void*>(base), 3 * 4096, MADV_PAGEOUT);
      auto* p = static_cast<const unsigned char*>(y.ptr);
      for (std::size_t i = 0; i < n; ++i) {
        if (p[i] != v) {
          ++lost;
          break;
        }
      }
      res.seal(y);
    }
    ++rounds;
  }
  stop = true;
  a.join();
  MESSAGE(rounds << " rounds");
  CHECK(lost == 0);
  res.deallocate(b0);
  res.deallocate(b1);
  res.deallocate(b2);
}
