// Drops of pages shared by sealed blocks and neighbours that are being freed,
// reallocated, written, sealed and re-sealed at the same time. Whatever the
// interleaving, a copy taken before a check that says `intact` must equal
// what was sealed. Stable blocks always hold the same bytes (a rebuild
// writes them again with write_and_seal); churn blocks (their neighbours)
// are freed, allocated again, written and sealed in a loop; re-sealers seal
// stable blocks again (same bytes: the seal count moves under the checkers);
// a dropper zeroes random pages of stable blocks; a rebuilder replaces a
// dropped stable block by a new one (new generation). Bounded: ~0.4 s a class.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include <mutex>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

unsigned char byte_of(std::size_t i, std::size_t k) { return static_cast<unsigned char>((i * 31 + k * 7) % 251 + 1); }

void run_class(std::size_t size, std::chrono::milliseconds how_long) {
  dropalloc::resource_options o;
  o.thread_cache = false;  // blocks in address order, neighbours interleaved
  o.background_decay = false;
  droppable_resource res(o);
  constexpr std::size_t kBlocks = 48;
  std::vector<block_ref> blocks(kBlocks);
  std::vector<std::vector<unsigned char>> want(kBlocks);
  for (std::size_t i = 0; i < kBlocks; ++i) {
    blocks[i] = res.allocate_block(size, 8);
    want[i].resize(res.usable_size(blocks[i].ptr));
    for (std::size_t k = 0; k < want[i].size(); ++k) want[i][k] = byte_of(i, k);
    REQUIRE(res.write_and_seal(blocks[i].ptr, want[i].data(), want[i].size()) == block_state::intact);
  }
  std::atomic<bool> stop{false};
  // Stable blocks' handles change only when a rebuild replaces the block.
  std::vector<std::mutex> locks(kBlocks);
  auto handle = [&](std::size_t i) {
    std::lock_guard<std::mutex> g(locks[i]);
    return blocks[i];
  };
  std::atomic<std::uint64_t> wrong{0}, intact_reads{0}, dropped_reads{0}, drops{0};
  // Even blocks are stable; odd ones churn. Handles of stable blocks never change.
  std::vector<std::thread> ts;
  ts.emplace_back([&] {  // churn: free, allocate, write, seal the odd blocks
    std::vector<unsigned char> buf(want[1].size() + 4096);
    std::uint64_t round = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (std::size_t i = 1; i < kBlocks; i += 2) {
        res.deallocate(blocks[i].ptr, size);
        block_ref b = res.allocate_block(size, 8);
        std::memset(b.ptr, static_cast<int>(++round % 200 + 1), size);
        res.seal(b.ptr);
        blocks[i] = b;  // only this thread touches odd entries
      }
    }
  });
  ts.emplace_back([&] {  // rebuild stable blocks found dropped; re-seal intact ones
    while (!stop.load(std::memory_order_relaxed)) {
      for (std::size_t i = 0; i < kBlocks; i += 2) {
        block_state s = res.check(handle(i));
        if (s == block_state::dropped) {
          // Rebuilt as a new block (a new generation): a revival in place
          // (write_and_seal on the dropped block) keeps the generation, and a
          // reader's copy spanning the drop and the revival would read
          // intact (see revival_read_bug_test).
          block_ref old = handle(i);
          res.deallocate(old.ptr, size);
          block_ref b = res.allocate_block(size, 8);
          if (res.write_and_seal(b.ptr, want[i].data(), want[i].size()) != block_state::intact) continue;
          std::lock_guard<std::mutex> g(locks[i]);
          blocks[i] = b;
        } else if (s == block_state::intact) {
          // Same bytes: a re-seal under the checkers, which gives the block
          // a new generation (readers holding the old one read stale).
          block_ref h = handle(i);
          if (res.seal(h) == block_state::intact) {
            std::lock_guard<std::mutex> g(locks[i]);
            blocks[i] = h;
          }
        }
      }
    }
  });
  ts.emplace_back([&] {  // the kernel
    std::uint64_t x = 88172645463325252ull;
    while (!stop.load(std::memory_order_relaxed)) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      // A page of a stable block (its neighbours share its first and last page).
      std::size_t i = (x >> 8) % kBlocks & ~std::size_t{1};
      auto* at = static_cast<unsigned char*>(handle(i).ptr) + x % size;
      if (res.drop_for_testing(at, 1) == 0) drops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  for (int r = 0; r < 2; ++r) {
    ts.emplace_back([&, r] {  // readers: copy out, then check
      std::vector<unsigned char> copy(want[0].size() + 4096);
      while (!stop.load(std::memory_order_relaxed)) {
        for (std::size_t i = static_cast<std::size_t>(r) * 2; i < kBlocks; i += 4) {
          const std::size_t n = want[i].size();
          block_ref b = handle(i);
          std::memcpy(copy.data(), b.ptr, n);
          block_state s = res.check(b);
          if (s == block_state::intact) {
            intact_reads.fetch_add(1, std::memory_order_relaxed);
            if (std::memcmp(copy.data(), want[i].data(), n) != 0) wrong.fetch_add(1);
          } else if (s == block_state::dropped) {
            dropped_reads.fetch_add(1, std::memory_order_relaxed);
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(how_long);
  stop = true;
  for (auto& t : ts) t.join();
  MESSAGE("size " << size << ": drops " << drops.load() << ", intact reads " << intact_reads.load()
                  << ", dropped reads " << dropped_reads.load() << ", wrong " << wrong.load());
  CHECK(wrong.load() == 0);
  CHECK(intact_reads.load() > 0);
  CHECK(dropped_reads.load() > 0);
  for (auto& b : blocks) res.deallocate(b.ptr, size);
}

}  // namespace

TEST_CASE("intact copies are what was sealed while neighbours churn and pages drop") {
  for (std::size_t size : {24, 1400, 3000, 4200, 5000, 9000, 20000}) {
    CAPTURE(size);
    run_class(size, std::chrono::milliseconds(400));
  }
}
