// Readers copy blocks and check them (the safe read protocol) while writers
// rewrite them with write_and_seal, free them and take new ones (first seal
// by seal(), seal_many() or write_and_seal()), and droppers zero random
// pages. Contents are sparse: each page portion holds non-zero words only
// at the page-dependent start line of the witness search, just before it,
// at its last word, or nowhere, so every drop of a page with data hits the
// word the seal chose or the one it skipped. Sizes: one-page blocks (the
// inline path), odd classes straddling pages, multi-page classes (check_pages).
// Oracle: `intact` => the copy equals what was sealed under that generation.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack24/common.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPg = 4096;


// The sparse contents of seed for a block at address a of `size` bytes.
void make_contents(std::vector<unsigned char>& out, std::uintptr_t a, std::size_t size, std::uint64_t seed) {
  out.assign(size, 0);
  std::mt19937_64 rng(seed);
  for (std::uintptr_t page = a / kPg; page <= (a + size - 1) / kPg; ++page) {
    const std::uintptr_t from = std::max(page * kPg, a), to = std::min((page + 1) * kPg, a + size);
    const std::size_t words = (to - from) / 8;
    std::size_t line = ((from / kPg) % (kPg / 64)) * 8;
    if (line >= words) line = 0;
    auto put = [&](std::size_t w) {
      if (w >= words) return;
      std::uint64_t v = rng() | 1;
      std::memcpy(out.data() + (from - a) + w * 8, &v, 8);
    };
    switch (rng() % 6) {
      case 0: break;  // all zeros: no witness
      case 1: put(line); break;
      case 2: put(line == 0 ? words - 1 : line - 1); break;
      case 3: put(words - 1); break;
      case 4: put(0); break;
      default:
        put(line == 0 ? words - 1 : line - 1);
        put(line + 1);
        break;
    }
  }
}

struct slot {
  std::mutex lock;
  block_ref ref;
  std::size_t size = 0;
  std::uint64_t seed = 0;
};

}  // namespace

static void run(bool fallback) {
  dropalloc::resource_options o;
  o.force_fallback = fallback;
  o.background_decay = false;  // freed blocks' arenas stay mapped: readers copy them
  o.empty_arena_decay_ms = 1ull << 40;
  droppable_resource res(o);
  const std::size_t sizes[] = {8, 24, 56, 64, 120, 1024, 2304, 3072, 3840, 4096, 4160, 4224, 4608,
                               5120, 6656, 9216, 12288, 65536, 73728, 139264};
  constexpr int kSlots = 24;
  std::vector<slot> slots(kSlots);
  std::mt19937_64 init(7);
  for (auto& s : slots) {
    s.size = sizes[init() % std::size(sizes)];
    s.ref = res.allocate_block(s.size, 8);
    s.seed = init();
    std::vector<unsigned char> c;
    make_contents(c, reinterpret_cast<std::uintptr_t>(s.ref.ptr), s.size, s.seed);
    REQUIRE(res.write_and_seal(s.ref, c.data(), c.size()) == block_state::intact);
  }
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0}, intact{0}, checks{0}, drops{0};

  auto writer = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<unsigned char> c;
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % kSlots];
      std::lock_guard<std::mutex> g(s.lock);
      const int op = static_cast<int>(rng() % 10);
      if (op < 6) {  // rewrite in place: new generation, readers of the old one read stale
        const std::uint64_t sd = rng();
        make_contents(c, reinterpret_cast<std::uintptr_t>(s.ref.ptr), s.size, sd);
        block_ref b = s.ref;
        const block_state st = res.write_and_seal(b, c.data(), c.size());
        if (st == block_state::intact || st == block_state::dropped) {
          s.ref = b;
          s.seed = sd;  // dropped: whatever; it never checks intact under b
        }
      } else {  // free, take a new block (often the same address), first seal
        res.deallocate(s.ref);
        s.size = sizes[rng() % std::size(sizes)];
        block_ref b = res.allocate_block(s.size, 8);
        const std::uint64_t sd = rng();
        make_contents(c, reinterpret_cast<std::uintptr_t>(b.ptr), s.size, sd);
        if (op == 6) {
          // Verified by the call itself.
          res.write_and_seal(b, c.data(), c.size());
        } else {
          std::memcpy(b.ptr, c.data(), c.size());
          if (op == 7) {
            res.seal(b);
          } else if (op == 8) {
            block_state a[1];
            res.seal_many(std::span<block_ref>(&b, 1), std::span<block_state>(a, 1));
          } else {
            res.seal_rewritten(b);
          }
          // A page dropped while the block was written, before the seal,
          // is sealed as zeros (documented for seal(): it cannot see it).
          // As the documentation says: verify after sealing, and rewrite
          // through write_and_seal if it differs. Readers take the handle
          // only after this, under the slot lock.
          if (res.check(b) == block_state::intact && std::memcmp(b.ptr, c.data(), c.size()) != 0) {
            res.write_and_seal(b, c.data(), c.size());
          }
        }
        s.ref = b;
        s.seed = sd;
      }
    }
  };

  auto dropper = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % kSlots];
      std::uintptr_t a;
      std::size_t size;
      {
        std::lock_guard<std::mutex> g(s.lock);
        a = reinterpret_cast<std::uintptr_t>(s.ref.ptr);
        size = s.size;
      }
      // The block may have been freed meanwhile: its arena stays mapped
      // (no decay), and a drop of a free block's page loses nothing.
      res.drop_for_testing(reinterpret_cast<void*>(a + rng() % size), 1);
      drops.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    }
  };

  auto reader = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<unsigned char> copy, want;
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % kSlots];
      block_ref b;
      std::size_t size;
      std::uint64_t sd;
      {
        std::lock_guard<std::mutex> g(s.lock);
        b = s.ref;
        size = s.size;
        sd = s.seed;
      }
      copy.resize(size);
      // Copy (the block may be rewritten, freed, dropped meanwhile), then check.
      std::memcpy(copy.data(), b.ptr, size);
      const block_state st = res.check(b);
      checks.fetch_add(1, std::memory_order_relaxed);
      if (st != block_state::intact) continue;
      intact.fetch_add(1, std::memory_order_relaxed);
      make_contents(want, reinterpret_cast<std::uintptr_t>(b.ptr), size, sd);
      if (std::memcmp(copy.data(), want.data(), size) != 0) {
        wrong.fetch_add(1);
        std::size_t i = 0;
        while (copy[i] == want[i]) ++i;
        MESSAGE("intact over a wrong copy: size " << size << " at "
                                                  << (reinterpret_cast<std::uintptr_t>(b.ptr) % kPg) << " byte " << i);
      }
    }
  };

  std::vector<std::thread> ts;
  ts.emplace_back(writer, 1);
  ts.emplace_back(writer, 2);
  ts.emplace_back(dropper, 3);
  ts.emplace_back(reader, 4);
  ts.emplace_back(reader, 5);
  std::this_thread::sleep_for(std::chrono::duration<double>(attack24::race_seconds(4.0)));
  stop.store(true);
  for (auto& t : ts) t.join();
  MESSAGE("checks " << checks.load() << ", intact " << intact.load() << ", drops " << drops.load());
  CHECK(wrong.load() == 0);
  CHECK(intact.load() > 0);
  for (auto& s : slots) res.deallocate(s.ref);
}

TEST_CASE("sparse witness-line contents: copy + check against rewrites, frees, drops (droppable)") { run(false); }
TEST_CASE("sparse witness-line contents: copy + check against rewrites, frees, drops (fallback)") { run(true); }
