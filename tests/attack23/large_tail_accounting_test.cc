// Attacks on 7110cc9: a large block that reuses a cached mapping up to 4x its
// size keeps the pages past the request (ordinary memory only) while the
// kept tails of live blocks add up to at most 16 MiB.
//
// The bound's accounting (heap::large_tail_kept_bytes_) is private; it is
// probed from outside: after any history, with every block freed and the
// large cache emptied, two reuses that each leave an 8 MiB tail must keep
// them (no release) and a third must release exactly its tail. A count that
// leaked upwards releases too early; one that went negative (wrapped) keeps
// the third tail too. Histories: random single-threaded and two-threaded
// sequences of reuses, growths in place (successful, refused, failing in the
// OS layer), calloc-style allocations, observed blocks, cross-thread frees,
// double frees and trims. Along the way: live blocks never overlap, contents
// survive, zeroed allocations read zero over the request, and a growth's
// new bytes read zero.
//
// A second case uses the real ordinary OS layer and mincore(): the resident
// pages past the requests of live blocks never exceed 16 MiB (plus the
// partial last page of each request).
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "allocator/os/os.h"
#include "tests/core_heap.h"
#include "tests/live_set.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
using dropalloc::testing::all_zero;
using dropalloc::testing::rng;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::live_set;
using dropalloc::testing::holds;

namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = kKiB * kKiB;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kMapping = 12 * kMiB;
constexpr std::size_t kRequest = 4 * kMiB;
constexpr std::size_t kTail = kMapping - kRequest;
static_assert(2 * kTail == core::kLargeTailKeptMaxBytes);

std::size_t round_page(std::size_t n) { return (n + kPage - 1) / kPage * kPage; }

struct blk {
  void* p;
  std::size_t n;
  std::size_t seed;
};

core::heap_options ordinary(dropalloc::os::fake_os* os) {
  return dropalloc::testing::with_fake_os(os, dropalloc::backing::ordinary);
}

// The bound probe (see the top of the file). Every block must be freed.
void probe_bound(core::heap& h, dropalloc::os::fake_os& os, const char* when) {
  INFO(when);
  REQUIRE(h.stats().blocks_live == 0);
  h.trim();  // empties the large cache
  // A live block of 8 mappings' size, never written, while the three are
  // freed: the large cache keeps their pages only within half the bytes live
  // in large blocks (core::kLargeCacheResidentFloorBytes), and a mapping
  // cached without its pages has no tail to keep.
  void* ballast = allocate_large(h, 8 * kMapping);
  void* m[3];
  for (auto& p : m) p = allocate_large(h, kMapping);
  for (auto& p : m) fill(p, kMapping, 5);
  for (auto& p : m) h.deallocate(p);
  h.deallocate(ballast);  // too large for the cache: unmapped
  const int maps = os.arena_maps.load();
  const std::uint64_t r0 = os.released_bytes.load();
  void* a = allocate_large(h, kRequest);
  void* b = allocate_large(h, kRequest);
  CHECK(os.arena_maps.load() == maps);
  CHECK(os.released_bytes.load() - r0 == 0);  // two tails: at the bound, both kept
  void* c = allocate_large(h, kRequest);
  CHECK(os.arena_maps.load() == maps);
  CHECK(os.released_bytes.load() - r0 == kTail);  // past the bound: released
  h.deallocate(a);
  h.deallocate(b);
  h.deallocate(c);
  REQUIRE(h.stats().blocks_live == 0);
}

// One thread's random history on h. `inbox`/`outbox`: cross-thread frees.
void history(core::heap& h, dropalloc::os::fake_os& os, live_set& live, std::uint64_t seed, int ops,
             std::atomic<void*>* outbox, std::atomic<void*>* inbox, std::atomic<bool>& fail) {
  rng r{seed};
  std::vector<blk> mine;
  std::size_t next_seed = seed * 1000;
  auto free_one = [&](std::size_t i) {
    blk b = mine[i];
    mine.erase(mine.begin() + static_cast<long>(i));
    if (!holds(b.p, std::min<std::size_t>(b.n, 64 * kKiB), b.seed)) fail = true;
    live.remove(b.p);
    if (outbox != nullptr && r.below(3) == 0) {
      // Hand it to the other thread to free (it checks nothing: the bytes are ours).
      void* expected = nullptr;
      if (outbox->compare_exchange_strong(expected, b.p)) return;
    }
    h.deallocate(b.p);
    if (outbox == nullptr && r.below(4) == 0) {
      const std::uint64_t before = h.stats().misuse_refused;
      h.deallocate(b.p);  // double free, right after: nothing can have taken it on this thread
      if (h.stats().misuse_refused == before) {
        // Another thread may have been handed the mapping meanwhile: then it
        // was a free of its block. Only count it if the block is not live.
        fail = true;
      }
    }
  };
  for (int i = 0; i < ops && !fail; ++i) {
    if (inbox != nullptr) {
      if (void* q = inbox->exchange(nullptr)) h.deallocate(q);
    }
    const std::uint64_t op = r.below(100);
    if (op < 40 || mine.empty()) {
      // Sizes that reuse the cached mappings at every ratio (1x-4x) and fresh ones.
      const std::size_t sizes[] = {300 * kKiB, 700 * kKiB, 1 * kMiB, 3 * kMiB, 4 * kMiB, 5 * kMiB, 9 * kMiB, 12 * kMiB};
      std::size_t n = sizes[r.below(8)] + r.below(3) * 1234;
      const bool zero = r.below(3) == 0;
      core::alloc_error err = core::alloc_error::none;
      void* p = zero ? h.allocate_zeroed(n, 16, &err) : h.allocate(n, 16, &err);
      if (p == nullptr) {
        fail = true;
        break;
      }
      if (zero && !all_zero(p, n)) fail = true;  // calloc: the request reads zero
      const std::size_t u = h.usable_size(p);
      if (u < n || !live.add(p, u)) fail = true;
      const std::size_t s = next_seed++;
      fill(p, std::min<std::size_t>(n, 64 * kKiB), s);
      // Touch the end of the request too (and the old tail's first page past it).
      static_cast<unsigned char*>(p)[n - 1] = 1;
      mine.push_back({p, n, s});
      if (r.below(5) == 0) (void)h.generation(p);  // observed: growth refused from now on
    } else if (op < 65) {
      const std::size_t i = r.below(mine.size());
      blk& b = mine[i];
      const std::size_t u = h.usable_size(b.p);
      const std::size_t want = u + kPage * (1 + r.below(3 * 256));
      const bool fail_os = outbox == nullptr && r.below(6) == 0;  // fake_os's knob is not atomic
      if (fail_os) os.extend_error = ENOMEM;
      const bool grown = h.grow_large_in_place(b.p, want);
      if (fail_os) os.extend_error = 0;
      if (grown) {
        if (fail_os) fail = true;
        if (!holds(b.p, std::min<std::size_t>(b.n, 64 * kKiB), b.seed)) fail = true;
        if (!all_zero(static_cast<char*>(b.p) + u, want - u)) fail = true;  // the new bytes
        if (h.usable_size(b.p) < want || !live.resize(b.p, h.usable_size(b.p))) fail = true;
        b.n = want;
        static_cast<unsigned char*>(b.p)[want - 1] = 1;
      } else if (h.usable_size(b.p) != u) {
        fail = true;  // refused: the block as it was
      }
    } else if (op < 97) {
      free_one(r.below(mine.size()));
    } else {
      h.trim();
    }
  }
  while (!mine.empty()) free_one(mine.size() - 1);
}

}  // namespace

TEST_CASE("the kept-tail bound after random single-threaded histories") {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    dropalloc::os::fake_os os;
    core::heap h(ordinary(&os));
    probe_bound(h, os, "fresh heap");
    live_set live;
    std::atomic<bool> fail{false};
    history(h, os, live, seed, 400, nullptr, nullptr, fail);
    REQUIRE_FALSE(fail.load());
    CHECK(h.stats().misuse_refused > 0);  // the double frees were refused
    probe_bound(h, os, "after the history");
  }
}

TEST_CASE("the kept-tail bound after two threads' histories with cross-thread frees") {
  for (std::uint64_t seed = 11; seed <= 14; ++seed) {
    CAPTURE(seed);
    dropalloc::os::fake_os os;
    core::heap h(ordinary(&os));
    live_set live;
    std::atomic<bool> fail{false};
    std::atomic<void*> a_to_b{nullptr}, b_to_a{nullptr};
    std::atomic<int> finished{0};
    auto run = [&](std::uint64_t s, std::atomic<void*>* out, std::atomic<void*>* in) {
      history(h, os, live, s, 300, out, in, fail);
      finished.fetch_add(1);
      // Drain what the other thread hands over until both are done.
      while (finished.load() < 2) {
        if (void* q = in->exchange(nullptr)) h.deallocate(q);
      }
      if (void* q = in->exchange(nullptr)) h.deallocate(q);
    };
    std::thread t1(run, seed, &a_to_b, &b_to_a);
    std::thread t2(run, seed + 100, &b_to_a, &a_to_b);
    t1.join();
    t2.join();
    for (auto* box : {&a_to_b, &b_to_a}) {
      if (void* q = box->exchange(nullptr)) h.deallocate(q);
    }
    REQUIRE_FALSE(fail.load());
    probe_bound(h, os, "after the threads");
  }
}

TEST_CASE("real ordinary memory: resident bytes past the requests of live large blocks stay within 16 MiB") {
  core::heap h(dropalloc::testing::with_os_no_decay(&dropalloc::os::ordinary_os()));
  REQUIRE(h.arena_backing() == dropalloc::backing::ordinary);
  rng r{77};
  std::vector<blk> live;
  std::size_t worst = 0;
  std::vector<unsigned char> vec;
  auto resident_past_requests = [&] {
    std::size_t sum = 0;
    for (const blk& b : live) {
      const std::size_t from = round_page(b.n);
      const std::size_t u = h.usable_size(b.p);
      if (u <= from) continue;
      vec.resize((u - from) / kPage);
      REQUIRE(mincore(static_cast<char*>(b.p) + from, u - from, vec.data()) == 0);
      for (unsigned char v : vec) sum += (v & 1) ? kPage : 0;
    }
    return sum;
  };
  for (int i = 0; i < 500; ++i) {
    const std::uint64_t op = r.below(10);
    if (op < 5 || live.empty()) {
      const std::size_t sizes[] = {300 * kKiB, 600 * kKiB, 1 * kMiB, 2 * kMiB, 3 * kMiB, 6 * kMiB, 8 * kMiB};
      const std::size_t n = sizes[r.below(7)];
      core::alloc_error err;
      void* p = h.allocate(n, 16, &err);
      REQUIRE(p != nullptr);
      std::memset(p, 0x5a, n);  // the request only
      live.push_back({p, n, 0});
    } else if (op < 6) {
      blk& b = live[r.below(live.size())];
      const std::size_t u = h.usable_size(b.p);
      if (h.grow_large_in_place(b.p, u + kMiB)) {
        b.n = u + kMiB;
        std::memset(b.p, 0x5b, b.n);
      }
    } else {
      const std::size_t k = r.below(live.size());
      // Before it goes: fill the whole usable size, as a program may.
      std::memset(live[k].p, 0x77, h.usable_size(live[k].p));
      h.deallocate(live[k].p);
      live.erase(live.begin() + static_cast<long>(k));
    }
    const std::size_t res = resident_past_requests();
    if (res > worst) worst = res;
    CAPTURE(i);
    REQUIRE(res <= core::kLargeTailKeptMaxBytes);
  }
  MESSAGE("most resident past the requests: " << worst / kMiB << " MiB");
  for (const blk& b : live) h.deallocate(b.p);
}
