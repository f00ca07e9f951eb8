// The private fallback under threads, with the re-advice of blocks found
// dropped (readvise_dropped: from check() and from seals that find a loss).
// Owner threads allocate, write, seal, write_and_seal, rewrite dropped blocks
// (seal_rewritten), zero their own sealed blocks (a loss the check sees),
// free and reallocate, in one shared arena per class (no thread cache, so
// neighbours on a page belong to different threads); reader threads check()
// everybody's blocks at any moment (each check that finds a loss re-advises),
// and one more thread runs check_all(). Checked all along:
//  - every page given to seal_pages() holds only sealed or dropped blocks at
//    that moment (page_guard_os);
//  - a live, unsealed block keeps every byte its owner wrote (ordinary memory);
//  - copy, then check: `intact` only over the bytes the owner sealed.
// A share of the advised ranges is zeroed at once (the kernel taking them).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack17/page_guard_os.h"
#include "tests/attack17/workload.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using attack17::fill;
using attack17::owned;
using attack17::pick_size;
using attack17::seconds;

namespace {

struct slot {
  std::atomic<void*> ptr{nullptr};
  std::atomic<std::uint64_t> gen{0};
};

}  // namespace

TEST_CASE("fallback re-advice under threads: sealed-only pages, unsealed bytes kept, intact only over sealed bytes") {
  attack17::page_guard_os os;
  os.drop_percent = 50;
  dropalloc::resource_options o;
  o.os = &os;
  o.thread_cache = false;
  o.empty_arena_decay_ms = 0;
  o.background_decay = false;
  droppable_resource res(o);
  REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);

  constexpr int kOwners = 4, kPerOwner = 32;
  std::vector<slot> slots(kOwners * kPerOwner);
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0}, checks{0}, unsealed_lost{0}, bad_intact{0}, dropped_seen{0}, exposed{0}, revived{0};

  auto owner = [&](int t) {
    std::mt19937_64 rng(100 + t);
    std::vector<owned> mine(kPerOwner);
    std::vector<unsigned char> buf;
    auto publish = [&](int i) {
      slots[t * kPerOwner + i].gen.store(mine[i].b.generation, std::memory_order_relaxed);
      slots[t * kPerOwner + i].ptr.store(mine[i].b.ptr, std::memory_order_release);
    };
    auto copy_check = [&](owned& x) {
      buf.resize(x.n);
      std::memcpy(buf.data(), x.b.ptr, x.n);
      const block_state st = res.check(x.b);
      if (st == block_state::intact && x.model == owned::sealed && std::memcmp(buf.data(), x.want.data(), x.n) != 0) {
        if (bad_intact.fetch_add(1) < 5) MESSAGE("intact over bytes other than sealed: size ", x.n, " at ", x.b.ptr);
      }
      if (st == block_state::unsealed && x.model == owned::unsealed &&
          std::memcmp(buf.data(), x.want.data(), x.n) != 0) {
        if (unsealed_lost.fetch_add(1) < 5) MESSAGE("unsealed block lost bytes: size ", x.n, " at ", x.b.ptr);
      }
      if (st == block_state::dropped) dropped_seen.fetch_add(1, std::memory_order_relaxed);
      return st;
    };
    while (!stop.load(std::memory_order_relaxed)) {
      const int i = static_cast<int>(rng() % kPerOwner);
      owned& x = mine[i];
      ops.fetch_add(1, std::memory_order_relaxed);
      if (x.b.ptr == nullptr) {
        x.n = pick_size(rng);
        x.b = res.allocate_block(x.n);
        x.want.resize(x.n);
        fill(x.want.data(), x.n, rng());
        std::memcpy(x.b.ptr, x.want.data(), x.n);
        x.model = owned::unsealed;
        publish(i);
        continue;
      }
      switch (rng() % 10) {
        case 0: {  // free (unsealed: check the bytes first)
          if (x.model == owned::unsealed) (void)copy_check(x);
          slots[t * kPerOwner + i].ptr.store(nullptr, std::memory_order_relaxed);
          res.deallocate(x.b);
          x.b = {nullptr, 0};
          break;
        }
        case 1: {  // seal what we wrote
          if (x.model != owned::unsealed) break;
          if (std::memcmp(x.b.ptr, x.want.data(), x.n) != 0) {
            if (unsealed_lost.fetch_add(1) < 5) MESSAGE("unsealed block lost bytes before its seal: ", x.b.ptr);
          }
          const block_state st = res.seal(x.b);
          x.model = st == block_state::intact ? owned::sealed : owned::unknown;
          publish(i);
          (void)copy_check(x);
          break;
        }
        case 2: {  // write_and_seal, on any state
          fill(x.want.data(), x.n, rng());
          const block_state st = res.write_and_seal(x.b, x.want.data(), x.n);
          x.model = st == block_state::intact ? owned::sealed : owned::unknown;
          publish(i);
          (void)copy_check(x);
          break;
        }
        case 3: {  // a dropped block rewritten whole and sealed again
          if (res.check(x.b) != block_state::dropped) break;
          fill(x.want.data(), x.n, rng());
          std::memcpy(x.b.ptr, x.want.data(), x.n);
          const block_state st = res.seal_rewritten(x.b);
          publish(i);
          revived.fetch_add(1, std::memory_order_relaxed);
          x.model = owned::unknown;
          if (st == block_state::intact) {
            // Exposed between the rewrite and the seal (documented): vouch
            // only if what it sealed is what we wrote.
            buf.resize(x.n);
            std::memcpy(buf.data(), x.b.ptr, x.n);
            if (std::memcmp(buf.data(), x.want.data(), x.n) == 0) {
              x.model = owned::sealed;
            } else {
              exposed.fetch_add(1, std::memory_order_relaxed);
            }
          }
          break;
        }
        case 4: {  // our own write zeroes a sealed block: its check sees a loss
          if (x.model != owned::sealed || rng() % 3 != 0) break;
          std::memset(x.b.ptr, 0, x.n);
          x.model = owned::unknown;
          (void)res.check(x.b);
          break;
        }
        case 5: {  // a plain seal of a dropped block: dropped again (and re-advised)
          if (res.check(x.b) == block_state::dropped) {
            const block_state st = res.seal(x.b);
            if (st == block_state::intact && bad_intact.fetch_add(1) < 5) MESSAGE("seal() revived a dropped block");
          }
          break;
        }
        default: (void)copy_check(x); break;
      }
    }
    for (auto& y : mine) {
      if (y.b.ptr != nullptr) res.deallocate(y.b);
    }
  };

  auto reader = [&](int t) {
    std::mt19937_64 rng(900 + t);
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % slots.size()];
      void* p = s.ptr.load(std::memory_order_acquire);
      const std::uint64_t g = s.gen.load(std::memory_order_relaxed);
      if (p == nullptr) continue;
      (void)res.check(p, g);
      checks.fetch_add(1, std::memory_order_relaxed);
    }
  };
  auto sweeper = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      (void)res.check_all();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kOwners; ++t) threads.emplace_back(owner, t);
  for (int t = 0; t < 2; ++t) threads.emplace_back(reader, t);
  threads.emplace_back(sweeper);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds()));
  stop = true;
  for (auto& th : threads) th.join();

  MESSAGE("ops ", ops.load(), ", reader checks ", checks.load(), ", advice calls ", os.calls.load(), " (",
          os.pages.load(), " pages, ", os.dropped_calls.load(), " zeroed), dropped seen ", dropped_seen.load(),
          ", revived ", revived.load(), " (", exposed.load(), " exposed before their seal, documented)");
  const auto v = os.violations();
  for (const auto& line : v) MESSAGE(line);
  CHECK(v.empty());
  CHECK(unsealed_lost.load() == 0);
  CHECK(bad_intact.load() == 0);
  CHECK(os.calls.load() > 0);
}
