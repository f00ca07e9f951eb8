// KNOWN BUG (demonstration; fails while the bug exists).
//
// Double frees are refused when they come one after the other. Two frees of
// one small block racing on two threads are both accepted: the checked path
// (heap::deallocate_checked, then retire()) tests "not free" and later stores
// kFree, with no atomic transition between, and the fast path does the same
// with a load and a store. Both threads then cache the block and hand it out
// again: two owners get the same block with the same generation, and each
// one's check() answers `intact` for whatever the other sealed last.
//
// Contract relied on: "no crash or hang on any input (... double frees ...)"
// and heap.h: "double, foreign and interior frees are refused and reported".
// The caller's double free is a bug; the point is that the library's refusal
// does not hold under concurrency, and a third party pays for it with a
// false `intact`.
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

struct rendezvous {
  std::atomic<std::uint64_t> arrived{0};
  void wait(std::uint64_t round) {
    arrived.fetch_add(1);
    while (arrived.load() < 2 * round) {
    }
  }
};

}  // namespace

TEST_CASE("two racing frees of one block: both accepted, block handed out twice [KNOWN BUG]") {
  droppable_resource res;
  constexpr std::size_t kSize = 64;
  std::atomic<void*> shared{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<void*> other_got{nullptr};
  std::atomic<std::uint64_t> other_gen{0};
  rendezvous rv;
  std::uint64_t rounds = 0, twice = 0;
  block_state mine_answer = block_state::foreign;
  unsigned char mine_first = 0;

  std::thread other([&] {
    for (std::uint64_t round = 1;; round += 4) {
      rv.wait(round);
      if (stop.load()) return;
      void* p = shared.load();
      res.deallocate(p, kSize, 16);  // the racing second free
      rv.wait(round + 1);
      // Whatever this thread's cache hands out next.
      auto b = res.allocate_block(kSize, 16);
      other_got.store(b.ptr);
      other_gen.store(b.generation);
      rv.wait(round + 2);  // the first owner has written and sealed its block
      if (b.ptr == p) {
        std::string src(kSize, '\xBB');
        res.write_and_seal(b.ptr, src.data(), kSize);
      }
      rv.wait(round + 3);
      // Blocks are leaked on purpose: a doubly handed-out block has no
      // single owner that could free it.
    }
  });

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (std::uint64_t round = 1; std::chrono::steady_clock::now() < deadline; round += 4) {
    ++rounds;
    auto b = res.allocate_block(kSize, 16);  // observed: both frees take the checked path
    shared.store(b.ptr);
    rv.wait(round);
    res.deallocate(b.ptr, kSize, 16);  // the first free
    rv.wait(round + 1);
    auto mine = res.allocate_block(kSize, 16);
    block_state sealed = block_state::foreign;
    if (mine.ptr == b.ptr) {
      std::string src(kSize, '\xAA');
      sealed = res.write_and_seal(mine.ptr, src.data(), kSize);
    }
    rv.wait(round + 2);
    rv.wait(round + 3);  // the other thread has written and sealed its block
    if (mine.ptr == b.ptr && other_got.load() == b.ptr) {
      ++twice;
      // Both owners hold (p, g) with the same g; I sealed 0xAA, the other 0xBB.
      mine_answer = res.check(mine.ptr, mine.generation);
      mine_first = *static_cast<unsigned char*>(mine.ptr);
      MESSAGE("my write_and_seal said " << std::string(dropalloc::to_string(sealed)));
      MESSAGE("block " << mine.ptr << " handed out twice, generations " << mine.generation << " and "
                       << other_gen.load());
      break;
    }
  }
  stop.store(true);
  rv.arrived.fetch_add(1);
  other.join();
  MESSAGE("rounds " << rounds << ", blocks handed out twice " << twice);
  if (twice != 0) {
    MESSAGE("first owner sealed 0xAA; its check() says " << std::string(dropalloc::to_string(mine_answer))
                                                         << " and the block holds bytes of value "
                                                         << static_cast<int>(mine_first) << " (0xAA = 170, 0xBB = 187)");
  }
  CHECK(twice == 0);
}
