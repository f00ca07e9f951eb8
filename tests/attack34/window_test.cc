// Attack round 34 (81d5a07): the closing check of seal()/seal_many()/
// write_and_seal() now runs after the seal's read section is closed.
//
// The window between the seal's publication and that check cannot be entered
// from a hook placed after the section closes (there is no OS call there), so
// these tests act from the last OS call a seal makes inside its section:
// os::arena_backing(), asked by seal_in_section right after seal_block
// released the stripe and before the advice. What a hook does there happens
// before the closing check, exactly what another thread could do in the
// window (free, reallocate, re-seal, write_and_seal, drop a page). The
// sealer's answer must then be stale/dropped, never intact, and no later
// check() may call the returned generation intact over other contents.
//
// A second group runs trim() on another thread, released the instant the
// sealer's section ends (wait_for_readers), so the unmap of the block's arena
// (and a new arena mapped at its address) races the closing check.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::backing;
using dropalloc::block_state;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

// Runs `hook` once, at the next arena_backing() call of the thread that armed it.
struct hook_os : dropalloc::testing::forwarding_os {
  explicit hook_os(os::os_interface& r) : forwarding_os(r) {}
  std::function<void()> hook;
  std::atomic<std::thread::id> armed_for{};
  backing arena_backing() noexcept override {
    if (hook && armed_for.load() == std::this_thread::get_id()) {
      armed_for.store(std::thread::id{});
      auto h = std::move(hook);
      hook = nullptr;
      h();
    }
    return real.arena_backing();
  }
  // Each arena unmap, counted (the trim case: did one start before the
  // seal returned, i.e. while its closing check could run?).
  std::atomic<std::uint64_t> unmaps{0};
  void unmap_arena(void* p, std::size_t b) noexcept override {
    unmaps.fetch_add(1);
    real.unmap_arena(p, b);
  }
  void arm(std::function<void()> h) {
    hook = std::move(h);
    armed_for.store(std::this_thread::get_id());
  }
};

struct fixture {
  os::fake_os fake;
  hook_os hk{fake};
  core::heap h;
  explicit fixture(backing b, bool tc = true) : h(options(b, tc)) {}
  core::heap_options options(backing b, bool tc) {
    fake.reported_backing = b;
    core::heap_options o = dropalloc::testing::with_os_no_decay(&hk);
    o.thread_cache = tc;
    return o;
  }
  void* alloc(std::size_t n) {
    core::alloc_error err{};
    void* p = h.allocate(n, 16, &err);
    REQUIRE(p != nullptr);
    return p;
  }
};

// A copy taken, then check(): if intact, the copy must be what `seed` wrote.
// Inside a read section, and only if p is still a live block (its arena is
// then mapped until the section ends).
void require_truth(core::heap& h, void* p, std::size_t n, std::uint64_t gen, std::size_t seed) {
  if (gen == 0) return;
  std::vector<unsigned char> copy(n);
  block_state st;
  {
    core::read_section rs;
    if (h.usable_size(p) < n) return;
    std::memcpy(copy.data(), p, n);
    st = h.check(p, gen);
  }
  if (st == block_state::intact) {
    std::vector<unsigned char> want(n);
    fill(want.data(), n, seed);
    CHECK_MESSAGE(std::memcmp(copy.data(), want.data(), n) == 0, "intact at " << gen << " over other contents");
  }
}

constexpr std::size_t kSizes[] = {64, 48, 1000, 3000, 4096, 8192, 200000};

// The seal under test, by `how`: 0 seal(), 1 write_and_seal() of src[0, n),
// 2 seal_many() of the one block; expected 0: any generation.
block_state seal_by(core::heap& h, int how, void* p, const unsigned char* src, std::size_t n, std::uint64_t* g,
                    std::uint64_t expected = 0) {
  if (how == 0) return h.seal(p, g, expected);
  if (how == 1) return h.write_and_seal(p, src, n, g, expected);
  void* blocks[1] = {p};
  const std::uint64_t exp[1] = {expected};
  block_state a[1];
  h.seal_many(blocks, 1, a, g, exp);
  return a[0];
}

}  // namespace

TEST_CASE("window: block freed, handed out again, written and sealed before the closing check") {
  for (backing b : {backing::droppable, backing::private_fallback}) {
    for (std::size_t size : kSizes) {
      for (int how = 0; how < 3; ++how) {  // 0 seal, 1 write_and_seal, 2 seal_many
        CAPTURE(static_cast<int>(b));
        CAPTURE(size);
        CAPTURE(how);
        fixture f(b);
        void* p = f.alloc(size);
        const std::size_t n = f.h.usable_size(p);
        std::vector<unsigned char> src(n);
        fill(src.data(), n, 1);
        std::memcpy(p, src.data(), n);
        const std::uint64_t g0 = f.h.generation(p);
        void* q = nullptr;
        std::uint64_t gq = 0;
        f.hk.arm([&] {
          f.h.deallocate(p);
          q = f.alloc(size);
          fill(q, f.h.usable_size(q), 2);
          REQUIRE(f.h.seal(q, &gq) == block_state::intact);
        });
        std::uint64_t g = 0;
        const block_state ans = seal_by(f.h, how, p, src.data(), n, &g, g0);
        MESSAGE("size " << size << " how " << how << ": reused address " << (q == p) << ", answer "
                        << std::string(dropalloc::to_string(ans)) << " gen " << g << " new gen " << gq);
        CHECK(ans != block_state::intact);
        CHECK(g != gq);
        CHECK(f.h.check(p, g) != block_state::intact);
        require_truth(f.h, p, n, g, 1);
        if (q != nullptr) f.h.deallocate(q);
      }
    }
  }
}

TEST_CASE("window: the block re-sealed (and rewritten alike) by another seal before the closing check") {
  for (backing b : {backing::droppable, backing::private_fallback}) {
    for (std::size_t size : kSizes) {
      for (int how = 0; how < 3; ++how) {
        CAPTURE(size);
        CAPTURE(how);
        fixture f(b);
        void* p = f.alloc(size);
        const std::size_t n = f.h.usable_size(p);
        std::vector<unsigned char> src(n);
        fill(src.data(), n, 5);
        std::memcpy(p, src.data(), n);
        std::uint64_t g_in = 0;
        f.hk.arm([&] {
          // Another sealer: the block's contents unchanged, a new generation.
          if (how == 1) {
            REQUIRE(f.h.write_and_seal(p, src.data(), n, &g_in) == block_state::intact);
          } else {
            REQUIRE(f.h.seal(p, &g_in) == block_state::intact);
          }
        });
        std::uint64_t g = 0;
        const block_state ans = seal_by(f.h, how == 2 ? 2 : 0, p, nullptr, n, &g);  // outer: seal_many or seal
        // The outer seal's generation was moved on by the inner one: stale.
        CHECK(g_in > g);
        CHECK(ans == block_state::stale);
        CHECK(f.h.check(p, g_in) == block_state::intact);
        require_truth(f.h, p, n, g, 5);
        require_truth(f.h, p, n, g_in, 5);
      }
    }
  }
}

TEST_CASE("window: a page dropped before the closing check") {
  for (backing b : {backing::droppable, backing::private_fallback}) {
    for (std::size_t size : kSizes) {
      for (int how = 0; how < 3; ++how) {
        CAPTURE(size);
        CAPTURE(how);
        fixture f(b);
        void* p = f.alloc(size);
        const std::size_t n = f.h.usable_size(p);
        fill(p, n, 9);
        f.hk.arm([&] {
          // The last page of the block's data (shared pages included).
          auto* last = static_cast<unsigned char*>(p) + n - 1;
          auto* page = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(last) & ~std::uintptr_t{4095});
          REQUIRE(f.h.drop_for_testing(page, 4096) == 0);
        });
        std::uint64_t g = 0;
        std::vector<unsigned char> src(n);  // what p holds: write_and_seal writes it again
        fill(src.data(), n, 9);
        const block_state ans = seal_by(f.h, how, p, src.data(), n, &g);
        CHECK(ans == block_state::dropped);
        CHECK(f.h.check(p, g) == block_state::dropped);
      }
    }
  }
}

TEST_CASE("window: trim() unmaps the arena (and maps a new one there) as the closing check runs") {
  // The hook (on the sealer, inside its read section) hands the block to a
  // second thread, which frees it (the arena's only block: with no decay
  // delay the free itself releases the empty arena) and runs trim(); both
  // wait for the sealer's read section, so the unmap comes the instant the
  // section closes, while the sealer runs its closing check. The hook waits
  // until the block reads freed (generation() 0), so the check must not say
  // intact. The second thread then maps a new arena (at the same address
  // where the fake OS manages it) and seals a block there, perhaps at the old
  // block's address.
  //
  // (The free is not made in the hook itself: a free on the sealing thread,
  // inside its own read section, may unmap the arena at once, since a thread
  // never waits for its own section; advise_later then reads the unmapped
  // header. Only reachable from inside the seal, i.e. an OS callback or a
  // signal handler; not this round's change. README.md.)
  for (std::size_t size : {std::size_t{64}, std::size_t{4096}, std::size_t{200000}}) {
    os::fake_os fake;
    fake.reported_backing = backing::droppable;
    fake.reuse_unmapped_arena = true;
    hook_os hk(fake);
    core::heap_options o = dropalloc::testing::with_os_no_decay(&hk);
    o.thread_cache = false;
    o.empty_arena_decay_ms = 0;
    core::heap h(o);
    std::atomic<void*> to_free{nullptr};
    std::atomic<bool> stop{false};
    std::atomic<void*> newp{nullptr};
    std::atomic<std::uint64_t> newg{0};
    int reused = 0, rounds = 0, intact = 0, unmapped_before_return = 0;
    std::thread trimmer([&] {
      while (!stop.load()) {
        void* victim = to_free.exchange(nullptr);
        if (victim == nullptr) {
          std::this_thread::yield();
          continue;
        }
        h.deallocate(victim);
        h.trim();
        core::alloc_error err{};
        void* q = h.allocate(size, 16, &err);
        fill(q, h.usable_size(q), 77);
        std::uint64_t g = 0;
        h.seal(q, &g);
        newg.store(g);
        newp.store(q);
      }
    });
    for (int round = 0; round < 1500; ++round) {
      core::alloc_error err{};
      void* p = h.allocate(size, 16, &err);
      REQUIRE(p != nullptr);
      const std::size_t n = h.usable_size(p);
      fill(p, n, 3);
      const std::uint64_t g0 = h.generation(p);
      hk.arm([&] {
        to_free.store(p);
        while (h.generation(p) != 0) std::this_thread::yield();
      });
      std::uint64_t g = 0;
      const std::uint64_t unmaps_before = hk.unmaps.load();
      const block_state ans = (round % 2 == 0) ? h.seal(p, &g, g0) : h.seal(p, &g);
      if (hk.unmaps.load() != unmaps_before) ++unmapped_before_return;
      if (ans == block_state::intact) ++intact;
      CHECK(ans != block_state::intact);
      while (newp.load() == nullptr) std::this_thread::yield();
      void* q = newp.exchange(nullptr);
      const std::uint64_t gq = newg.load();
      if (q == p) ++reused;
      CHECK(g != gq);
      CHECK(h.check(p, g) != block_state::intact);
      CHECK(h.check(q, gq) == block_state::intact);
      h.deallocate(q);
      h.trim();
      ++rounds;
    }
    stop.store(true);
    trimmer.join();
    MESSAGE("size " << size << ": " << rounds << " rounds, block address reused by the new arena in " << reused
                    << ", arena unmapped before the seal returned (after its section closed) in "
                    << unmapped_before_return << ", intact answers " << intact);
  }
}
