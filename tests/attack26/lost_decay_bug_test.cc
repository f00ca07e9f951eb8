// BUG (f062246): a due mapping that release_due_large() takes out of its
// cache slot while a decay pass runs comes back into the cache with nobody
// left to decay it.
//
// heap.cc release_due_large(): the due mapping leaves large_cache_[] under
// segments_lock_, its pages are released OUTSIDE the lock, then it is put
// back into a free slot (keeping its old cached time). If a decay pass runs
// in that window (the purger thread, or a free's decay_class_on_free, or
// trim), decay.cc heap::decay() finds the large cache empty
// (release_large_cache sets no `more`), release_due_large() finds
// large_cache_due_ == 0, so decay() ends with decay_pending_ = false. The
// re-insertion at heap.cc (`large_cache_[slot] = c;` in the second locked
// block of release_due_large) does not call note_decay_work(). Result: a
// mapping sits in the large cache with has_decay_work() == false; the purger
// thread (purger.cc run(): ticks only while decay_background_heaps() reports
// work) goes to sleep and the mapping is never unmapped while the program
// makes no further call that notes decay work: the "decay time hands the
// cache back" promise (heap.h, heap_options::background_decay) is broken,
// the heap's mapped bytes stay up by the mapping's span for good. If the
// OS refused the release (release_pages != 0) the mapping is re-inserted
// with its pages, so they stay resident for good too.
//
// Before the change a mapping entered the cache only in cache_large(),
// which calls note_decay_work() under the lock: no such window.
//
// Interleaving (thread A = caller of allocate_large, P = purger):
//   A: free(X 16 MiB)       -> cache_large: X due, note_decay_work (pending)
//   A: malloc(300 KiB)      -> reuse_large: X does not fit (span/4 > request)
//                           -> release_due_large: X out of slot, unlock,
//                              release_pages(X) ... (window)
//   P: decay(false)         -> release_large_cache: no slot used -> more=false
//                              release_due_large: due count 0 -> nothing
//                              decay_pending_ = false
//   A:                      ... re-insert X, no note_decay_work
//   => X cached forever, has_decay_work() == false, purger asleep.
//
// The fake OS layer's release hook opens the window deterministically.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack26/hook_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::testing::allocate_large;

namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = kKiB * kKiB;

struct window {
  core::heap* h = nullptr;
  std::thread::id owner;  // only releases made by this thread open the window
  std::atomic<bool> armed{false};
  std::atomic<bool> decay_ran{false};
  bool background = false;
  static void hook(void* ctx) {
    auto* w = static_cast<window*>(ctx);
    if (std::this_thread::get_id() != w->owner || !w->armed.exchange(false)) return;
    if (!w->background) {
      // Another thread's decay pass, run to completion inside the window.
      std::thread t([w] { (void)w->h->decay(false); });
      t.join();
      w->decay_ran = true;
      return;
    }
    // The real purger thread: wait until its pass has cleared the pending flag.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (w->h->has_decay_work() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    w->decay_ran = !w->h->has_decay_work();
  }
};

}  // namespace

TEST_CASE("a due mapping put back after a concurrent decay pass is left with no decay pending") {
  os::fake_os o;
  core::heap h(dropalloc::testing::with_fake_os(&o, dropalloc::backing::ordinary, /*purger=*/true));
  window w;
  w.h = &h;
  w.owner = std::this_thread::get_id();
  o.on_release = &window::hook;
  o.on_release_ctx = &w;
  void* x = allocate_large(h, 16 * kMiB);
  std::memset(x, 0x5a, 16 * kMiB);
  h.deallocate(x);  // alone past the 4 MiB floor: due
  REQUIRE(h.has_decay_work());
  w.armed = true;
  void* q = allocate_large(h, 300 * kKiB);  // too small for x: releases the due x first
  REQUIRE(w.decay_ran.load());
  // x is back in the cache (the next 16 MiB request gets it) ...
  // ... but nothing is left for a decay pass to do, as far as the heap knows.
  CHECK_MESSAGE(h.has_decay_work(), "a mapping sits in the large cache with no decay pending");
  void* again = allocate_large(h, 16 * kMiB);
  CHECK(again == x);  // it was cached indeed
  h.deallocate(again);
  h.deallocate(q);
}

TEST_CASE("with the purger thread: the mapping is never unmapped after the race (control: without it, it is)") {
  for (bool race : {false, true}) {
    INFO("race: " << race << " (0: control, 1: purger pass inside the release window)");
    os::fake_os o;
    core::heap_options opt = dropalloc::testing::with_fake_os(&o, dropalloc::backing::ordinary);
    opt.empty_arena_decay_ms = 40;
    opt.background_decay = true;
    core::heap h(opt);
    window w;
    w.h = &h;
    w.background = true;
    w.owner = std::this_thread::get_id();
    o.on_release = &window::hook;
    o.on_release_ctx = &w;
    void* x = allocate_large(h, 16 * kMiB);
    std::memset(x, 0x5a, 16 * kMiB);
    void* q = allocate_large(h, 300 * kKiB);  // live throughout: its free would note work again
    const int unmaps0 = o.arena_unmaps.load();
    h.deallocate(x);  // due; starts the purger (10 ms ticks)
    w.armed = race;
    void* q2 = allocate_large(h, 300 * kKiB);  // releases x (the hook waits for a purger pass)
    if (race) REQUIRE(w.decay_ran.load());
    // Ten decay times with no further call: the purger should unmap x.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    CHECK_MESSAGE(o.arena_unmaps.load() == unmaps0 + 1, "the cached 16 MiB mapping was never unmapped");
    o.on_release = nullptr;
    h.deallocate(q);
    h.deallocate(q2);
  }
}

TEST_CASE("malloc_trim's pass inside the window: after trim the mapping is still cached, no decay pending") {
  os::fake_os o;
  core::heap h(dropalloc::testing::with_fake_os(&o, dropalloc::backing::ordinary, /*purger=*/true));
  struct trim_window {
    core::heap* h;
    std::thread::id owner;
    bool armed = true;
    static void hook(void* ctx) {
      auto* w = static_cast<trim_window*>(ctx);
      if (std::this_thread::get_id() != w->owner || !w->armed) return;
      w->armed = false;
      std::thread t([w] { (void)w->h->trim(); });  // another thread's malloc_trim(0)
      t.join();
    }
  } w{&h, std::this_thread::get_id()};
  o.on_release = &trim_window::hook;
  o.on_release_ctx = &w;
  void* x = allocate_large(h, 16 * kMiB);
  h.deallocate(x);  // due
  void* q = allocate_large(h, 300 * kKiB);
  REQUIRE(!w.armed);
  // trim() returned before x came back: x is cached, and nothing will decay it.
  CHECK(h.stats().bytes_mapped == 16 * kMiB + 300 * kKiB);
  CHECK_MESSAGE(h.has_decay_work(), "x sits in the cache after the trim with no decay pending");
  h.deallocate(q);
}

// The same race when the OS refuses the release (release_pages != 0): the
// mapping comes back with its pages, so its 16 MiB stay resident for good.
TEST_CASE("a refused release inside the race: the pages stay resident, the purger never comes") {
  os::fake_os fake;
  dropalloc::testing::hook_os o(fake);
  core::heap_options opt = dropalloc::testing::with_os(&o);
  opt.empty_arena_decay_ms = 40;
  opt.background_decay = true;
  core::heap h(opt);
  struct refuse_window {
    core::heap* h;
    dropalloc::testing::hook_os* o;
    void* target = nullptr;
    bool ran = false;
    static void hook(void* ctx, void* p, std::size_t) {
      auto* w = static_cast<refuse_window*>(ctx);
      if (p != w->target || w->ran) return;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      while (w->h->has_decay_work() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      w->ran = !w->h->has_decay_work();
      w->o->fail_releases = 1;  // this release is refused
    }
  } w{&h, &o};
  o.ctx = &w;
  o.on_release = &refuse_window::hook;
  void* x = allocate_large(h, 16 * kMiB);
  std::memset(x, 0x5a, 16 * kMiB);
  void* q = allocate_large(h, 300 * kKiB);
  const auto maps0 = o.maps.load();
  h.deallocate(x);  // due; starts the purger
  w.target = x;
  void* q2 = allocate_large(h, 300 * kKiB);
  REQUIRE(w.ran);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK_MESSAGE(o.maps.load() == maps0, "x (16 MiB, pages resident) was never unmapped");
  o.on_release = nullptr;
  h.deallocate(q);
  h.deallocate(q2);
}
