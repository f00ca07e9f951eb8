// While a write_and_seal is parked in its read of the caller's source (a
// userfaultfd page, or a PROT_NONE page whose fault handler waits), the
// queries keep answering at once from another thread, as "asking never
// hangs" requires: check (the block being written reads `unsealed`, its
// neighbours `intact`), generation, usable_size, owns, stats, print_stats
// (per resource and for the process), seals and write_and_seals of blocks on
// other seal stripes, small allocations and frees of the same and of another
// resource. And once the page is served the write finishes `intact` with the
// served bytes and the zeros after them.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack7/parked_source.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("queries answer while a write_and_seal waits for its source page") {
  droppable_resource res;
  droppable_resource other;
  constexpr std::size_t kN = 3000;
  block_ref b = res.allocate_block(4000);
  std::vector<unsigned char> first(4000, 0x11);
  REQUIRE(res.write_and_seal(b, first.data(), 4000) == block_state::intact);
  // Neighbours, some on other stripes than b.
  std::vector<block_ref> sealed;
  for (int i = 0; i < 64; ++i) {
    block_ref r = res.allocate_block(4000);
    REQUIRE(res.write_and_seal(r, first.data(), 4000) == block_state::intact);
    sealed.push_back(r);
  }
  const std::uint64_t old_gen = b.generation;

  attack7::parked_source src(0x5a);
  REQUIRE(src.ok());
  block_state result = block_state::foreign;
  std::atomic<bool> written{false};
  std::thread writer([&] {
    result = res.write_and_seal(b, src.data(), kN);
    written.store(true);
  });
  REQUIRE(src.wait_parked(3000));
  MESSAGE("source parked by " << std::string(src.mechanism()));

  std::atomic<bool> asked{false};
  std::thread asker([&] {
    // The caller's bytes are read into a private copy before the block is
    // touched: while that read waits, the block still holds its last sealed
    // version, untouched, and reads intact (never `intact` over new bytes).
    CHECK(res.check(b) == block_state::intact);
    CHECK(res.check(b.ptr, old_gen) == block_state::intact);
    CHECK(res.generation(b.ptr) == old_gen);
    CHECK(res.usable_size(b.ptr) >= 4000);
    CHECK(res.owns(b.ptr));
    CHECK_FALSE(res.owns(static_cast<char*>(b.ptr) + 8));
    for (auto& r : sealed) CHECK(res.check(r) == block_state::intact);
    CHECK(res.stats().blocks_live >= 65);
    std::ostringstream one, all;
    res.print_stats(one, true);
    dropalloc::print_stats(all, true);
    CHECK(one.str().find("statistics") != std::string::npos);
    CHECK(all.str().find("statistics") != std::string::npos);
    std::vector<unsigned char> again(4000, 0x22);
    for (auto& r : sealed) {
      if (attack7::seal_stripe(r.ptr) == attack7::seal_stripe(b.ptr)) continue;
      CHECK(res.write_and_seal(r, again.data(), 4000) == block_state::intact);
      CHECK(res.seal(r) == block_state::intact);
    }
    for (int i = 0; i < 1000; ++i) {
      void* q = res.allocate(48);
      void* o = other.allocate(48);
      std::memset(q, 1, 48);
      res.deallocate(q, 48);
      other.deallocate(o, 48);
    }
    asked.store(true);
  });
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!asked.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const bool answered = asked.load();
  CHECK_FALSE(written.load());  // still parked: nothing above waited for it
  src.serve();
  asker.join();
  writer.join();
  CHECK_MESSAGE(answered, "a query waited for the parked write_and_seal");
  CHECK(result == block_state::intact);
  CHECK(b.generation != old_gen);
  CHECK(res.check(b.ptr, old_gen) == block_state::stale);
  CHECK(std::memcmp(b.ptr, src.content(), kN) == 0);
  const auto* tail = static_cast<const unsigned char*>(b.ptr) + kN;
  bool zeros = true;
  for (std::size_t i = 0; i < res.usable_size(b.ptr) - kN; ++i) zeros = zeros && tail[i] == 0;
  CHECK(zeros);
  for (auto& r : sealed) res.deallocate(r);
  res.deallocate(b);
}
