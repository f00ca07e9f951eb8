// Freed large mappings in the large cache keep their pages only within a
// bound: half the bytes live in large blocks, or core::kLargeCacheResidentFloorBytes
// if that is more. Past it a mapping enters the cache due: its pages go back
// before the next new large mapping or at a decay pass, unless a reuse comes
// first; released, it needs no new mapping when reused, and reads as zeros.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
using dropalloc::testing::all_zero;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kSmall = core::kLargeCacheResidentFloorBytes / 2;  // fits under the floor
constexpr std::size_t kBig = 3 * core::kLargeCacheResidentFloorBytes;    // passes it alone
static_assert(kSmall >= kMiB && kBig <= 16 * kMiB, "sizes within the large cache's range");

// A core heap over a fake OS reporting `memory`.
struct heap_over_fake_os {
  dropalloc::os::fake_os os;
  core::heap h;
  // With a purger thread (whose passes come after the test): due mappings
  // wait for a decay pass or a new mapping.
  explicit heap_over_fake_os(dropalloc::backing memory, bool purger = true)
      : h(dropalloc::testing::with_fake_os(&os, memory, purger)) {}
};

}  // namespace

TEST_CASE("a freed mapping under the floor keeps its pages in the cache") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    heap_over_fake_os t(memory);
    void* a = allocate_large(t.h, kSmall);
    fill(a, kSmall, 5);
    const std::uint64_t released = t.os.released_bytes.load();
    t.h.deallocate(a);
    CHECK(t.os.released_bytes.load() == released);  // kept: nothing handed back
    const int maps = t.os.arena_maps.load();
    void* b = allocate_large(t.h, kSmall);
    CHECK(b == a);  // the cached mapping, reused
    CHECK(t.os.arena_maps.load() == maps);
    // Asked for zeros, it gets them, though its pages held the old block's.
    t.h.deallocate(b);
    core::alloc_error err = core::alloc_error::none;
    void* z = t.h.allocate_zeroed(kSmall, 16, &err);
    REQUIRE(z == a);
    CHECK(all_zero(z, kSmall));
    t.h.deallocate(z);
    CHECK(t.h.stats().blocks_live == 0);
  }
}

TEST_CASE("a freed mapping past the bound is due: a reuse that comes first takes it with its pages") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    heap_over_fake_os t(memory);
    void* a = allocate_large(t.h, kBig);
    fill(a, kBig, 6);
    const std::uint64_t released = t.os.released_bytes.load();
    t.h.deallocate(a);  // nothing else live: the bound is the floor, a third of kBig
    CHECK(t.os.released_bytes.load() == released);  // due, not yet handed back
    const int maps = t.os.arena_maps.load();
    core::alloc_error err = core::alloc_error::none;
    void* z = t.h.allocate_zeroed(kBig, 16, &err);
    REQUIRE(z == a);
    CHECK(t.os.released_bytes.load() == released);  // reused warm: no release at all
    CHECK(t.os.arena_maps.load() == maps);
    CHECK(all_zero(z, kBig));  // its pages held the old block's: cleared
    t.h.decay(false);  // no longer due: out of the cache, live
    CHECK(t.os.released_bytes.load() == released);
    t.h.deallocate(z);
    CHECK(t.h.stats().blocks_live == 0);
  }
}

TEST_CASE("a due mapping's pages go back before a new large mapping, or at a decay pass; reused, it reads zero") {
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    for (bool by_decay : {false, true}) {
      INFO("by decay " << by_decay);
      heap_over_fake_os t(memory);
      void* a = allocate_large(t.h, kBig);
      fill(a, kBig, 6);
      const std::uint64_t released = t.os.released_bytes.load();
      const int unmaps = t.os.arena_unmaps.load();
      t.h.deallocate(a);
      CHECK(t.os.released_bytes.load() == released);
      void* other = nullptr;
      if (by_decay) {
        t.h.decay(false);
      } else {
        other = allocate_large(t.h, 2 * kBig);  // too big to reuse a: a new mapping
        CHECK(other != a);
      }
      CHECK(t.os.released_bytes.load() - released == kBig);
      CHECK(t.os.arena_unmaps.load() == unmaps);  // still mapped: in the cache
      const int maps = t.os.arena_maps.load();
      void* b = allocate_large(t.h, kBig);
      CHECK(b == a);
      CHECK(t.os.arena_maps.load() == maps);
      CHECK(all_zero(b, kBig));
      fill(b, kBig, 7);
      CHECK(holds(b, kBig, 7));
      t.h.deallocate(b);
      t.h.decay(false);  // due again (alone past the floor, or past half of 2 * kBig)
      core::alloc_error err = core::alloc_error::none;
      void* z = t.h.allocate_zeroed(kBig, 16, &err);  // released: zeros, nothing cleared
      REQUIRE(z == a);
      CHECK(all_zero(z, kBig));
      t.h.deallocate(z);
      if (other != nullptr) t.h.deallocate(other);
      CHECK(t.h.stats().blocks_live == 0);
    }
  }
}

TEST_CASE("without a purger thread a due mapping's pages go back as it is freed") {
  // No decay pass would come unless the program asked (trim).
  for (auto memory : {dropalloc::backing::ordinary, dropalloc::backing::droppable}) {
    heap_over_fake_os t(memory, /*purger=*/false);
    void* a = allocate_large(t.h, kBig);
    fill(a, kBig, 6);
    const std::uint64_t released = t.os.released_bytes.load();
    t.h.deallocate(a);
    CHECK(t.os.released_bytes.load() - released == kBig);
    CHECK(t.h.has_decay_work());  // still cached: unmapped after the decay time
    void* z = allocate_large(t.h, kBig);
    CHECK(z == a);
    CHECK(all_zero(z, kBig));
    t.h.deallocate(z);
    CHECK(t.h.stats().blocks_live == 0);
  }
}

TEST_CASE("the bound follows the bytes live in large blocks: half of them") {
  heap_over_fake_os t(dropalloc::backing::ordinary);
  // 4 * kBig live. The first freed leaves 3 * kBig live, a bound of 1.5 * kBig:
  // it keeps its pages. The second leaves 2 * kBig, a bound of kBig, which
  // the first already fills: it is due, and its pages go back at the decay.
  void* p[4];
  for (auto& q : p) {
    q = allocate_large(t.h, kBig);
    fill(q, kBig, 8);
  }
  const std::uint64_t released = t.os.released_bytes.load();
  t.h.deallocate(p[0]);
  CHECK(t.os.released_bytes.load() == released);
  t.h.deallocate(p[1]);
  CHECK(t.os.released_bytes.load() == released);
  t.h.decay(false);
  CHECK(t.os.released_bytes.load() - released == kBig);
  // Reused, the one that kept its pages holds what it held; the other reads zero.
  void* a = allocate_large(t.h, kBig);
  void* b = allocate_large(t.h, kBig);
  CHECK(((a == p[0] && b == p[1]) || (a == p[1] && b == p[0])));
  CHECK(holds(p[0], kBig, 8));
  CHECK(all_zero(p[1], kBig));
  for (void* q : {a, b, p[2], p[3]}) t.h.deallocate(q);
  CHECK(t.h.stats().blocks_live == 0);
}

TEST_CASE("a mapping that grew in place counts its new size as live") {
  heap_over_fake_os t(dropalloc::backing::ordinary);
  void* a = allocate_large(t.h, kBig);
  if (!t.h.grow_large_in_place(a, 3 * kBig)) {
    MESSAGE("the block could not grow in place here: the growth case was not exercised");
    t.h.deallocate(a);
    return;
  }
  // 3 * kBig live: the bound is 1.5 * kBig, so a freed kBig block keeps its pages.
  void* b = allocate_large(t.h, kBig);
  fill(b, kBig, 9);
  const std::uint64_t released = t.os.released_bytes.load();
  t.h.deallocate(b);
  CHECK(t.os.released_bytes.load() == released);
  t.h.deallocate(a);
  CHECK(t.h.stats().blocks_live == 0);
}

TEST_CASE("a fork while another thread releases a due mapping's pages: the child has it back in its cache") {
  heap_over_fake_os t(dropalloc::backing::ordinary);
  void* a = allocate_large(t.h, kBig);
  fill(a, kBig, 4);
  t.h.deallocate(a);  // due: alone past the floor
  struct window {
    std::atomic<int> inside{0};
    std::atomic<bool> go{false};
    static void hook(void* ctx) {
      auto* w = static_cast<window*>(ctx);
      w->inside.store(1);
      while (!w->go.load()) std::this_thread::yield();
    }
  } w;
  t.os.on_release = &window::hook;
  t.os.on_release_ctx = &w;
  std::thread releaser([&] { t.h.decay(false); });  // takes a out of its slot, then the hook waits
  while (w.inside.load() == 0) std::this_thread::yield();
  const int maps = t.os.arena_maps.load();
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The releasing thread does not exist here: without the fork handler a
    // would stay out of the cache (and mapped) for good.
    t.os.on_release = nullptr;
    core::alloc_error err = core::alloc_error::none;
    void* z = t.h.allocate_zeroed(kBig, 16, &err);  // cached as kept: cleared
    const bool back = z == a && t.os.arena_maps.load() == maps && all_zero(z, kBig);
    if (z != nullptr) t.h.deallocate(z);
    t.h.trim();
    _exit(back && t.h.stats().bytes_mapped == 0 ? 0 : 1);
  }
  w.go.store(true);
  releaser.join();
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The parent's releaser put it back itself, released.
  t.os.on_release = nullptr;
  void* b = allocate_large(t.h, kBig);
  CHECK(b == a);
  CHECK(all_zero(b, kBig));
  t.h.deallocate(b);
  CHECK(t.h.stats().blocks_live == 0);
}
