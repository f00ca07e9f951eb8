// Targeted interleavings of release_due_large (f062246), opened with the
// OS layer's release hook (hook_os.h over the fake OS layer): what other
// calls do while a due mapping is out of its slot, its pages going back.
// After each, the heap's private counts are probed exactly (probe.h) and
// nothing is left mapped once everything is freed and trimmed.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack26/hook_os.h"
#include "tests/attack26/probe.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::all_zero;
using dropalloc::testing::allocate_large;
using dropalloc::testing::hook_os;
using dropalloc::testing::probe;

namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = kKiB * kKiB;

// Runs `act` once, inside the release of [target, target + span).
struct once {
  void* target = nullptr;
  std::size_t span = 0;
  int hits = 0;
  std::function<void()> act;
  static void hook(void* ctx, void* p, std::size_t bytes) {
    auto* o = static_cast<once*>(ctx);
    if (p != o->target || bytes != o->span || o->hits++ != 0) return;
    o->act();
  }
};

struct fixture {
  os::fake_os fake;
  hook_os o{fake};
  core::heap h{dropalloc::testing::with_os_no_decay(&o, /*purger=*/true)};
  once w;
  fixture(dropalloc::backing memory = dropalloc::backing::ordinary) {
    fake.reported_backing = memory;
    o.ctx = &w;
    o.on_release = &once::hook;
  }
  void* zeroed(std::size_t n, std::size_t align = 16) {
    core::alloc_error err = core::alloc_error::none;
    void* p = h.allocate_zeroed(n, align, &err);
    REQUIRE(p != nullptr);
    return p;
  }
};

}  // namespace

TEST_CASE("the cache refilled during the window: the due mapping is unmapped, never handed out, counts exact") {
  fixture f;
  std::vector<void*> small;
  for (int i = 0; i < 16; ++i) small.push_back(allocate_large(f.h, 300 * kKiB));
  void* x = allocate_large(f.h, 16 * kMiB);
  std::memset(x, 0xee, 16 * kMiB);
  const auto maps0 = f.o.maps.load();
  f.h.deallocate(x);  // due (16 MiB past the 4 MiB floor, live 4.7 MiB)
  f.w.target = x;
  f.w.span = 16 * kMiB;
  f.w.act = [&] {
    for (void* p : small) f.h.deallocate(p);  // every slot taken meanwhile
    small.clear();
  };
  f.h.decay(false);
  REQUIRE(f.w.hits == 1);
  CHECK(f.o.maps.load() == maps0 - 1);  // x unmapped
  void* y = f.zeroed(16 * kMiB);
  CHECK(all_zero(y, 16 * kMiB));
  f.h.deallocate(y);
  f.h.decay(false);
  probe(f.h, f.o, "after the refill");
}

TEST_CASE("the cache's bytes filled during the window: unmapped too") {
  fixture f;
  void* a = allocate_large(f.h, 30 * kMiB);
  void* y = allocate_large(f.h, 16 * kMiB);
  void* c = allocate_large(f.h, 4 * kMiB);
  void* b = allocate_large(f.h, 30 * kMiB);
  std::memset(b, 0xee, 30 * kMiB);
  f.h.deallocate(c);  // live 76 MiB, bound 38: kept
  f.h.deallocate(b);  // live 46 MiB, bound 23, resident 34: due
  f.w.target = b;
  f.w.span = 30 * kMiB;
  f.w.act = [&] {
    f.h.deallocate(y);  // cache 4 + 16
    f.h.deallocate(a);  // cache 50 MiB: b's 30 no longer fits in 64
  };
  const auto maps0 = f.o.maps.load();
  f.h.decay(false);
  REQUIRE(f.w.hits == 1);
  CHECK(f.o.maps.load() == maps0 - 1);  // b unmapped: no room by bytes
  // a, y and c are still cached, with their pages.
  void* a2 = allocate_large(f.h, 30 * kMiB);
  CHECK(a2 == a);
  void* z = f.zeroed(30 * kMiB);  // a fresh mapping (the kernel may put it where b was)
  CHECK(f.o.maps.load() == maps0);
  CHECK(all_zero(z, 30 * kMiB));
  f.h.deallocate(a2);
  f.h.deallocate(z);
  f.h.decay(false);
  probe(f.h, f.o, "after the bytes case");
}

TEST_CASE("reuses of every ratio during the window never get the mapping; afterwards it reads zero") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    fixture f(memory);
    void* x = allocate_large(f.h, 16 * kMiB);
    std::memset(x, 0xee, 16 * kMiB);
    std::uint64_t g = f.h.generation(x);
    f.h.deallocate_generation(x, g);
    f.w.target = x;
    f.w.span = 16 * kMiB;
    f.w.act = [&] {
      CHECK(f.h.check(x, g) == block_state::stale);
      std::vector<void*> got;
      for (std::size_t req = 16 * kMiB; req >= 4 * kMiB; req -= 3 * kMiB + 4096 * 5) {
        void* z = f.zeroed(req);
        CHECK(z != x);
        CHECK(all_zero(z, req));
        std::memset(z, 0x11, req);
        got.push_back(z);
      }
      for (void* z : got) f.h.deallocate(z);  // into the cache meanwhile, some due
    };
    void* other = allocate_large(f.h, 300 * kKiB);  // a new mapping: releases the due x first
    REQUIRE(f.w.hits == 1);
    f.h.deallocate(other);
    // Now x is back, released: calloc of its size takes x (the best fit) and reads zero.
    void* z = f.zeroed(16 * kMiB);
    CHECK(z == x);
    CHECK(all_zero(z, 16 * kMiB));
    CHECK(f.h.check(x, g) == block_state::stale);
    f.h.deallocate(z);
    f.h.decay(false);
    probe(f.h, f.o, "after the reuses");
  }
}

TEST_CASE("the OS refuses the release: the mapping comes back with its pages; calloc still clears it") {
  for (std::size_t req : {16 * kMiB, 12 * kMiB, 8 * kMiB, 4 * kMiB}) {
    INFO("request " << req);
    fixture f;
    void* x = allocate_large(f.h, 16 * kMiB);
    std::memset(x, 0xee, 16 * kMiB);
    f.h.deallocate(x);  // due
    f.o.fail_releases = 1;
    const auto r0 = f.o.released_bytes.load();
    f.h.decay(false);  // refused
    CHECK(f.o.released_bytes.load() == r0);
    f.h.decay(false);  // no longer due: nothing more
    CHECK(f.o.released_bytes.load() == r0);
    void* z = f.zeroed(req);
    CHECK(z == x);
    CHECK(all_zero(z, req));
    std::memset(z, 0xee, f.h.usable_size(z));
    f.h.deallocate(z);
    f.h.decay(false);
    probe(f.h, f.o, "after a refused release");
  }
}

TEST_CASE("a due mapping reused warm by calloc and by malloc: zero over the request; the tail as before") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    fixture f(memory);
    for (std::size_t req = 16 * kMiB; req >= 4 * kMiB; req -= kMiB + 4096 * 3) {
      INFO("request " << req);
      f.h.trim();
      void* x = allocate_large(f.h, 16 * kMiB);
      std::memset(x, 0xee, 16 * kMiB);
      f.h.deallocate(x);  // due, pages kept
      const auto r0 = f.o.released_bytes.load();
      void* z = f.zeroed(req);  // warm reuse
      CHECK(z == x);
      CHECK(all_zero(z, req));
      std::memset(z, 0xee, f.h.usable_size(z));
      f.h.deallocate(z);
      f.h.decay(false);  // due again: released now, whole
      CHECK(f.o.released_bytes.load() - r0 >= 16 * kMiB);
      void* m = allocate_large(f.h, req);  // a released reuse: zeros
      CHECK(m == x);
      CHECK(all_zero(m, f.h.usable_size(m)));
      f.h.deallocate(m);
    }
    f.h.decay(false);
    probe(f.h, f.o, "after warm reuses");
  }
}

TEST_CASE("two due mappings in one pass, one slot refilled meanwhile: one comes back, one is unmapped") {
  fixture f;
  std::vector<void*> small;
  for (int i = 0; i < 15; ++i) small.push_back(allocate_large(f.h, 300 * kKiB));
  void* x1 = allocate_large(f.h, 8 * kMiB);
  void* x2 = allocate_large(f.h, 8 * kMiB);
  std::memset(x1, 0xe1, 8 * kMiB);
  std::memset(x2, 0xe2, 8 * kMiB);
  f.h.deallocate(x1);  // live 12.4 MiB: bound 6.2 MiB: due
  f.h.deallocate(x2);  // due
  const auto maps0 = f.o.maps.load();
  f.w.span = 8 * kMiB;
  f.w.target = x1;
  f.w.act = [&] {
    for (void* p : small) f.h.deallocate(p);  // 15 of the 16 slots
    small.clear();
  };
  f.h.decay(false);
  REQUIRE(f.w.hits == 1);
  CHECK(f.o.maps.load() == maps0 - 1);
  // The one that came back is released: calloc reads zero, whichever it is.
  void* z = f.zeroed(8 * kMiB);
  CHECK((z == x1 || z == x2));
  CHECK(all_zero(z, 8 * kMiB));
  f.h.deallocate(z);
  f.h.decay(false);
  probe(f.h, f.o, "after the split pass");
}

TEST_CASE("stats inside the window are sane; the heap destroyed with due, released and kept mappings cached") {
  os::fake_os fake;
  {
    hook_os o(fake);
    core::heap h(dropalloc::testing::with_os_no_decay(&o, /*purger=*/true));
    once w;
    o.ctx = &w;
    o.on_release = &once::hook;
    void* ballast = allocate_large(h, 20 * kMiB);
    void* kept = allocate_large(h, 6 * kMiB);
    void* x = allocate_large(h, 8 * kMiB);
    void* r = allocate_large(h, 5 * kMiB);
    std::memset(x, 0xee, 8 * kMiB);
    h.deallocate(kept);  // live 33 MiB: bound 16.5, 6: kept
    h.deallocate(r);     // live 28 MiB: bound 14, 11: kept
    h.deallocate(x);     // live 20 MiB: bound 10, 19: due
    const auto before = h.stats();
    w.target = x;
    w.span = 8 * kMiB;
    w.act = [&] {
      const auto mid = h.stats();  // x out of its slot: still mapped, not live
      CHECK(mid.blocks_live == before.blocks_live);
      CHECK(mid.bytes_mapped == before.bytes_mapped);
      CHECK(mid.arenas_mapped == before.arenas_mapped);
    };
    h.decay(false);
    REQUIRE(w.hits == 1);
    CHECK(h.stats().bytes_mapped == before.bytes_mapped);
    // A new due one, left due; then the heap goes with everything cached.
    void* y = allocate_large(h, 7 * kMiB);
    h.deallocate(y);
    (void)ballast;  // still live at destruction
  }
  CHECK(fake.arena_maps.load() == fake.arena_unmaps.load());
  CHECK(fake.arena_bytes_mapped.load() == 0);
}
