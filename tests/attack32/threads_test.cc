// Promises 1 and 5 under threads, over the real OS layer (MAP_DROPPABLE where
// the kernel has it), every advice recorded (recording_os.h).
//
// Sealer threads allocate, fill, seal, re-seal, check and free small blocks
// (16 B .. 4 KiB, straddling ones too) of one heap, so that seals of many
// threads meet in the advice queue (its try_lock, the immediate advice when
// it is busy, the "covered by the last entry" rule across threads), while a
// trimmer thread runs trim() and decay(true): empty arenas are unmapped (and
// new ones mapped) while give_advice reads the state bytes of other blocks
// of an entry's arena. Truth: a copy taken before a check that answered
// `intact` equals what was sealed. Coverage after the end, for the blocks
// still sealed: every page advised after the block's seal began.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
using dropalloc::block_state;
using dropalloc::testing::fill;

namespace {

constexpr std::size_t kSizes[] = {16, 48, 64, 1000, 2304, 3000, 4096};

struct blk {
  void* p = nullptr;
  std::size_t size = 0;
  bool sealed = false;
  std::uint64_t gen = 0;
  std::uint64_t since = 0;
  std::size_t seed = 0;
};

double seconds() {
  const char* e = std::getenv("ATTACK32_SECONDS");
  return e != nullptr ? std::atof(e) : 3.0;
}

}  // namespace

TEST_CASE("threads: seals of many threads, trim() and decay() racing: truth held, queue given, pages advised") {
  dropalloc::testing::recording_os rec(dropalloc::os::system_os());
  core::heap_options o = dropalloc::testing::with_os(&rec);
  o.empty_arena_decay_ms = 0;  // trim/decay unmap every empty arena at once
  core::heap h(o);
  MESSAGE("backing: " << static_cast<int>(h.arena_backing()) << " (droppable = "
                      << static_cast<int>(dropalloc::backing::droppable) << ")");

  constexpr int kThreads = 3;
  std::atomic<bool> stop{false};
  std::atomic<long> lies{0}, bad_seals{0}, seals{0}, trims{0};
  std::vector<std::vector<blk>> kept(kThreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      dropalloc::testing::rng r{dropalloc::testing::derived_seed(3232, t)};
      std::vector<blk> bs(48);
      std::vector<unsigned char> copy(4096), want(4096);
      auto seal = [&](blk& b) {
        b.since = rec.mark();
        std::uint64_t g = 0;
        const block_state st = h.seal(b.p, &g);
        seals.fetch_add(1, std::memory_order_relaxed);
        if (st != block_state::intact) {
          bad_seals.fetch_add(1);
          b.sealed = false;
          return;
        }
        b.sealed = true;
        b.gen = g;
      };
      while (!stop.load(std::memory_order_relaxed)) {
        blk& b = bs[r.below(bs.size())];
        if (b.p == nullptr) {
          core::alloc_error err{};
          b.p = h.allocate(kSizes[r.below(std::size(kSizes))], 16, &err);
          if (b.p == nullptr) continue;
          b.size = h.usable_size(b.p);
          b.seed = r.next() % 1000;
          fill(b.p, b.size, b.seed);
          b.sealed = false;
          if (r.chance(80)) seal(b);
          continue;
        }
        const unsigned op = static_cast<unsigned>(r.below(100));
        if (op < 35) {
          h.deallocate(b.p);
          b = blk{};
        } else if (op < 55) {
          b.seed = r.next() % 1000;
          fill(b.p, b.size, b.seed);
          seal(b);
        } else if (op < 70) {
          seal(b);  // re-seal, unchanged
        } else if (b.sealed) {
          std::memcpy(copy.data(), b.p, b.size);  // read, then check
          if (h.check(b.p, b.gen) == block_state::intact) {
            fill(want.data(), b.size, b.seed);
            if (std::memcmp(copy.data(), want.data(), b.size) != 0) lies.fetch_add(1);
          }
        }
      }
      kept[t] = bs;
    });
  }
  std::thread trimmer([&] {
    int i = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (i++ % 2 == 0) {
        h.trim();
      } else {
        h.decay(true);
      }
      trims.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds()));
  stop = true;
  for (auto& t : ts) t.join();
  trimmer.join();
  MESSAGE(seals.load() << " seals, " << trims.load() << " trims/decays, " << rec.events.size() << " advice calls");
  CHECK(lies.load() == 0);
  CHECK(bad_seals.load() == 0);  // nothing drops these pages here

  for (auto& bs : kept) {
    for (blk& b : bs) {
      if (b.p != nullptr && !b.sealed) {
        h.deallocate(b.p);
        b = blk{};
      }
    }
  }
  CHECK(h.seal_all() == 0);
  long uncovered = 0, still = 0;
  for (auto& bs : kept) {
    for (blk& b : bs) {
      if (b.p == nullptr) continue;
      ++still;
      CHECK(h.check(b.p, b.gen) == block_state::intact);
      CHECK(dropalloc::testing::holds(b.p, b.size, b.seed));
      const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(b.p);
      if (h.arena_backing() == dropalloc::backing::droppable) {
        for (std::uintptr_t pg = a / 4096; pg <= (a + b.size - 1) / 4096; ++pg) {
          if (!rec.advised(pg * 4096, b.since)) ++uncovered;
        }
      }
      h.deallocate(b.p);
    }
  }
  MESSAGE(still << " blocks still sealed at the end; " << uncovered << " of their pages never advised");
  CHECK(uncovered == 0);
}
