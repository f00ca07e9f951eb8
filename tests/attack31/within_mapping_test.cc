// tests/attack31: attacks on heap::grow_large_in_place's second path (commit
// 2c00465): a block in a reused large mapping grows its request within the
// mapping, under the same header. See README.md.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"
#include "tests/pattern.h"
#include "tests/attack31/words.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::allocate_large;
using dropalloc::testing::all_zero;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kMapping = 12 * kMiB;
constexpr std::size_t kRequest = 4 * kMiB;
constexpr std::size_t kTail = kMapping - kRequest;  // two tails fill kLargeTailKeptMaxBytes
static_assert(2 * kTail == core::kLargeTailKeptMaxBytes);

// fake_os's unmap_arena writes plain fields: serialise it for threaded tests.
struct locked_os : dropalloc::testing::forwarding_os {
  os::fake_os& fake;
  std::mutex m;
  explicit locked_os(os::fake_os& f) : forwarding_os(f), fake(f) {}
  void unmap_arena(void* p, std::size_t b) noexcept override {
    std::lock_guard<std::mutex> g(m);
    real.unmap_arena(p, b);
  }
};

struct fixture {
  static constexpr std::size_t kBallast = 96 * kMiB;  // never written: keeps the cache's resident bound high
  os::fake_os fake;
  locked_os los{fake};
  core::heap h;
  void* ballast;
  explicit fixture(dropalloc::backing memory) : h(make(memory)) { ballast = allocate_large(h, kBallast); }
  core::heap_options make(dropalloc::backing memory) {
    fake.reported_backing = memory;
    return dropalloc::testing::with_os_no_decay(&los);
  }
  ~fixture() { h.deallocate(ballast); }
  // n mappings of kMapping, written, freed into the cache.
  void cache_mappings(int n) {
    std::vector<void*> p;
    for (int i = 0; i < n; ++i) {
      p.push_back(allocate_large(h, kMapping));
      attack31::wfill(p.back(), kMapping, static_cast<std::size_t>(i) + 11);
    }
    for (void* q : p) h.deallocate(q);
  }
  // Whether the heap's kept-tail count is 0: with every test block freed,
  // empties the cache, caches three fresh 12 MiB mappings and reuses them for
  // 4 MiB: exactly two tails must be kept and the third released. A leaked
  // count releases more than one tail; an underflowed one (huge) releases
  // all three; a count below the truth keeps three.
  std::uint64_t probe_released_tails() {
    h.decay(true);
    cache_mappings(3);
    const std::uint64_t before = fake.released_bytes.load();
    void* a = allocate_large(h, kRequest);
    void* b = allocate_large(h, kRequest);
    void* c = allocate_large(h, kRequest);
    const std::uint64_t released = fake.released_bytes.load() - before;
    h.deallocate(a);
    h.deallocate(b);
    h.deallocate(c);
    h.decay(true);
    return released / kTail;
  }
};

// realloc_impl of allocator/shim/malloc.cc over a core heap (one heap).
void* shim_realloc(core::heap& h, void* p, std::size_t bytes) {
  std::size_t have = h.usable_size(p);
  REQUIRE(have != 0);
  if (bytes > core::kMaxClassSize && have > core::kMaxClassSize && h.grow_large_in_place(p, bytes)) return p;
  if (bytes <= have && bytes >= have / 2) return p;
  core::alloc_error err = core::alloc_error::none;
  void* q = h.allocate(bytes, 16, &err);
  REQUIRE(q != nullptr);
  std::memcpy(q, p, bytes < have ? bytes : have);
  h.deallocate(p);
  return q;
}

}  // namespace

TEST_CASE("accounting: grow within the mapping, free, reuse: exact kept-tail count") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  auto& fake = t.fake;
  t.cache_mappings(3);
  const int metadata_maps = fake.metadata_maps.load();
  const std::uint64_t r0 = fake.released_bytes.load();
  void* a = allocate_large(h, kRequest);
  void* b = allocate_large(h, kRequest);  // kept: 16 MiB, the bound
  CHECK(fake.released_bytes.load() == r0);
  attack31::wfill(a, kRequest, 1);
  REQUIRE(h.grow_large_in_place(a, 8 * kMiB));  // kept 16 -> 12
  CHECK(fake.metadata_maps.load() == metadata_maps);
  CHECK(fake.extends.load() == 0);
  CHECK(attack31::wholds(a, kRequest, 1));
  CHECK_FALSE(h.grow_large_in_place(a, 8 * kMiB));
  CHECK_FALSE(h.grow_large_in_place(a, 5 * kMiB));
  REQUIRE(h.grow_large_in_place(a, kMapping));  // kept 12 -> 8
  CHECK(h.usable_size(a) == kMapping);
  void* c = allocate_large(h, kRequest);  // kept 8 -> 16: no release
  CHECK(fake.released_bytes.load() == r0);
  attack31::wfill(a, kMapping, 2);
  CHECK(attack31::wholds(a, kMapping, 2));
  CHECK(h.stats().blocks_live == 4);
  CHECK(h.stats().bytes_live == t.kBallast + 3 * kMapping);
  h.deallocate(a);
  h.deallocate(b);
  h.deallocate(c);
  CHECK(h.stats().blocks_live == 1);
  CHECK(t.probe_released_tails() == 1);
}

TEST_CASE("accounting: random reuse / grow within / grow past / shrink / free cycles leave the count at 0") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  std::mt19937_64 rng(31);
  struct blk {
    void* p;
    std::size_t n;
    std::size_t seed;
  };
  std::vector<blk> live;
  std::size_t seed = 100;
  for (int round = 0; round < 2; ++round) {
    t.cache_mappings(3);
    for (int op = 0; op < 80; ++op) {
      int what = static_cast<int>(rng() % 6);
      if (live.size() < 2 || (what == 0 && live.size() < 6)) {
        std::size_t n = kMiB * 3 + rng() % (6 * kMiB);  // 3..9 MiB: reuses 12 MiB mappings
        void* p = allocate_large(h, n);
        attack31::wfill(p, n, ++seed);
        live.push_back({p, n, seed});
        continue;
      }
      blk& b = live[rng() % live.size()];
      REQUIRE(attack31::wholds(b.p, b.n, b.seed));
      if (what <= 2) {  // realloc growth, mostly within the mapping
        std::size_t have = h.usable_size(b.p);
        std::size_t n = b.n + 1 + rng() % (what == 2 ? have : have - b.n + 1);
        void* q = shim_realloc(h, b.p, n);
        REQUIRE(attack31::wholds(q, b.n, b.seed));
        attack31::wfill(q, n, ++seed);
        b = {q, n, seed};
      } else if (what == 3) {  // realloc shrink
        std::size_t n = core::kMaxClassSize + 1 + rng() % b.n;
        if (n > b.n) n = b.n;
        void* q = shim_realloc(h, b.p, n);
        REQUIRE(attack31::wholds(q, n, b.seed));
        b.p = q;
        b.n = n;
      } else {
        h.deallocate(b.p);
        b = live.back();
        live.pop_back();
      }
    }
  }
  for (auto& b : live) {
    CHECK(attack31::wholds(b.p, b.n, b.seed));
    h.deallocate(b.p);
  }
  CHECK(h.stats().blocks_live == 1);
  CHECK(h.stats().bytes_live == t.kBallast);
  CHECK(t.probe_released_tails() == 1);
}

TEST_CASE("accounting: three threads reuse, grow within, free; the count is 0 afterwards") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  std::atomic<int> bad{0};
  auto worker = [&](int id) {
    std::mt19937_64 rng(1000 + id);
    for (int i = 0; i < 60; ++i) {
      std::size_t n = kMiB + rng() % (3 * kMiB);
      core::alloc_error err = core::alloc_error::none;
      auto* p = static_cast<unsigned char*>(h.allocate(n, 16, &err));
      if (p == nullptr) {
        ++bad;
        return;
      }
      std::memset(p, id + 1, n);
      std::size_t have = h.usable_size(p);
      std::size_t m = n + 1 + rng() % (have - n + kMiB);  // within the mapping, sometimes past it
      if (h.grow_large_in_place(p, m)) {
        if (h.usable_size(p) < m) ++bad;
        for (std::size_t k = 0; k < n; k += 4093) {
          if (p[k] != id + 1) ++bad;
        }
        std::memset(p, id + 1, m);
      }
      if ((rng() & 3) == 0) h.decay(false);
      h.deallocate(p);
    }
  };
  // Big mappings in the cache to reuse.
  std::thread th[3];
  for (int round = 0; round < 3; ++round) {
    std::vector<void*> big;
    for (int i = 0; i < 4; ++i) big.push_back(allocate_large(h, 8 * kMiB));
    for (void* q : big) h.deallocate(q);
    for (int i = 0; i < 3; ++i) th[i] = std::thread(worker, i);
    for (auto& x : th) x.join();
  }
  CHECK(bad.load() == 0);
  CHECK(h.stats().blocks_live == 1);
  CHECK(h.stats().misuse_refused == 0);
  CHECK(t.probe_released_tails() == 1);
}

TEST_CASE("a free racing a growth within the mapping: never both refused, never handed out twice") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  int grew = 0, freed = 0;
  for (int i = 0; i < 80; ++i) {
    void* big = allocate_large(h, kMapping);
    h.deallocate(big);
    void* p = allocate_large(h, kRequest);
    REQUIRE(p == big);
    attack31::wfill(p, kPage, 5);
    const std::uint64_t refused = h.stats().misuse_refused;
    std::atomic<int> go{0};
    bool ok = false;
    std::thread a([&] {
      while (go.load() == 0) {
      }
      ok = h.grow_large_in_place(p, 6 * kMiB + (i % 7) * kPage);
    });
    std::thread b([&] {
      go.store(1);
      h.deallocate(p);
    });
    a.join();
    b.join();
    const bool free_refused = h.stats().misuse_refused == refused + 1;
    // Grow then free (both take effect), free then grow (the growth refused),
    // or overlapping (the free refused). Never both refused.
    CHECK_MESSAGE((ok || !free_refused), "grow ", ok, " free refused ", free_refused);
    if (free_refused) {
      ++grew;
      CHECK(h.usable_size(p) == kMapping);
      CHECK(attack31::wholds(p, kPage, 5));
      // Not handed out twice: a new allocation of its size is another block.
      void* q = allocate_large(h, kRequest);
      CHECK(q != p);
      h.deallocate(q);
      h.deallocate(p);
    } else {
      ++freed;
      CHECK(h.usable_size(p) == 0);
    }
    h.decay(true);
  }
  MESSAGE("free refused (overlap) ", grew, ", free took effect ", freed);
  CHECK(h.stats().blocks_live == 1);
  CHECK(t.probe_released_tails() == 1);
}

TEST_CASE("observed (generation / seal) before the growth starts: never grown within the mapping") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  int wrong = 0, grew_unobserved = 0;
  for (int i = 0; i < 30; ++i) {
    void* big = allocate_large(h, kMapping);
    h.deallocate(big);
    void* p = allocate_large(h, kRequest);
    REQUIRE(p == big);
    attack31::wfill(p, 64 * kPage, 9);
    std::atomic<int> observed{0};
    std::atomic<int> go{0};
    std::uint64_t gen = 0;
    block_state sealed = block_state::unsealed;
    bool ok = false, was_observed = false;
    std::thread a([&] {
      while (go.load() == 0) {
      }
      was_observed = observed.load() != 0;
      ok = h.grow_large_in_place(p, 8 * kMiB);
    });
    std::thread b([&] {
      go.store(1);
      if (i % 2 == 0) {
        gen = h.generation(p);
      } else {
        sealed = h.seal(p, &gen);
      }
      if (gen != 0) observed.store(1);
    });
    a.join();
    b.join();
    if (was_observed && ok) ++wrong;
    if (ok && gen == 0) ++grew_unobserved;
    if (gen != 0) {
      // The contents were not changed: the handle is intact if sealed.
      CHECK(attack31::wholds(p, 64 * kPage, 9));
      if (i % 2 == 1 && sealed == block_state::intact) CHECK(h.check(p, gen) == block_state::intact);
      // Ended: stale, and a reuse of the mapping reads stale to it.
      h.deallocate(p);
      CHECK(h.check(p, gen) == block_state::stale);
      void* r = allocate_large(h, kRequest);
      CHECK(h.check(p, gen) == block_state::stale);
      if (r == p) {
        CHECK(h.grow_large_in_place(r, 10 * kMiB));
        CHECK(h.check(p, gen) == block_state::stale);
        CHECK(h.seal(r) == block_state::intact);
        CHECK(h.check(p, gen) == block_state::stale);
      }
      h.deallocate(r);
    } else {
      h.deallocate(p);
    }
    h.decay(true);
  }
  MESSAGE("grew with no generation handed out: ", grew_unobserved);
  CHECK(wrong == 0);
  CHECK(h.stats().blocks_live == 1);
}

TEST_CASE("seal / check / drop of blocks grown within a reused mapping (droppable and ordinary)") {
  for (auto memory : {dropalloc::backing::droppable, dropalloc::backing::ordinary}) {
    fixture t(memory);
    auto& h = t.h;
    t.cache_mappings(1);
    void* p = allocate_large(h, kRequest);
    const std::uint64_t gen0 = 0;
    (void)gen0;
    fill(p, kRequest, 3);
    REQUIRE(h.grow_large_in_place(p, 9 * kMiB));
    auto* b = static_cast<unsigned char*>(p);
    if (memory == dropalloc::backing::droppable) {
      CHECK(all_zero(b + kRequest, kMapping - kRequest));  // tail released: no old life's bytes
    }
    CHECK(holds(p, kRequest, 3));
    fill(b + kRequest, 5 * kMiB, 4);
    std::uint64_t g = 0;
    REQUIRE(h.seal(p, &g) == block_state::intact);
    CHECK(h.check(p, g) == block_state::intact);
    CHECK_FALSE(h.grow_large_in_place(p, 10 * kMiB));  // sealed: observed
    // A drop in the grown part must show.
    REQUIRE(h.drop_for_testing(b + 6 * kMiB, kPage) == 0);
    CHECK(h.check(p, g) == block_state::dropped);
    // Rewritten and resealed: a new generation, the old one stale.
    fill(p, 9 * kMiB, 6);
    std::uint64_t g2 = 0;
    CHECK(h.seal_rewritten(p, &g2) == block_state::intact);
    CHECK(g2 != g);
    CHECK(h.check(p, g) == block_state::stale);
    CHECK(h.check(p, g2) == block_state::intact);
    h.deallocate(p);
    CHECK(h.check(p, g2) == block_state::stale);
    // The next life in the same mapping, grown within it: stale to old handles.
    void* q = allocate_large(h, kRequest);
    REQUIRE(q == p);
    CHECK(h.check(q, g2) == block_state::stale);
    REQUIRE(h.grow_large_in_place(q, kMapping));
    CHECK(h.check(q, g2) == block_state::stale);
    CHECK(h.check(q, g) == block_state::stale);
    std::uint64_t g3 = 0;
    CHECK(h.seal(q, &g3) == block_state::intact);
    CHECK(g3 > g2);
    CHECK(h.check(q, g2) == block_state::stale);
    h.deallocate(q);
  }
}

TEST_CASE("trim, decay, seal_all, check_all and stats racing growths within reused mappings") {
  fixture t(dropalloc::backing::ordinary);
  auto& h = t.h;
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread sweeper([&] {
    int k = 0;
    while (!stop.load()) {
      switch (k++ % 3) {
        case 0: h.trim(); break;
        case 1: h.decay(true); break;
        default: (void)h.stats(); break;
      }
    }
  });
  auto owner = [&](int id) {
    std::mt19937_64 rng(77 + id);
    for (int i = 0; i < 80; ++i) {
      void* big = allocate_large(h, 8 * kMiB);
      h.deallocate(big);  // may be unmapped at once by the sweeper
      std::size_t n = 2 * kMiB + rng() % (2 * kMiB);
      auto* p = static_cast<unsigned char*>(allocate_large(h, n));
      std::memset(p, id + 1, n);
      std::size_t have = h.usable_size(p);
      std::size_t m = n + 1 + rng() % (have - n + kMiB);
      if (h.grow_large_in_place(p, m)) {
        if (h.usable_size(p) < m) ++bad;
        std::memset(p + n, id + 1, m - n);
      } else {
        m = n;
      }
      for (std::size_t k = 0; k < m; k += 4001) {
        if (p[k] != id + 1) ++bad;
      }
      h.deallocate(p);
    }
  };
  std::thread o1(owner, 0), o2(owner, 1);
  o1.join();
  o2.join();
  stop.store(true);
  sweeper.join();
  CHECK(bad.load() == 0);
  CHECK(h.stats().blocks_live == 1);
  CHECK(h.stats().misuse_refused == 0);
  CHECK(t.probe_released_tails() == 1);
}
