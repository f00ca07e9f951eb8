// A seal must not be published while some CPU may still read the block's
// pages through a translation from before a drop (allocator/os/os.h, "stale
// translations"). Linux clears a page's entry first and flushes the other
// CPUs' TLBs later; a block written and sealed in between, in a page faulted
// in anew, was seen by readers on another CPU as the page's old contents (an
// older life of the block), with non-zero witness words: `intact` over the
// wrong bytes. Every seal now calls os::translation_barrier() after the last
// write of the contents and before the seal is published.
//
// The first cases check that order deterministically, through a fake OS that
// looks at the block when the barrier is asked for. The last one races real
// drops against writers and readers on this kernel: without the barrier
// (which it runs first, and only reports on) readers see older contents; with
// it, never.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/fake_resource.h"
#include "allocator/os/os.h"
#include "tests/pattern.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using dropalloc::testing::fill;

namespace {

// What the fake OS's hook sees of the block being sealed at each barrier.
struct watch {
  droppable_resource* res = nullptr;
  block_ref block;                      // the handle a reader holds: its generation before the seal
  const unsigned char* want = nullptr;  // the bytes the seal is about, if known
  std::size_t n = 0;
  int barriers = 0;
  int written_before = 0;   // barriers that found the contents already in place
  int published_after = 0;  // barriers that found the old handle not yet intact
  static void hook(void* ctx) {
    auto* w = static_cast<watch*>(ctx);
    ++w->barriers;
    if (w->want == nullptr || std::memcmp(w->block.ptr, w->want, w->n) == 0) ++w->written_before;
    if (w->res->check(w->block.ptr, w->block.generation) != block_state::intact) ++w->published_after;
  }
};

struct fake_resource {
  dropalloc::os::fake_os os;
  droppable_resource res;
  watch w;
  explicit fake_resource(dropalloc::backing b) : res(dropalloc::testing::on_fake_os(os, b)) {
    w.res = &res;
    os.on_settle = &watch::hook;
    os.on_settle_ctx = &w;
  }
  // Watches the next seal of b, made to hold want[0, n) (want: unknown).
  void expect(const block_ref& b, const unsigned char* want, std::size_t n) {
    w.block = b;
    w.want = want;
    w.n = n;
    w.barriers = w.written_before = w.published_after = 0;
  }
  void require_one_barrier_in_order() const {
    CHECK(w.barriers == 1);
    CHECK(w.written_before == w.barriers);
    CHECK(w.published_after == w.barriers);
  }
};

// One page shared with neighbours, a page-straddling block, several pages
// (their advice is deferred where deferral is on), and a large block.
constexpr std::size_t kSizes[] = {64, 6000, 16 * 1024, 256 * 1024};
constexpr dropalloc::backing kBackings[] = {dropalloc::backing::droppable, dropalloc::backing::private_fallback};

// Runs fn(resource, block, size, scratch of that size) for a fresh block of
// every size, on both backings; frees the block afterwards.
template <class Fn>
void for_each_block(Fn fn) {
  for (auto backing : kBackings) {
    fake_resource f(backing);
    for (std::size_t size : kSizes) {
      CAPTURE(size);
      std::vector<unsigned char> src(size);
      block_ref b = f.res.allocate_block(size);
      fn(f, b, size, src);
      f.res.deallocate(b.ptr, size);
    }
  }
}

}  // namespace

TEST_CASE("write_and_seal: the barrier comes after the bytes are written and before the seal is published") {
  for_each_block([](fake_resource& f, block_ref& b, std::size_t size, std::vector<unsigned char>& src) {
    for (int round = 0; round < 3; ++round) {  // live -> sealed, then sealed -> sealed twice
      fill(src.data(), size, round + 1);
      f.expect(b, src.data(), size);
      REQUIRE(f.res.write_and_seal(b, src.data(), size) == block_state::intact);
      f.require_one_barrier_in_order();
    }
  });
}

TEST_CASE("seal, seal_rewritten, seal_all: a barrier before each seal is published") {
  for_each_block([](fake_resource& f, block_ref& b, std::size_t size, std::vector<unsigned char>& src) {
    fill(b.ptr, size, 7);
    std::memcpy(src.data(), b.ptr, size);
    f.expect(b, src.data(), size);
    REQUIRE(f.res.seal(b) == block_state::intact);  // live -> sealed
    f.require_one_barrier_in_order();

    fill(b.ptr, size, 8);  // written after its seal: re-sealed
    std::memcpy(src.data(), b.ptr, size);
    f.expect(b, src.data(), size);
    REQUIRE(f.res.seal(b) == block_state::intact);
    f.require_one_barrier_in_order();

    REQUIRE(f.res.drop_for_testing(b.ptr, size) == 0);  // dropped, then rewritten whole
    CHECK(f.res.check(b.ptr, b.generation) == block_state::dropped);
    fill(b.ptr, size, 9);
    std::memcpy(src.data(), b.ptr, size);
    f.expect(b, src.data(), size);
    REQUIRE(f.res.seal_rewritten(b) == block_state::intact);
    f.require_one_barrier_in_order();

    block_ref c = f.res.allocate_block(size);  // seal_all seals a live block (only that one)
    fill(c.ptr, size, 10);
    std::memcpy(src.data(), c.ptr, size);
    f.expect(c, src.data(), size);
    REQUIRE(f.res.seal_all() == 1);
    f.require_one_barrier_in_order();
    CHECK(f.res.check(c.ptr, c.generation) == block_state::intact);
    f.res.deallocate(c.ptr, size);
  });
}

TEST_CASE("seal_all: one barrier for every block it seals, before the first is published") {
  for (auto backing : kBackings) {
    CAPTURE(static_cast<int>(backing));
    fake_resource f(backing);
    std::vector<block_ref> blocks;
    for (std::size_t size : kSizes) {
      for (int k = 0; k < 3; ++k) {
        blocks.push_back(f.res.allocate_block(size));
        fill(blocks.back().ptr, size, k + 20);
      }
    }
    f.expect(blocks.front(), nullptr, 0);
    REQUIRE(f.res.seal_all() == blocks.size());
    CHECK(f.w.barriers == 1);
    CHECK(f.w.published_after == 1);
    for (auto& b : blocks) CHECK(f.res.check(b.ptr, b.generation) == block_state::intact);
    for (std::size_t i = 0; i < blocks.size(); ++i) f.res.deallocate(blocks[i].ptr, kSizes[i / 3]);
  }
}

TEST_CASE("no barrier, no seal: every seal flavour refuses and takes the block as lost") {
  for_each_block([](fake_resource& f, block_ref& b, std::size_t size, std::vector<unsigned char>& src) {
    fill(b.ptr, size, 30);
    REQUIRE(f.res.seal(b) == block_state::intact);
    const block_ref sealed = b;

    f.os.settle_error = ENOMEM;
    fill(b.ptr, size, 31);  // written after its seal; the re-seal cannot be made
    block_ref resealing = b;
    CHECK(f.res.seal(resealing) == block_state::dropped);
    CHECK(f.res.check(sealed.ptr, sealed.generation) == block_state::stale);  // its contents changed
    block_ref now{b.ptr, f.res.generation(b.ptr)};
    CHECK(f.res.check(now) == block_state::dropped);
    CHECK(f.res.seal(now) == block_state::dropped);  // a retry does not take it back

    fill(src.data(), size, 32);
    CHECK(f.res.write_and_seal(now, src.data(), size) == block_state::dropped);
    CHECK(f.res.check(now) == block_state::dropped);

    block_ref c = f.res.allocate_block(size);
    fill(c.ptr, size, 33);
    CHECK(f.res.seal_all() == 0);
    CHECK(f.res.check(c.ptr, c.generation) == block_state::unsealed);
    block_ref live = c;
    CHECK(f.res.seal(live) == block_state::dropped);  // live -> dropped: nothing to vouch with
    CHECK(f.res.seal_all() == 0);                     // and seal_all() leaves it so

    f.os.settle_error = 0;  // the barrier works again: a rewrite revives both
    CHECK(f.res.write_and_seal(now, src.data(), size) == block_state::intact);
    CHECK(std::memcmp(b.ptr, src.data(), size) == 0);
    CHECK(f.res.seal(live) == block_state::dropped);
    CHECK(f.res.seal_rewritten(live) == block_state::intact);
    f.res.deallocate(c.ptr, size);
    b = now;
  });
}

// ---- on this kernel ------------------------------------------------------------
// Writers write a slot (two pages of MAP_DROPPABLE memory, or private memory
// where the kernel has none), read it back and publish its version, all under
// the slot's lock; readers read it under the same lock and expect that version
// or zeros (a drop); a dropper zaps slots and the whole region with
// MADV_DONTNEED. Older non-zero contents seen by a reader are what a stale
// translation shows. The allocator is not involved: this is the kernel
// behaviour the barrier is for.

namespace {

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

struct race_result {
  long ops = 0, older = 0;
};

race_result race_drops(bool barrier, double seconds) {
  constexpr std::size_t kPage = 4096, kSlot = 2 * kPage, kSlots = 24, kSpan = std::size_t{4} << 20;
  void* raw = mmap(nullptr, 2 * kSpan, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) raw = mmap(nullptr, 2 * kSpan, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(raw != MAP_FAILED);
  // A 4 MiB-aligned region: dropping all of it empties whole page tables.
  auto* base = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(raw) + kSpan - 1) & ~(kSpan - 1));
  madvise(base, kSpan, MADV_NOHUGEPAGE);
  std::vector<std::mutex> locks(kSlots);
  std::vector<std::uint64_t> version(kSlots, 0);
  std::atomic<std::uint64_t> next{1};
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0}, older{0};
  auto slot = [&](std::size_t k) { return reinterpret_cast<std::uint64_t*>(base + k * kSlot); };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t k = rng() % kSlots;
        std::lock_guard guard(locks[k]);
        std::uint64_t* q = slot(k);
        if (rng() % 10 < 4) {
          const std::uint64_t v = next.fetch_add(1);
          for (std::size_t i = 0; i < kSlot / 8; ++i) __atomic_store_n(q + i, v, __ATOMIC_RELAXED);
          if (barrier) dropalloc::os::translation_barrier();
          bool whole = true;
          for (std::size_t i = 0; i < kSlot / 8; ++i) whole &= __atomic_load_n(q + i, __ATOMIC_RELAXED) == v;
          version[k] = whole ? v : 0;
        } else if (version[k] != 0) {
          for (std::size_t page = 0; page < kSlot / kPage; ++page) {
            const std::uint64_t got = __atomic_load_n(q + page * kPage / 8 + 5, __ATOMIC_RELAXED);
            if (got != 0 && got != version[k]) ++older;
          }
        }
        ++ops;
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937 rng(99);
    while (!stop.load(std::memory_order_relaxed)) {
      if (rng() % 8 == 0) {
        madvise(base, kSpan, MADV_DONTNEED);
      } else {
        madvise(slot(rng() % kSlots), kSlot, MADV_DONTNEED);
      }
      std::this_thread::yield();
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  munmap(raw, 2 * kSpan);
  return race_result{ops.load(), older.load()};
}

}  // namespace

TEST_CASE("on this kernel: a reader sees older contents after a drop, unless the writer made a barrier") {
  const race_result without = race_drops(false, 2);
  MESSAGE("without the barrier: ", without.ops, " operations, ", without.older,
          " reads of older contents (0 is possible: the window is short)");
  const race_result with = race_drops(true, 2);
  MESSAGE("with the barrier: ", with.ops, " operations, ", with.older, " reads of older contents");
  CHECK(with.ops > 0);
  CHECK(with.older == 0);
}
