// Threads seal, write_and_seal, seal_rewritten, free, trim, seal_all and
// drop in two droppable heaps and one private-fallback heap that share one
// fake OS with address reuse; drop_on_seal zeroes every page advised (a
// kernel taking advised pages at once). Checked all along:
//  - every seal_pages() lies inside a live arena of the heap that advises it
//    (checking_os), so queued advice never reaches a freed/unmapped range,
//    another heap's arena or a hole between arenas;
//  - the fallback heap's live, unsealed blocks keep their bytes (no advice
//    ever covers their pages);
//  - check() never says intact over bytes other than the model's (each
//    thread owns its blocks: no race in the model; a block whose bytes were
//    already wrong right after its seal, zeroed before it was sealed, is
//    marked unknown, as documented for seal()).
// Also heaps made and destroyed with entries queued, in the same storage.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack16/checking_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

void fill(unsigned char* b, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 11;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    b[i] = static_cast<unsigned char>((x >> (8 * (i % 8))) | 1);
  }
}

std::size_t pick_size(std::mt19937_64& rng) {
  switch (rng() % 5) {
    case 0: return 8 + rng() % 200;
    case 1: return 3000 + rng() % 6000;
    case 2: return 4096 * (1 + rng() % 4);
    case 3: return 262145 + rng() % 400000;  // large, under 256 pages: queued
    default: return 1 + rng() % 4096;
  }
}

struct owned {
  int heap = 0;  // 0, 1 droppable; 2 fallback
  block_ref b{nullptr, 0};
  std::size_t n = 0;
  std::vector<unsigned char> want;
  bool sealed = false;  // the model vouches for want under b.generation
};

// Whether o is still live and unsealed after its bytes were found changed.
// Another thread's seal_all() may seal o between a check that said unsealed
// and the comparison (seal_all takes every live block), and the fake drops
// a sealed block's pages at once (drop_on_seal): then o reads sealed or
// dropped here, and its bytes were allowed to go. A block that lost bytes
// while it stayed unsealed reads unsealed here too.
bool still_unsealed(droppable_resource& r, const owned& o) { return r.check(o.b) == block_state::unsealed; }

double seconds() {
  const char* s = std::getenv("MODEL_SECONDS");
  return s != nullptr ? std::atof(s) : 8.0;
}

}  // namespace

TEST_CASE("deferred advice under threads: right pages only, fallback bytes kept, intact only over the model") {
  dropalloc::os::fake_os inner;
  inner.reuse_unmapped_arena = true;
  inner.drop_on_seal = true;
  attack16::arena_registry reg;
  attack16::checking_os v0(inner, reg, dropalloc::backing::droppable);
  attack16::checking_os v1(inner, reg, dropalloc::backing::droppable);
  attack16::checking_os vp(inner, reg, dropalloc::backing::private_fallback);
  attack16::checking_os vt(inner, reg, dropalloc::backing::droppable);
  droppable_resource h0(attack16::options_for(&v0)), h1(attack16::options_for(&v1)), hp(attack16::options_for(&vp));
  droppable_resource* heaps[3] = {&h0, &h1, &hp};
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0}, intact{0}, bad{0}, fallback_lost{0}, unknown{0}, churn{0}, drops{0};

  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    std::vector<owned> mine(24);
    std::vector<unsigned char> buf;
    while (!stop.load(std::memory_order_relaxed)) {
      owned& o = mine[rng() % mine.size()];
      ops.fetch_add(1, std::memory_order_relaxed);
      droppable_resource& r = *heaps[o.heap];
      if (o.b.ptr == nullptr) {
        o.heap = static_cast<int>(rng() % 3);
        droppable_resource& nr = *heaps[o.heap];
        o.n = pick_size(rng);
        o.b = nr.allocate_block(o.n);
        o.want.resize(o.n);
        fill(o.want.data(), o.n, rng());
        std::memcpy(o.b.ptr, o.want.data(), o.n);
        o.sealed = false;
        if (rng() % 3 != 0) {
          o.sealed = nr.seal(o.b) == block_state::intact;
          if (o.sealed && std::memcmp(o.b.ptr, o.want.data(), o.n) != 0) {
            o.sealed = false;  // zeroed before the seal read it: sealed as zeros (documented)
            unknown.fetch_add(1, std::memory_order_relaxed);
          }
        }
        continue;
      }
      switch (rng() % 12) {
        case 0:
        case 1: {  // free
          if (o.heap == 2 && r.check(o.b) != block_state::intact && r.check(o.b) != block_state::dropped &&
              std::memcmp(o.b.ptr, o.want.data(), o.n) != 0 && still_unsealed(r, o)) {
            // live and unsealed in the fallback: its bytes are ordinary memory
            if (fallback_lost.fetch_add(1) < 3) MESSAGE("fallback block lost its bytes while unsealed: ", o.b.ptr);
          }
          r.deallocate(o.b);
          o.b = {nullptr, 0};
          break;
        }
        case 2: {  // write_and_seal
          fill(o.want.data(), o.n, rng());
          o.sealed = r.write_and_seal(o.b, o.want.data(), o.n) == block_state::intact;
          break;
        }
        case 3: {  // rewrite: unsealed first by the call for live blocks; dropped ones via seal_rewritten
          const block_state st = r.check(o.b);
          if (st == block_state::dropped) {
            fill(o.want.data(), o.n, rng());
            std::memcpy(o.b.ptr, o.want.data(), o.n);
            o.sealed = r.seal_rewritten(o.b) == block_state::intact;
            if (o.sealed && std::memcmp(o.b.ptr, o.want.data(), o.n) != 0) {
              o.sealed = false;
              unknown.fetch_add(1, std::memory_order_relaxed);
            }
          } else if (st == block_state::unsealed) {
            o.sealed = r.seal(o.b) == block_state::intact;
            if (o.sealed && std::memcmp(o.b.ptr, o.want.data(), o.n) != 0) {
              o.sealed = false;
              unknown.fetch_add(1, std::memory_order_relaxed);
            }
          }
          break;
        }
        case 4: {  // the fallback heap's unsealed blocks keep their bytes
          if (o.heap == 2 && r.check(o.b) == block_state::unsealed &&
              std::memcmp(o.b.ptr, o.want.data(), o.n) != 0 && still_unsealed(r, o)) {
            if (fallback_lost.fetch_add(1) < 3) MESSAGE("fallback block lost its bytes while unsealed: ", o.b.ptr);
          }
          break;
        }
        case 5:
          // Droppable heaps only. On the fallback a forced drop zeroes what
          // no kernel would (its memory is never dropped), on a page that
          // other threads' unsealed blocks of that heap may share: they would
          // then read as "lost while unsealed", which case 4 looks for. The
          // fake drops whole pages, and only from a page-aligned address: the
          // page of a random byte of the block, which other threads' blocks
          // may share (their owners find out at their next check).
          if (o.heap != 2 && rng() % 8 == 0) {
            const auto byte = reinterpret_cast<std::uintptr_t>(o.b.ptr) + rng() % o.n;
            if (r.drop_for_testing(reinterpret_cast<void*>(byte & ~std::uintptr_t{4095}), 1) == 0) {
              drops.fetch_add(1, std::memory_order_relaxed);
            }
          }
          break;
        case 6:
          if (rng() % 16 == 0) (void)r.trim();
          break;
        case 7:
          if (rng() % 32 == 0) {
            // seal_all may seal other threads' live blocks: their models
            // stay unsealed (no claim), ours too (we re-read below).
            (void)r.seal_all();
          }
          break;
        default: {  // copy and check
          buf.resize(o.n);
          std::memcpy(buf.data(), o.b.ptr, o.n);
          if (r.check(o.b) == block_state::intact) {
            intact.fetch_add(1, std::memory_order_relaxed);
            if (o.sealed && std::memcmp(buf.data(), o.want.data(), o.n) != 0 && bad.fetch_add(1) < 5) {
              MESSAGE("intact over wrong bytes: heap ", o.heap, " size ", o.n, " at ", o.b.ptr);
            }
          }
          break;
        }
      }
    }
    for (auto& o : mine) {
      if (o.b.ptr != nullptr) heaps[o.heap]->deallocate(o.b);
    }
  };

  // Heaps made and destroyed with entries queued, in the same storage.
  auto churner = [&] {
    std::mt19937_64 rng(77);
    std::optional<droppable_resource> d;
    while (!stop.load(std::memory_order_relaxed)) {
      d.emplace(attack16::options_for(&vt));
      for (int i = 0; i < 10; ++i) {
        const std::size_t n = pick_size(rng);
        block_ref b = d->allocate_block(n);
        std::memset(b.ptr, 1 + i, n);
        (void)d->seal(b);
        if (rng() % 3 == 0) d->deallocate(b);
      }
      d.reset();
      churn.fetch_add(1, std::memory_order_relaxed);
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker, t);
  threads.emplace_back(churner);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds()));
  stop = true;
  for (auto& t : threads) t.join();
  MESSAGE("ops ", ops.load(), " intact checks ", intact.load(), " unknown ", unknown.load(), " forced drops ",
          drops.load(), " heaps churned ", churn.load(), " seal_pages calls ", reg.calls, " fake seals ",
          inner.seals.load());
  for (auto& v : reg.violations) MESSAGE(v);
  CHECK(reg.violations.empty());
  CHECK(bad.load() == 0);
  CHECK(fallback_lost.load() == 0);
}
