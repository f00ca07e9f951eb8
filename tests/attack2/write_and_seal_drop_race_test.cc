// Regression: write_and_seal and the read protocol against drops from another
// thread at arbitrary moments, for small, multi-page and large blocks, fresh,
// resealed and revived (dropped) blocks. Whatever the timing: a block that
// write_and_seal called intact, or that a later copy-out-then-check calls
// intact, holds exactly the bytes last written with write_and_seal.
//
// Contracts: notes on semantics, write_and_seal ("returns intact only if the
// block now holds exactly src"; "on any other outcome the block is left
// dropped") and check(); README "Check after reading".
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr auto kRun = std::chrono::milliseconds(1500);
#else
constexpr auto kRun = std::chrono::milliseconds(2500);
#endif

void fill(std::vector<unsigned char>& v, std::mt19937_64& rng) {
  // Long zero runs, so witnesses are often far into a page, and pages of
  // zeros, which have none.
  std::size_t i = 0;
  while (i < v.size()) {
    std::size_t run = 1 + rng() % 700;
    bool zeros = rng() % 3 == 0;
    for (std::size_t k = 0; k < run && i < v.size(); ++k, ++i) {
      v[i] = zeros ? 0 : static_cast<unsigned char>(1 + rng() % 255);
    }
  }
}

}  // namespace

TEST_CASE("write_and_seal and copy-then-check never certify wrong bytes under concurrent drops") {
  droppable_resource res;
  const std::size_t sizes[] = {40, 4000, 3 * 4096 + 100, 20 * 4096, 300 * 1024};
  struct slot {
    std::atomic<void*> ptr{nullptr};
    std::atomic<std::size_t> bytes{0};
  };
  slot target;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> drops{0};

  std::thread dropper([&] {
    std::mt19937_64 rng(7);
    while (!stop.load(std::memory_order_relaxed)) {
      void* p = target.ptr.load();
      std::size_t n = target.bytes.load();
      if (p != nullptr && n != 0) {
        // One page of the block, or all of it. The block may have been freed
        // meanwhile: drop_for_testing refuses memory that is not the
        // resource's, and zeroing a free block of ours is harmless.
        std::size_t pages = (n + 4095) / 4096;
        std::size_t page = rng() % pages;
        if (rng() % 4 == 0) {
          (void)res.drop_for_testing(p, n);
        } else {
          (void)res.drop_for_testing(static_cast<char*>(p) + page * 4096, 1);
        }
        drops.fetch_add(1, std::memory_order_relaxed);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    }
  });

  std::mt19937_64 rng(11);
  std::uint64_t writes = 0, intact_writes = 0, reads_intact = 0, wrong = 0;
  auto deadline = std::chrono::steady_clock::now() + kRun;
  std::vector<unsigned char> src, copy;
  while (std::chrono::steady_clock::now() < deadline) {
    std::size_t bytes = sizes[rng() % (sizeof sizes / sizeof sizes[0])];
    dropalloc::block_ref b = res.allocate_block(bytes);
    target.bytes.store(bytes);
    target.ptr.store(b.ptr);
    for (int round = 0; round < 4; ++round) {  // fresh, then rewrites of a sealed or dropped block
      std::size_t n = bytes - rng() % (bytes / 4 + 1);
      src.resize(n);
      fill(src, rng);
      block_state w = res.write_and_seal(b.ptr, src.data(), n);
      ++writes;
      copy.resize(n);
      std::memcpy(copy.data(), b.ptr, n);
      block_state c = res.check(b.ptr, b.generation);
      if (w == block_state::intact) ++intact_writes;
      CHECK((w == block_state::intact || w == block_state::dropped));
      if (c == block_state::intact) {
        ++reads_intact;
        if (copy != src) ++wrong;
      }
      // Not intact after write_and_seal said something else.
      if (w != block_state::intact) CHECK(c != block_state::intact);
    }
    target.ptr.store(nullptr);
    res.deallocate(b.ptr, bytes);
  }
  stop.store(true);
  dropper.join();
  MESSAGE(writes << " writes, " << intact_writes << " intact, " << reads_intact << " reads intact, "
                 << drops.load() << " drops");
  CHECK(wrong == 0);
  CHECK(intact_writes > 0);
}
