// Edges of heap::grow_large_in_place that held on 88d8725: growth across a
// 4 MiB map entry, an 8 MiB-aligned block, a double free racing the growth,
// and sweeps (seal_all, check_all, stats, trim) racing growths, with the
// statistics checked against what the OS layer really has mapped.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::holds;
using dropalloc::testing::with_os;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMiB = std::size_t{1} << 20;

}  // namespace

TEST_CASE("growth across a 4 MiB map entry, 8 MiB aligned: lookups, refusals and statistics") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  // The over-mapping for the alignment leaves the 8 MiB after the block free.
  void* p = nullptr;
  std::vector<void*> failed;
  for (int i = 0; i < 8 && p == nullptr; ++i) {
    void* q = allocate_large(h, 300 * 1024, 8 * kMiB);
    REQUIRE(reinterpret_cast<std::uintptr_t>(q) % (8 * kMiB) == 0);
    fill(q, 300 * 1024, 9);
    if (h.grow_large_in_place(q, 6 * kMiB + 100)) p = q;
    else failed.push_back(q);
  }
  for (void* q : failed) h.deallocate(q);
  REQUIRE_MESSAGE(p != nullptr, "no 8 MiB-aligned block could grow in place");
  auto* b = static_cast<char*>(p);
  CHECK(h.usable_size(p) == 6 * kMiB + kPage);
  CHECK(holds(p, 300 * 1024, 9));
  // Both map entries name the new header; addresses past its end none.
  CHECK(core::segment_of(b + 5 * kMiB) == core::segment_of(b));
  CHECK(core::segment_of(b + 6 * kMiB + kPage) == nullptr);
  CHECK(h.owns(p));
  CHECK_FALSE(h.owns(b + 4 * kMiB));
  CHECK(h.generation(b + 4 * kMiB) == 0);
  CHECK(h.usable_size(b + 4 * kMiB) == 0);
  CHECK(h.check(b + 4 * kMiB, h.generation(p)) != block_state::intact);
  const std::uint64_t refused = h.stats().misuse_refused;
  h.deallocate(b + 4 * kMiB);  // interior, in the new entry: refused
  CHECK(h.stats().misuse_refused == refused + 1);
  std::memset(b + 300 * 1024, 0x5a, 6 * kMiB + kPage - 300 * 1024);  // all of it writable
  auto st = h.stats();
  CHECK(st.blocks_live == 1);
  CHECK(st.bytes_mapped == fos.arena_bytes_mapped.load());
  h.deallocate(p);
  h.trim();
  st = h.stats();
  CHECK(st.blocks_live == 0);
  CHECK(st.bytes_mapped == 0);
  CHECK(st.metadata_bytes == 0);
  CHECK(fos.arena_bytes_mapped.load() == 0);
  CHECK(core::segment_of(b) == nullptr);
  CHECK(core::segment_of(b + 5 * kMiB) == nullptr);
}

TEST_CASE("a free of the same block racing its growth: one wins, the other is refused, nothing leaks") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  std::uint64_t still_live = 0;
  for (int round = 0; round < 300; ++round) {
    void* p = allocate_large(h, 300 * 1024 + static_cast<std::size_t>(round % 5) * kPage);
    fill(p, 300 * 1024, static_cast<std::size_t>(round));
    std::atomic<int> go{0};
    bool grew = false;
    std::thread grower([&] {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      grew = h.grow_large_in_place(p, 700 * 1024);
    });
    go.fetch_add(1);
    while (go.load() < 2) {
    }
    h.deallocate(p);
    grower.join();
    if (h.usable_size(p) != 0) {  // the free was refused: the block lives on
      ++still_live;
      CHECK(holds(p, 300 * 1024, static_cast<std::size_t>(round)));
      if (grew) CHECK(h.usable_size(p) == 700 * 1024);
      h.deallocate(p);
    }
    if (round % 20 == 19) h.trim();
  }
  h.trim();
  auto st = h.stats();
  MESSAGE("frees refused as racing a growth: " << still_live << " of 300");
  CHECK(st.misuse_refused == still_live);
  CHECK(st.blocks_live == 0);
  CHECK(st.bytes_mapped == 0);
  CHECK(st.metadata_bytes == 0);
  CHECK(fos.arena_bytes_mapped.load() == 0);
}

TEST_CASE("sweeps racing growths: seal_all, check_all, stats and trim see one block, never a torn list") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, grown{0};
  std::thread grower([&] {
    for (int round = 0; round < 400; ++round) {
      void* p = allocate_large(h, 300 * 1024);
      fill(p, 300 * 1024, static_cast<std::size_t>(round));
      std::size_t have = 300 * 1024;
      for (int step = 0; step < 3; ++step) {
        if (!h.grow_large_in_place(p, have * 3 / 2)) break;  // sealed meanwhile, or no room
        ++grown;
        if (!holds(p, 300 * 1024, static_cast<std::size_t>(round))) ++bad;
        have = h.usable_size(p);
        if (have < 300 * 1024) ++bad;
      }
      h.deallocate(p);
    }
    stop.store(true);
  });
  std::thread sweeper([&] {
    while (!stop.load()) {
      (void)h.seal_all();
      auto r = h.check_all();
      if (r.intact + r.unsealed + r.dropped > 1) ++bad;
      auto st = h.stats();
      if (st.blocks_live > 1) ++bad;
      h.trim();
    }
  });
  grower.join();
  sweeper.join();
  h.trim();
  auto st = h.stats();
  MESSAGE("grown in place " << grown.load());
  CHECK(bad.load() == 0);
  CHECK(st.blocks_live == 0);
  CHECK(st.bytes_mapped == 0);
  CHECK(st.metadata_bytes == 0);
  CHECK(st.misuse_refused == 0);
  CHECK(fos.arena_bytes_mapped.load() == 0);
}
