// KNOWN BUG (demonstration; fails while the bug exists).
//
// generation(p) marks a block observed with a compare-and-exchange on its
// state byte, so that the free of that life must bump the generation. But
// the free fast path (heap::deallocate_cached) reads the state byte, decides
// "never observed", and then *stores* kFree: a plain read-modify-write. If
// generation() sets kObserved between that load and that store, the free
// erases the bit and does not bump the generation. The handle generation()
// returned then matches the block's next life: check(p, g) answers `intact`
// for another owner's contents instead of `stale`.
//
// Contract relied on: "Asking never crashes: check(), generation() ... answer
// for any pointer at any moment"; generation(p) returns 0 unless p is a live
// block, and "deallocate: the generation advances, so every outstanding (ptr,
// generation) reads `stale` from then on (also after the address is handed
// out again)" (notes on semantics; types.h).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "allocator/dropalloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

// Two-party spin barrier.
struct rendezvous {
  std::atomic<std::uint64_t> arrived{0};
  void wait(std::uint64_t round) {  // round r: both parties call wait(r) once
    arrived.fetch_add(1);
    while (arrived.load() < 2 * round) {
    }
  }
};

}  // namespace

TEST_CASE("generation() racing the free fast path: a handle outlives its block [KNOWN BUG]") {
  droppable_resource res;
  constexpr std::size_t kSize = 64;
  std::atomic<void*> shared{nullptr};
  std::atomic<std::uint64_t> seen{0};
  std::atomic<bool> stop{false};
  rendezvous rv;
  std::atomic<std::uint64_t> hits{0}, tries{0}, handed{0};
  std::uint64_t bad_gen = 0;
  void* bad_ptr = nullptr;
  block_state bad_answer = block_state::foreign;

  std::thread asker([&] {
    for (std::uint64_t round = 1;; round += 2) {
      rv.wait(round);
      if (stop.load()) return;
      void* p = shared.load();
      // Spread the asker's arrival over the owner's free.
      for (std::uint64_t spin = 0, n = round / 2 % 64; spin < n; ++spin) asm volatile("" ::: "memory");
      seen.store(res.generation(p));
      rv.wait(round + 1);
    }
  });

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (std::uint64_t round = 1; std::chrono::steady_clock::now() < deadline; round += 2) {
    void* p = res.allocate(kSize, 16);  // fast path: live, not observed
    std::memset(p, 0x11, kSize);
    shared.store(p);
    rv.wait(round);
    res.deallocate(p, kSize, 16);  // fast path: never observed, no bump
    rv.wait(round + 1);
    ++tries;
    std::uint64_t g = seen.load();
    if (g == 0) continue;  // the asker saw it free: fine
    ++handed;
    // The asker was told (p, g) names a live block, so this free must make
    // (p, g) stale. Hand the address out again, to a new owner who seals it.
    void* q = res.allocate(kSize, 16);
    if (q != p) {
      res.deallocate(q, kSize, 16);
      continue;
    }
    std::memset(q, 0x22, kSize);
    REQUIRE(res.seal(q) == block_state::intact);
    block_state answer = res.check(p, g);
    if (answer == block_state::intact) {
      ++hits;
      bad_gen = g;
      bad_ptr = p;
      bad_answer = answer;
      res.deallocate(q, kSize, 16);
      break;
    }
    res.deallocate(q, kSize, 16);
  }
  stop.store(true);
  // Release the asker from its next rendezvous.
  rv.arrived.fetch_add(1);
  asker.join();
  MESSAGE("rounds " << tries.load() << ", handles handed out during the free " << handed.load()
                    << ", stale handles answered intact " << hits.load());
  if (hits.load() != 0) {
    MESSAGE("handle (" << bad_ptr << ", " << bad_gen << ") from generation() during the free answers "
                       << std::string(dropalloc::to_string(bad_answer))
                       << " for the next owner's contents (0x22 bytes, not 0x11)");
  }
  CHECK(hits.load() == 0);
}
