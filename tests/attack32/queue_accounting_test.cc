// Promise 5: the queue's bounds and its age flush with the "covered by the
// last entry" rule. Entries counted by pages and by entries; a covered seal
// adds neither, but still meets the age flush. Fake OS, MAP_DROPPABLE.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
using dropalloc::block_state;

namespace {
struct fixture : dropalloc::testing::recorded_heap {
  std::vector<void*> run(std::size_t size, std::size_t n) {
    std::vector<void*> v;
    for (std::size_t i = 0; i < n; ++i) {
      core::alloc_error err{};
      v.push_back(h.allocate(size, 16, &err));
      REQUIRE(v.back() != nullptr);
      std::memset(v.back(), static_cast<int>(i % 250 + 1), size);
    }
    return v;
  }
  void free_all(std::vector<void*>& v) {
    for (void* p : v) h.deallocate(p);
  }
};
}  // namespace

TEST_CASE("128 entries, one per page, fill the queue; blocks just after an entry's add none") {
  fixture f;
  auto v = f.run(64, 64 * 150);
  // Two blocks of each of 128 distinct pages (arenas need not be adjacent):
  // a page's first 64 B block is 64 blocks after the previous page's, so it
  // takes an entry, and the block after it is a bit of that entry.
  std::vector<std::pair<void*, void*>> pages;
  for (std::size_t i = 0; i + 1 < v.size() && pages.size() < 128; ++i) {
    const auto a = reinterpret_cast<std::uintptr_t>(v[i]), b = reinterpret_cast<std::uintptr_t>(v[i + 1]);
    if (a % 4096 == 0 && b == a + 64) pages.emplace_back(v[i], v[i + 1]);
  }
  REQUIRE(pages.size() == 128);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < 127; ++k) {
    REQUIRE(f.h.seal(pages[k].first) == block_state::intact);   // a new page: an entry
    REQUIRE(f.h.seal(pages[k].second) == block_state::intact);  // a bit of it
  }
  const bool fast = std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(8);
  if (fast) CHECK(f.rec.bytes_since(0) == 0);  // 127 entries: not full
  REQUIRE(f.h.seal(pages[127].first) == block_state::intact);  // the 128th
  if (fast) CHECK(f.rec.bytes_since(0) == 128 * 4096);
  f.h.seal_all();
  f.free_all(v);
}

TEST_CASE("a covered seal meets the age flush: the page is advised without a flush") {
  fixture f;
  auto v = f.run(64, 8);
  REQUIRE(f.h.seal(v[0]) == block_state::intact);
  std::this_thread::sleep_for(std::chrono::milliseconds(12));
  REQUIRE(reinterpret_cast<std::uintptr_t>(v[1]) / 4096 == reinterpret_cast<std::uintptr_t>(v[0]) / 4096);
  REQUIRE(f.h.seal(v[1]) == block_state::intact);  // covered, and the queue is old
  CHECK(f.rec.advised(reinterpret_cast<std::uintptr_t>(v[1])));
  // The next seal starts a new queue (last_ of the old one is not used).
  REQUIRE(f.h.seal(v[2]) == block_state::intact);
  const auto mark = f.rec.mark();
  f.h.decay(false);
  CHECK(f.rec.advised(reinterpret_cast<std::uintptr_t>(v[2]), mark));
  f.free_all(v);
}
