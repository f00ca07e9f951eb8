// Attacks on the large cache's resident bound (04d777f): a freed large
// mapping keeps its pages in the cache only while the cached mappings that
// kept theirs add up to at most max(4 MiB, half the bytes live in large
// blocks); past that its pages go back, and a reuse takes it as zeros.
//
// The two counts (heap::large_live_bytes_, heap::large_cache_resident_bytes_)
// are private: they are probed from outside, exactly. After any history,
// with every block freed and the cache emptied (trim), a 40 MiB ballast
// (never cached: over 32 MiB), a 260 KiB block x and a 20 MiB block big:
//   free big: live 40 MiB + 260 KiB, bound 20 MiB + 130 KiB: kept (0 released)
//   free x:   live 40 MiB, bound 20 MiB, resident 20 MiB + 260 KiB: released
//             (these heaps have no purger thread: the free releases it)
// A live count off by more than 260 KiB either way, or a resident count
// that leaked, wrapped or lost more than 130 KiB, fails one of the two.
// Then calloc of x's size must take x back and read zero, and big's size
// must take big back with its pages (its pattern).
//
// Histories: random allocations and calloc-style ones (every reuse ratio
// from 1x to 4x, alignments up to 8 MiB), growth in place (successful,
// refused for observed blocks, failing in the OS layer), frees by handle
// (right and wrong generation), double frees, trims, stats; single-threaded
// and two threads with cross-thread frees plus a trim/stats thread. On the
// fake OS, on the real ordinary layer and on the real arena layer
// (droppable where the kernel has it). Along the way: live blocks never
// overlap, contents survive, calloc reads zero over the request, a growth's
// new bytes read zero.
#include <doctest/doctest.h>
#include <errno.h>

#include <algorithm>
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
#include "tests/forwarding_os.h"
#include "tests/live_set.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
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
static_assert(core::kLargeCacheResidentFloorBytes == 4 * kMiB);

// A real OS layer that counts what the heap hands back.
struct counting_os final : dropalloc::testing::forwarding_os {
  std::atomic<std::uint64_t> released_bytes{0};
  std::atomic<int> extend_fail{0};  // next extend_arena calls that fail
  explicit counting_os(os::os_interface& r) : forwarding_os(r) {}
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override {
    int want = extend_fail.load();
    while (want > 0) {
      if (extend_fail.compare_exchange_weak(want, want - 1)) return ENOMEM;
    }
    return real.extend_arena(p, o, n);
  }
  int release_pages(void* p, std::size_t b) noexcept override {
    released_bytes += b;
    return real.release_pages(p, b);
  }
};

// The exact probe described at the top. `released` counts release_pages bytes.
template <class Released>
void probe_bound(core::heap& h, Released released, const char* when) {
  INFO(when);
  REQUIRE(h.stats().blocks_live == 0);
  h.trim();  // empties the large cache
  void* ballast = allocate_large(h, 40 * kMiB);
  void* x = allocate_large(h, 260 * kKiB);
  void* big = allocate_large(h, 20 * kMiB);
  fill(x, 260 * kKiB, 11);
  std::memset(big, 0x5a, 20 * kMiB);
  const std::uint64_t r0 = released();
  h.deallocate(big);
  CHECK(released() - r0 == 0);  // within the bound: kept
  h.deallocate(x);
  CHECK(released() - r0 == 260 * kKiB);  // past it: handed back
  core::alloc_error err = core::alloc_error::none;
  void* z = h.allocate_zeroed(260 * kKiB, 16, &err);
  REQUIRE(z != nullptr);
  CHECK(z == x);
  CHECK(all_zero(z, 260 * kKiB));
  void* b2 = allocate_large(h, 20 * kMiB);
  CHECK(b2 == big);
  if (b2 == big) {
    const auto* c = static_cast<const unsigned char*>(b2);
    CHECK(c[0] == 0x5a);
    CHECK(c[20 * kMiB - 1] == 0x5a);
  }
  h.deallocate(z);
  h.deallocate(b2);
  h.deallocate(ballast);
  REQUIRE(h.stats().blocks_live == 0);
  h.trim();
}

struct blk {
  void* p;
  std::size_t n;  // the request, written
  std::size_t seed;
  std::uint64_t gen;  // 0: not observed
};

struct knobs {
  std::atomic<int>* extend_fail = nullptr;  // counting_os's, or nullptr
  dropalloc::os::fake_os* fake = nullptr;    // single-threaded fake: its extend_error
};

constexpr std::size_t kSizes[] = {260 * kKiB, 300 * kKiB, 700 * kKiB, 1 * kMiB,  2 * kMiB, 3 * kMiB,
                                  4 * kMiB,   5 * kMiB,   7 * kMiB,   9 * kMiB,  12 * kMiB, 16 * kMiB, 24 * kMiB};
constexpr std::size_t kAligns[] = {16, 16, 16, 4096, 64 * kKiB, 2 * kMiB, 4 * kMiB, 8 * kMiB};

std::size_t check_len(std::size_t n) { return std::min<std::size_t>(n, 64 * kKiB); }

void history(core::heap& h, knobs k, live_set& live, std::uint64_t seed, int ops, std::atomic<void*>* outbox,
             std::atomic<void*>* inbox, std::atomic<int>& fail) {
  rng r{seed};
  std::vector<blk> mine;
  std::size_t next_seed = seed * 1000 + 1;
  auto bad = [&](int line) {
    if (fail.load() == 0) fail = line;
  };
  auto free_one = [&](std::size_t i) {
    blk b = mine[i];
    mine.erase(mine.begin() + static_cast<long>(i));
    if (!holds(b.p, check_len(b.n), b.seed)) bad(__LINE__);
    if (static_cast<unsigned char*>(b.p)[b.n - 1] != 0xa7) bad(__LINE__);
    live.remove(b.p);
    if (outbox != nullptr && r.below(3) == 0) {
      void* expected = nullptr;
      if (outbox->compare_exchange_strong(expected, b.p)) return;
    }
    if (b.gen != 0 && r.below(2) == 0) {
      const std::uint64_t before = h.stats().misuse_refused;
      h.deallocate_generation(b.p, b.gen + 1);  // wrong generation: refused, nothing freed
      if (h.stats().misuse_refused == before) bad(__LINE__);
      h.deallocate_generation(b.p, b.gen);
    } else {
      h.deallocate(b.p);
    }
    if (outbox == nullptr && r.below(4) == 0) {
      const std::uint64_t before = h.stats().misuse_refused;
      h.deallocate(b.p);  // double free (single-threaded: nobody took it meanwhile)
      if (h.stats().misuse_refused == before) bad(__LINE__);
    }
  };
  for (int i = 0; i < ops && fail.load() == 0; ++i) {
    if (inbox != nullptr) {
      if (void* q = inbox->exchange(nullptr)) h.deallocate(q);
    }
    const std::uint64_t op = r.below(100);
    if (op < 42 || mine.empty()) {
      std::size_t n = kSizes[r.below(std::size(kSizes))] + r.below(4) * 1237;
      const std::size_t align = kAligns[r.below(std::size(kAligns))];
      const bool zero = r.below(2) == 0;
      core::alloc_error err = core::alloc_error::none;
      void* p = zero ? h.allocate_zeroed(n, align, &err) : h.allocate(n, align, &err);
      if (p == nullptr) {
        bad(__LINE__);
        break;
      }
      if (reinterpret_cast<std::uintptr_t>(p) % align != 0) bad(__LINE__);
      if (zero && !all_zero(p, n)) bad(__LINE__);  // calloc: the request reads zero
      const std::size_t u = h.usable_size(p);
      if (u < n || !live.add(p, u)) bad(__LINE__);
      const std::size_t s = next_seed++;
      fill(p, check_len(n), s);
      static_cast<unsigned char*>(p)[n - 1] = 0xa7;
      std::uint64_t gen = 0;
      if (r.below(4) == 0) gen = h.generation(p);  // observed: growth refused from now on
      mine.push_back({p, n, s, gen});
    } else if (op < 62) {
      const std::size_t i = r.below(mine.size());
      blk& b = mine[i];
      const std::size_t u = h.usable_size(b.p);
      const std::size_t want = u + kPage * (1 + r.below(2 * 256));
      bool fail_os = false;
      if (r.below(6) == 0) {
        if (k.extend_fail != nullptr) {
          k.extend_fail->fetch_add(1);
          fail_os = true;
        } else if (k.fake != nullptr) {
          k.fake->extend_error = ENOMEM;
          fail_os = true;
        }
      }
      const bool grew = h.grow_large_in_place(b.p, want);
      if (k.fake != nullptr) k.fake->extend_error = 0;
      if (fail_os && k.extend_fail != nullptr && !grew) {
        // Not consumed if the growth was refused before the OS call.
        int one = 1;
        k.extend_fail->compare_exchange_strong(one, 0);
      }
      if (grew && b.gen != 0) bad(__LINE__);  // an observed block must not grow in place
      if (grew) {
        const std::size_t nu = h.usable_size(b.p);
        if (nu < want || !live.resize(b.p, nu)) bad(__LINE__);
        if (!all_zero(static_cast<unsigned char*>(b.p) + u, nu - u)) bad(__LINE__);  // new pages: zeros
        if (!holds(b.p, check_len(b.n), b.seed)) bad(__LINE__);
        static_cast<unsigned char*>(b.p)[b.n - 1] = 0;
        b.n = want - r.below(kPage);
        static_cast<unsigned char*>(b.p)[b.n - 1] = 0xa7;
      } else if (h.usable_size(b.p) != u || !holds(b.p, check_len(b.n), b.seed)) {
        bad(__LINE__);
      }
    } else if (op < 96) {
      free_one(r.below(mine.size()));
    } else if (op < 98) {
      (void)h.stats();
    } else if (outbox == nullptr) {
      h.trim();
    }
  }
  while (!mine.empty()) free_one(mine.size() - 1);
  if (outbox != nullptr) {
    if (void* q = outbox->exchange(nullptr)) h.deallocate(q);
  }
}

void run_single(core::heap& h, knobs k, std::uint64_t seed, int ops) {
  live_set live;
  std::atomic<int> fail{0};
  history(h, k, live, seed, ops, nullptr, nullptr, fail);
  INFO("seed " << seed << ", failed at line " << fail.load());
  CHECK(fail.load() == 0);
}

void run_two(core::heap& h, counting_os& o, std::uint64_t seed, int ops) {
  live_set live;
  std::atomic<int> fail{0};
  std::atomic<void*> a_to_b{nullptr}, b_to_a{nullptr};
  std::atomic<bool> done{false};
  knobs k{&o.extend_fail, nullptr};
  std::thread trimmer([&] {
    rng r{seed ^ 77};
    while (!done.load()) {
      if (r.below(3) == 0) h.trim();
      (void)h.stats();
      std::this_thread::sleep_for(std::chrono::microseconds(200 + r.below(800)));
    }
  });
  std::thread a([&] { history(h, k, live, seed, ops, &a_to_b, &b_to_a, fail); });
  std::thread b([&] { history(h, k, live, seed + 1, ops, &b_to_a, &a_to_b, fail); });
  a.join();
  b.join();
  done = true;
  trimmer.join();
  // A block left in a mailbox after both finished.
  if (void* q = a_to_b.exchange(nullptr)) h.deallocate(q);
  if (void* q = b_to_a.exchange(nullptr)) h.deallocate(q);
  INFO("seed " << seed << ", failed at line " << fail.load());
  CHECK(fail.load() == 0);
}

}  // namespace

TEST_CASE("fake OS: the bound's counts stay exact after random single-threaded histories") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    for (std::uint64_t seed = 1; seed <= 2; ++seed) {
      os::fake_os o;
      core::heap h(dropalloc::testing::with_fake_os(&o, memory));
      auto released = [&] { return o.released_bytes.load(); };
      probe_bound(h, released, "fresh heap");
      run_single(h, knobs{nullptr, &o}, seed, 200);
      probe_bound(h, released, "after the history");
    }
  }
}

TEST_CASE("real OS layers: the bound's counts stay exact after single- and two-threaded histories") {
  struct layer {
    os::os_interface* real;
    const char* name;
  };
  for (layer l : {layer{&os::ordinary_os(), "ordinary"}, layer{&os::system_os(), "arena (droppable or fallback)"}}) {
    INFO(l.name);
    for (std::uint64_t seed = 11; seed <= 11; ++seed) {
      counting_os o(*l.real);
      core::heap h(dropalloc::testing::with_os_no_decay(&o));
      auto released = [&] { return o.released_bytes.load(); };
      probe_bound(h, released, "fresh heap");
      run_single(h, knobs{&o.extend_fail, nullptr}, seed, 150);
      probe_bound(h, released, "after one thread's history");
      run_two(h, o, seed * 31, 150);
      probe_bound(h, released, "after two threads' history");
    }
  }
}

TEST_CASE("a reused mapping that was released reads zero whatever the ratio, alignment and earlier tail") {
  // Every ratio from 1x down to 1/4 of a released mapping; the mapping
  // written all over before each free (tails included).
  os::fake_os o;
  core::heap h(dropalloc::testing::with_fake_os(&o, dropalloc::backing::ordinary));
  const std::size_t span = 16 * kMiB;  // alone past the 4 MiB floor: released on every free
  void* m = allocate_large(h, span);
  std::memset(m, 0xee, span);
  h.deallocate(m);
  for (std::size_t req = span; req >= span / 4; req -= 3 * kMiB / 4 + 4096 * 7) {
    for (std::size_t align : {std::size_t{16}, std::size_t{4096}, std::size_t{4} * kMiB}) {
      INFO("request " << req << " align " << align);
      core::alloc_error err = core::alloc_error::none;
      const std::uint64_t r0 = o.released_bytes.load();
      void* z = h.allocate_zeroed(req, align, &err);
      REQUIRE(z != nullptr);
      CHECK(z == m);
      CHECK(o.released_bytes.load() == r0);  // no tail to release: it reads zero already
      CHECK(all_zero(z, req));
      const std::size_t u = h.usable_size(z);
      CHECK(u == span);
      std::memset(z, 0xee, u);  // the whole usable size, as malloc_usable_size allows
      h.deallocate(z);
      CHECK(o.released_bytes.load() - r0 == span);
    }
  }
}
