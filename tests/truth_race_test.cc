// Races a review found or suspected around the drop check, each run for a
// bounded time (DROPALLOC_TEST_RACE_SECONDS, default 2; set 60 for a long run by
// hand). Run under ASan and TSan by scripts/test.sh.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

double race_seconds() {
  const char* v = std::getenv("DROPALLOC_TEST_RACE_SECONDS");
  double s = v != nullptr ? std::atof(v) : 2.0;
  return s > 0 ? s : 2.0;
}

struct deadline {
  std::chrono::steady_clock::time_point end =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(race_seconds()));
  bool passed() const { return std::chrono::steady_clock::now() >= end; }
};

// A handle another thread publishes: pointer and generation read together.
struct published {
  std::mutex lock;
  block_ref ref;
  void set(block_ref r) {
    std::lock_guard<std::mutex> guard(lock);
    ref = r;
  }
  block_ref get() {
    std::lock_guard<std::mutex> guard(lock);
    return ref;
  }
};

}  // namespace

TEST_CASE("check() on a handle whose arena is being returned to the OS answers, never crashes") {
  // One thread: allocate_block(20000) / publish / deallocate / trim() in a
  // loop (each trim unmaps the arena), also large blocks that go straight back
  // to the OS. Others: every query on the published handle. This crashed in
  // under 30 ms when the queries read unmapped metadata.
  dropalloc::resource_options options;
  options.empty_arena_decay_ms = 0;
  droppable_resource res(options);
  published handle;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> answers{0}, bad{0};
  auto reader = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      block_ref h = handle.get();
      void* p = h.ptr;
      block_state s = res.check(p, h.generation);
      // Never sealed by the writer: the only true answers.
      if (p != nullptr && s != block_state::unsealed && s != block_state::stale) {
        if (bad.fetch_add(1) == 0) MESSAGE("first wrong answer: " << dropalloc::to_string(s));
      }
      (void)res.generation(p);
      (void)res.usable_size(p);
      (void)res.owns(p);
      answers.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader), r2(reader);
  deadline d;
  std::uint64_t rounds = 0;
  while (!d.passed()) {
    std::size_t size = rounds % 4 == 3 ? (std::size_t{1} << 20) + 4096 * (rounds % 7) : 20000;
    block_ref b = res.allocate_block(size);
    handle.set(b);
    res.deallocate(b.ptr, size);
    res.trim();
    ++rounds;
  }
  stop = true;
  r1.join();
  r2.join();
  MESSAGE(rounds << " allocate/free/trim rounds against " << answers.load() << " queries");
  CHECK(bad.load() == 0);
  CHECK(answers.load() > 0);
}

TEST_CASE("generation() racing a free never defeats the double-free check") {
  // generation() used to OR the observed bit into the state byte after a
  // racing free had cleared it, leaving "free but observed": a second free of
  // the block then passed the check and freed it twice.
  droppable_resource res;
  published handle;
  std::atomic<std::uint64_t> round{0}, done{0};
  std::atomic<bool> stop{false};
  std::thread observer([&] {
    std::uint64_t seen = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      std::uint64_t r = round.load(std::memory_order_acquire);
      if (r == seen) continue;
      seen = r;
      (void)res.generation(handle.get().ptr);
      done.store(r, std::memory_order_release);
    }
  });
  deadline d;
  std::uint64_t r = 0, double_frees = 0;
  const std::uint64_t refused_before = res.stats().misuse_refused;
  while (!d.passed() && r < 200000) {
    void* p = res.allocate(48);
    handle.set(block_ref{p, 0});
    round.store(++r, std::memory_order_release);
    res.deallocate(p, 48);  // races the observer's generation()
    while (done.load(std::memory_order_acquire) != r) {
    }
    res.deallocate(p, 48);  // a double free: must be refused
    ++double_frees;
  }
  stop = true;
  observer.join();
  CHECK(res.stats().misuse_refused - refused_before == double_frees);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("seal_all() racing frees and reallocations keeps every freed handle stale") {
  // seal_all()'s contract is about contents (no thread writes an unsealed
  // block while it runs); generations and the double-free check must hold
  // whatever the timing. Writers here write only before publishing.
  droppable_resource res;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> violations{0};
  auto churn = [&](int seed) {
    std::vector<block_ref> mine;
    std::vector<block_ref> freed;
    std::uint32_t x = static_cast<std::uint32_t>(seed) * 2654435761u + 1;
    while (!stop.load(std::memory_order_relaxed)) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      if (mine.size() < 64 && (x & 1) != 0) {
        std::size_t size = (x >> 8) % 3 == 0 ? 9000 : 16 + (x >> 8) % 500;
        block_ref b = res.allocate_block(size);
        mine.push_back(b);
      } else if (!mine.empty()) {
        block_ref b = mine[(x >> 4) % mine.size()];
        res.deallocate(b.ptr, 1);
        freed.push_back(b);
        mine.erase(mine.begin() + static_cast<std::ptrdiff_t>((x >> 4) % mine.size()));
      }
      for (const block_ref& f : freed) {
        block_state s = res.check(f.ptr, f.generation);
        if (s != block_state::stale && s != block_state::foreign) violations.fetch_add(1);
      }
      if (freed.size() > 32) freed.erase(freed.begin(), freed.begin() + 16);
    }
    for (const block_ref& b : mine) res.deallocate(b.ptr, 1);
  };
  std::thread t1(churn, 1), t2(churn, 2);
  deadline d;
  std::uint64_t sweeps = 0;
  while (!d.passed()) {
    res.seal_all();
    (void)res.check_all();
    (void)res.stats();  // reads other threads' caches: TSan checks it
    ++sweeps;
  }
  stop = true;
  t1.join();
  t2.join();
  MESSAGE(sweeps << " seal_all sweeps");
  CHECK(violations.load() == 0);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}

TEST_CASE("a re-seal racing a page drop and a check answers dropped or intact, and a lost page stays lost") {
  // A sealed block is sealed again while another thread drops one of its
  // pages and a third checks it. Two faults this caught: a check that settled
  // the block as dropped made the re-seal answer `stale`; a page lost after
  // the re-seal's look at the old witnesses but before it took the new ones
  // was sealed as zeros and read `intact` from then on.
  droppable_resource res;
  std::atomic<std::uint64_t> round{0}, dropped_round{0}, checked_round{0};
  std::atomic<bool> stop{false};
  published handle;
  std::atomic<std::size_t> drop_page{0};
  auto spin = [](std::uint32_t n) {
    for (std::uint32_t i = 0; i < n; ++i) std::atomic_signal_fence(std::memory_order_seq_cst);
  };
  std::thread dropper([&] {
    std::uint64_t seen = 0;
    std::uint32_t x = 12345;
    while (!stop.load(std::memory_order_relaxed)) {
      std::uint64_t r = round.load(std::memory_order_acquire);
      if (r == seen) {
        std::this_thread::yield();
        continue;
      }
      seen = r;
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      spin(x % 4000);
      block_ref h = handle.get();
      REQUIRE(res.drop_for_testing(static_cast<char*>(h.ptr) + drop_page.load(), 1) == 0);
      dropped_round.store(r, std::memory_order_release);
    }
  });
  std::atomic<std::uint64_t> wrong_checks{0};
  std::thread checker([&] {
    std::uint64_t seen = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      std::uint64_t r = round.load(std::memory_order_acquire);
      if (r == seen) {
        std::this_thread::yield();
        continue;
      }
      block_ref h = handle.get();
      for (int i = 0; i < 64; ++i) {
        block_state s = res.check(h.ptr, h.generation);
        // The re-seal gives the block a new generation: `stale` is right for
        // the old handle once it has, and only then.
        bool moved = res.generation(h.ptr) != h.generation;
        if (s == block_state::foreign || (s == block_state::stale && !moved)) wrong_checks.fetch_add(1);
      }
      seen = r;
      checked_round.store(r, std::memory_order_release);
    }
  });
  deadline d;
  std::uint64_t r = 0, reseal_stale = 0, lost_kept_intact = 0, answered_dropped = 0;
  std::uint32_t x = 777;
  while (!d.passed() && r < 100000) {
    const std::size_t size = r % 2 == 0 ? 16 * 1024 : 64;
    block_ref b = res.allocate_block(size);
    std::memset(b.ptr, 0x5a, size);
    REQUIRE(res.seal(b.ptr) == block_state::intact);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    drop_page.store(size > 4096 ? (x % (size / 4096)) * 4096 : 0);
    handle.set(b);
    round.store(++r, std::memory_order_release);
    spin((x >> 3) % 30000);  // now before, now during, now after the drop
    block_state s = res.seal(b);  // races the drop and the checks; b takes the new generation
    if (s == block_state::dropped) ++answered_dropped;
    if (s != block_state::intact && s != block_state::dropped) ++reseal_stale;
    while (dropped_round.load(std::memory_order_acquire) != r || checked_round.load(std::memory_order_acquire) != r) {
      std::this_thread::yield();
    }
    // The page went, its bytes were not zeros: whatever the order, the block
    // must not read intact now.
    if (res.check(b.ptr, b.generation) != block_state::dropped) ++lost_kept_intact;
    res.deallocate(b.ptr, size);
  }
  stop = true;
  dropper.join();
  checker.join();
  MESSAGE(r << " rounds, " << answered_dropped << " re-seals answered dropped");
  CHECK(reseal_stale == 0);
  CHECK(lost_kept_intact == 0);
  CHECK(wrong_checks.load() == 0);
}
