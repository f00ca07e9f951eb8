// check() on pointers that are not block starts, now that the fast lookup
// (locate_block) no longer tests the offset against the arena's span:
// interior pointers, pointers below an arena's base, past its end inside the
// same 4 MiB map entry, aliases of an arena's address with bits above 47 set,
// interior pages of large blocks (also over 4 GiB where the machine lets us
// map one), and handles of arenas freed and unmapped, also while another
// thread unmaps them. Oracle: `intact` only for a handle that was issued, is
// sealed at that generation and was not freed before the check began; no
// crash.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/core/size_class.h"
#include "allocator/dropalloc.h"
#include "tests/attack24/common.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPg = 4096;


void fill_nonzero(void* p, std::size_t n, std::uint64_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>((seed + i * 131) % 251 + 1);
}

// Pointers near and far from block p of `size` bytes that are not p.
std::vector<std::uintptr_t> wild_candidates(const void* p, std::size_t size, std::mt19937_64& rng) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::vector<std::uintptr_t> c;
  for (std::uintptr_t k = 1; k < 80 && k < size; ++k) c.push_back(a + k);
  for (std::uintptr_t k : {size - 8, size - 1, size, size + 8, size / 2, size / 2 + 8, kPg, kPg - 8, kPg + 8}) {
    c.push_back(a + k);
  }
  for (std::uintptr_t k : {std::uintptr_t{8}, std::uintptr_t{16}, kPg, kPg * 16, std::uintptr_t{1} << 22,
                           std::uintptr_t{3} << 21, std::uintptr_t{1} << 30}) {
    c.push_back(a - k);
    c.push_back(a + k);
  }
  // Multiples of the block size up to the end of the 4 MiB entry and a bit
  // past: block starts beyond the arena's span if it is short.
  for (std::uintptr_t k = 1; k * size <= (std::uintptr_t{5} << 20); k += 1 + rng() % 7) c.push_back(a + k * size);
  // Aliases in the masked map range: same low 47 bits (or same entry).
  for (int bit : {47, 48, 52, 56, 63}) c.push_back(a ^ (std::uintptr_t{1} << bit));
  c.push_back(a | (std::uintptr_t{0xffff} << 48));
  c.push_back(a + (std::uintptr_t{1} << 47));
  c.push_back(a - (std::uintptr_t{1} << 47));
  c.push_back(a + (std::uintptr_t{1} << 35));  // one leaf further (32 GiB)
  c.push_back(a - (std::uintptr_t{1} << 35));
  c.push_back(~std::uintptr_t{0} - 7);
  c.push_back(8);
  return c;
}

struct handle_set {
  std::map<std::uintptr_t, std::uint64_t> sealed;  // ptr -> generation of our sealed blocks
  bool may_be_intact(std::uintptr_t p, std::uint64_t gen) const {
    auto it = sealed.find(p);
    return it != sealed.end() && it->second == gen;
  }
};

void probe_all(droppable_resource& res, const handle_set& hs, const std::vector<block_ref>& blocks,
               const std::vector<std::size_t>& sizes, std::mt19937_64& rng) {
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const block_ref& b = blocks[i];
    for (std::uintptr_t c : wild_candidates(b.ptr, sizes[i], rng)) {
      for (std::uint64_t g : {b.generation, b.generation + 1, b.generation - 1, std::uint64_t{0}, ~std::uint64_t{0}}) {
        const block_state r = res.check(reinterpret_cast<const void*>(c), g);
        if (r == block_state::intact && !hs.may_be_intact(c, g)) {
          CAPTURE(sizes[i]);
          CAPTURE(c - reinterpret_cast<std::uintptr_t>(b.ptr));
          FAIL("intact for a pointer/generation that names no sealed block");
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("interior, edge and aliased pointers of every class and of large blocks: never intact") {
  dropalloc::resource_options o;
  o.background_decay = false;
  droppable_resource res(o);
  std::mt19937_64 rng(11);
  std::vector<block_ref> blocks;
  std::vector<std::size_t> sizes;
  handle_set hs;
  for (const auto& row : dropalloc::core::kSizeClasses) {
    // A few per class, the last one of a fresh arena among them for the
    // small first arenas (64 KiB: 16 blocks of 4 KiB, 4 of 16 KiB).
    const int n = row.size >= 4096 ? 5 : 3;
    for (int i = 0; i < n; ++i) {
      block_ref b = res.allocate_block(row.size, 8);
      fill_nonzero(b.ptr, row.size, row.size + i);
      REQUIRE(res.seal(b) == block_state::intact);
      blocks.push_back(b);
      sizes.push_back(row.size);
      hs.sealed[reinterpret_cast<std::uintptr_t>(b.ptr)] = b.generation;
    }
  }
  for (std::size_t size : {std::size_t{262145}, std::size_t{1} << 20, (std::size_t{9} << 20) + 4096}) {
    block_ref b = res.allocate_block(size, 8);
    fill_nonzero(b.ptr, size, size);
    REQUIRE(res.seal(b) == block_state::intact);
    blocks.push_back(b);
    sizes.push_back(size);
    hs.sealed[reinterpret_cast<std::uintptr_t>(b.ptr)] = b.generation;
  }
  probe_all(res, hs, blocks, sizes, rng);
  for (std::size_t i = 0; i < blocks.size(); ++i) REQUIRE(res.check(blocks[i]) == block_state::intact);

  // Freed and unmapped: every handle and every candidate, stale or foreign.
  for (auto& b : blocks) res.deallocate(b);
  res.trim();
  handle_set none;
  probe_all(res, none, blocks, sizes, rng);
  for (auto& b : blocks) {
    const block_state r = res.check(b);
    REQUIRE((r == block_state::stale || r == block_state::foreign));
  }
}

TEST_CASE("a large block over 4 GiB: its later pages are witnessed, interior pointers never intact") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The seal reads every page (4 GiB of zero pages): too slow instrumented.
  return;
#endif
  droppable_resource res;
  const std::size_t size = (std::size_t{4} << 30) + 3 * kPg + 200;
  block_ref b = attack24::allocate_huge(res, size);
  if (b.ptr == nullptr) return;
  auto* bytes = static_cast<unsigned char*>(b.ptr);
  // One word on a page below 4 GiB, one just past it (page index > 2^20),
  // one in the last, short page, at the page-dependent start lines.
  const std::vector<std::size_t> offs = {5 * kPg + 8 * ((((reinterpret_cast<std::uintptr_t>(b.ptr) / kPg) + 5) % 64) * 8),
                                         (std::size_t{4} << 30) + kPg + 8,
                                         (std::size_t{4} << 30) + 3 * kPg + 192};
  for (std::size_t off : offs) {
    const std::uint64_t v = 0x1111111111111111ull + off;
    std::memcpy(bytes + off, &v, 8);
  }
  REQUIRE(res.seal(b) == block_state::intact);
  REQUIRE(res.check(b) == block_state::intact);
  std::mt19937_64 rng(12);
  handle_set hs;
  hs.sealed[reinterpret_cast<std::uintptr_t>(b.ptr)] = b.generation;
  probe_all(res, hs, {b}, {size}, rng);
  for (std::size_t k : {std::size_t{1} << 32, (std::size_t{1} << 32) + kPg, std::size_t{1} << 31}) {
    REQUIRE(res.check(bytes + k, b.generation) != block_state::intact);
  }
  // A page without data (between the words) may go: nothing lost.
  REQUIRE(res.drop_for_testing(bytes + (std::size_t{2} << 30), kPg) == 0);
  REQUIRE(res.check(b) == block_state::intact);
  // The word past 4 GiB: its page goes, the check must see it.
  REQUIRE(res.drop_for_testing(bytes + offs[1], 8) == 0);
  REQUIRE(res.check(b) == block_state::dropped);
  // Revive with the word back, then drop the last (short) page.
  const std::uint64_t v1 = 0x1111111111111111ull + offs[1];
  std::memcpy(bytes + offs[1], &v1, 8);
  REQUIRE(res.seal_rewritten(b) == block_state::intact);
  REQUIRE(res.drop_for_testing(bytes + offs[2], 8) == 0);
  REQUIRE(res.check(b) == block_state::dropped);
  res.deallocate(b);
}

namespace {

struct record {
  std::uintptr_t ptr;
  std::uint64_t gen;
  std::size_t size;
  std::atomic<std::uint64_t> freed_seq{0};  // 0: live; else the counter after its free returned
};

}  // namespace

TEST_CASE("wild and stale handles checked while another thread frees, trims and unmaps arenas") {
  dropalloc::resource_options o;
  o.empty_arena_decay_ms = 0;
  droppable_resource res(o);
  std::atomic<std::uint64_t> counter{1};
  std::atomic<bool> stop{false};
  std::mutex lock;
  std::map<std::pair<std::uintptr_t, std::uint64_t>, record*> issued;
  std::vector<record*> window;  // published handles, the latest rounds
  std::vector<record*> graveyard;
  std::atomic<long> bad{0}, probes{0}, intacts{0};

  std::thread writer([&] {
    std::mt19937_64 rng(21);
    const std::size_t picks[] = {8, 48, 4096, 4160, 5120, 9216, 65536, 73728, 262144, 300000, 4 << 20};
    while (!stop.load()) {
      std::vector<block_ref> mine;
      std::vector<record*> recs;
      const std::size_t size = picks[rng() % std::size(picks)];
      const int n = size > 65536 ? 3 : 24;
      for (int i = 0; i < n; ++i) {
        block_ref b = res.allocate_block(size, 8);
        // Issued from here on (a reader may guess the handle of a block
        // the next round reuses, before this round publishes it): a fresh
        // block's first seal keeps allocate_block's generation.
        auto* r = new record{reinterpret_cast<std::uintptr_t>(b.ptr), b.generation, size};
        {
          std::lock_guard<std::mutex> g(lock);
          REQUIRE(issued.find({r->ptr, r->gen}) == issued.end());  // a handle names one life
          issued[{r->ptr, r->gen}] = r;
        }
        std::vector<unsigned char> src(size);
        fill_nonzero(src.data(), size, rng());
        const std::uint64_t gen = b.generation;
        REQUIRE(res.write_and_seal(b, src.data(), size) == block_state::intact);
        REQUIRE(b.generation == gen);
        mine.push_back(b);
        recs.push_back(r);
      }
      {
        std::lock_guard<std::mutex> g(lock);
        window.insert(window.end(), recs.begin(), recs.end());
        if (window.size() > 200) {
          graveyard.insert(graveyard.end(), window.begin(), window.end() - 100);
          window.erase(window.begin(), window.end() - 100);
        }
      }
      for (std::size_t i = 0; i < mine.size(); ++i) {
        res.deallocate(mine[i]);
        recs[i]->freed_seq.store(counter.fetch_add(1) + 1);
      }
      if (rng() % 2 == 0) res.trim();
    }
  });

  auto reader = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      record* r = nullptr;
      {
        std::lock_guard<std::mutex> g(lock);
        if (!window.empty()) r = window[rng() % window.size()];
      }
      if (r == nullptr) continue;
      std::uintptr_t c = r->ptr;
      std::uint64_t g = r->gen;
      switch (rng() % 8) {
        case 0: break;
        case 1: c += 8 * (1 + rng() % 16); break;
        case 2: c -= 8 * (1 + rng() % 512); break;
        case 3: c += r->size; break;
        case 4: c ^= std::uintptr_t{1} << 47; break;
        case 5: c += (rng() % 1024) * kPg; break;
        case 6: g += 1; break;
        default: c += r->size * (rng() % 64); break;
      }
      const std::uint64_t s0 = counter.load();
      const block_state st = res.check(reinterpret_cast<const void*>(c), g);
      probes.fetch_add(1, std::memory_order_relaxed);
      if (st != block_state::intact) continue;
      intacts.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard<std::mutex> gl(lock);
      auto it = issued.find({c, g});
      if (it == issued.end()) {
        ++bad;
        MESSAGE("intact for a handle never issued, offset " << static_cast<long long>(c - r->ptr));
        continue;
      }
      const std::uint64_t f = it->second->freed_seq.load();
      if (f != 0 && f <= s0) {
        ++bad;
        MESSAGE("intact for a handle freed before the check began");
      }
    }
  };
  std::thread r1(reader, 31), r2(reader, 32);
  std::this_thread::sleep_for(std::chrono::duration<double>(attack24::race_seconds(3.0)));
  stop.store(true);
  writer.join();
  r1.join();
  r2.join();
  MESSAGE("probes " << probes.load() << ", intact answers " << intacts.load());
  CHECK(bad.load() == 0);
  for (auto& kv : issued) delete kv.second;
}
