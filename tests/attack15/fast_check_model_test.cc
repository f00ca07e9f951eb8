// check()'s fast path (8dd615c) against a shadow model, and its edges.
//
// Edges (deterministic): pointers the masked map lookup lands on an entry
// for (p + k * 2^47, p with high bits, interior pointers, one past the last
// block of a 64 KiB arena, inside the 4 MiB entry past a small arena's
// span), large blocks, straddling blocks, a handle of an arena unmapped by
// trim() whose address is mapped again for another arena (fake OS reuse),
// the first check of a thread (no reader slot yet), checks nested in a read
// section (from a seal hook).
//
// Model (threads): mutators allocate, write, seal / write_and_seal /
// seal_rewritten / seal_all, rewrite and free blocks of every kind under an
// exclusive lock per slot; readers copy a slot under a shared lock and check:
// `intact` must mean the copy equals the model. Every freed or rewritten life
// is kept and checked all along: never `intact`. A dropper zeroes pages of
// live blocks, a trimmer unmaps empty arenas, a prober asks about wild
// pointers, all concurrently. Nothing may crash.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "allocator/os/os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {


void fill(void* p, std::size_t n, std::uint64_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 7;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    // Some all-zero stretches (pages without a witness), some zero prefixes.
    const bool zero = (seed % 5 == 1 && (i / 4096) % 3 == 1) || (i % 4096) < (seed % 977);
    b[i] = zero ? 0 : static_cast<unsigned char>(x >> (8 * (i % 8)));
  }
}

const std::size_t kEdgeSizes[] = {8, 48, 64, 96, 1000, 4096, 6000, 12000, 65536, 200000, 262144, 300000, 5u << 20};

}  // namespace

TEST_CASE("fast path edges: wild pointers, last blocks, large, unmapped and reused arenas") {
  dropalloc::os::fake_os os;
  os.reuse_unmapped_arena = true;
  dropalloc::resource_options o;
  o.os = &os;
  o.empty_arena_decay_ms = 0;
  droppable_resource r(o);
  // First check of a thread without a slot: the slow path.
  std::thread([&] { CHECK(r.check(nullptr, 1) == block_state::foreign); }).join();
  for (std::size_t size : kEdgeSizes) {
    CAPTURE(size);
    std::vector<block_ref> bs;
    for (int k = 0; k < 6; ++k) {
      bs.push_back(r.allocate_block(size));
      fill(bs.back().ptr, size, size + k);
      REQUIRE(r.seal(bs.back()) == block_state::intact);
    }
    for (auto& b : bs) {
      const auto a = reinterpret_cast<std::uintptr_t>(b.ptr);
      CHECK(r.check(b) == block_state::intact);
      CHECK(r.check(b.ptr, b.generation + 1) != block_state::intact);
      CHECK(r.check(b.ptr, b.generation - 1) != block_state::intact);
      CHECK(r.check(b.ptr, 0) != block_state::intact);
      for (std::uintptr_t hi : {std::uintptr_t{1} << 47, std::uintptr_t{1} << 48, std::uintptr_t{1} << 56,
                                std::uintptr_t{1} << 63, ~std::uintptr_t{0} << 47}) {
        CHECK(r.check(reinterpret_cast<void*>(a + hi), b.generation) != block_state::intact);
        CHECK(r.check(reinterpret_cast<void*>(a ^ hi), b.generation) != block_state::intact);
        CHECK(r.check(reinterpret_cast<void*>(a - hi), b.generation) != block_state::intact);
      }
      for (std::uintptr_t d : {1, 7}) {  // not block starts (blocks are 8-aligned)
        CHECK(r.check(reinterpret_cast<void*>(a + d), b.generation) != block_state::intact);
        CHECK(r.check(reinterpret_cast<void*>(a - d), b.generation) != block_state::intact);
      }
      // Every address of the block's 4 MiB map entry, page by page, never
      // intact except the block start itself (with its generation).
      const std::uintptr_t entry = a & ~((std::uintptr_t{1} << 22) - 1);
      for (std::uintptr_t q = entry; q < entry + (std::uintptr_t{1} << 22); q += 4096 - 8) {
        bool start = false;  // another block of the batch may share the generation
        for (auto& o : bs) start |= reinterpret_cast<std::uintptr_t>(o.ptr) == q;
        if (start) continue;
        CHECK(r.check(reinterpret_cast<void*>(q), b.generation) != block_state::intact);
      }
    }
    // Free them all, trim (arenas unmapped), allocate again: with the fake's
    // address reuse the new arenas sit where the old ones were.
    std::vector<block_ref> old = bs;
    for (auto& b : bs) r.deallocate(b.ptr, size);
    (void)r.trim();
    std::vector<block_ref> again;
    for (int k = 0; k < 6; ++k) {
      again.push_back(r.allocate_block(size));
      fill(again.back().ptr, size, size + k);  // same bytes as the old lives
      REQUIRE(r.seal(again.back()) == block_state::intact);
    }
    for (auto& b : old) CHECK(r.check(b) != block_state::intact);
    for (auto& b : again) CHECK(r.check(b) == block_state::intact);
    for (auto& b : again) r.deallocate(b.ptr, size);
    for (auto& b : old) CHECK(r.check(b) != block_state::intact);
    for (auto& b : again) CHECK(r.check(b) != block_state::intact);
    (void)r.trim();
  }
  // A check nested in a read section: from the barrier hook, inside seal().
  struct nest {
    droppable_resource* r;
    block_ref other;
    int asked = 0;
    static void hook(void* ctx) {
      auto* n = static_cast<nest*>(ctx);
      ++n->asked;
      CHECK(n->r->check(n->other) == block_state::intact);
    }
  } n{&r, {}, 0};
  n.other = r.allocate_block(100);
  fill(n.other.ptr, 100, 3);
  REQUIRE(r.seal(n.other) == block_state::intact);
  os.on_settle = &nest::hook;
  os.on_settle_ctx = &n;
  block_ref b = r.allocate_block(6000);
  fill(b.ptr, 6000, 4);
  CHECK(r.seal(b) == block_state::intact);
  CHECK(n.asked >= 1);
  os.on_settle = nullptr;
  r.deallocate(b.ptr, 6000);
  r.deallocate(n.other.ptr, 100);
}

namespace {

struct slot {
  std::shared_mutex m;
  block_ref b{nullptr, 0};
  std::size_t size = 0;
  std::vector<unsigned char> want;  // the model: what the current life holds
  bool sealed = false;              // the model says a seal of `want` stands
  int how = 0;                      // the last sealing call (diagnostics)
  bool known = true;                // the block held `want` right after its last seal
};

std::size_t pick_size(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return 8 + rng() % 120;
    case 1: return 3000 + rng() % 6000;  // straddling
    case 2: return 4096 * (1 + rng() % 4);
    case 3: return 60000 + rng() % 200000;  // big classes
    case 4: return 262145 + rng() % 600000;  // large
    default: return 1 + rng() % 4096;
  }
}

double seconds_to_run() {
  const char* s = std::getenv("MODEL_SECONDS");
  return s != nullptr ? std::atof(s) : 6.0;
}

}  // namespace

TEST_CASE("model: intact only over the model's bytes, under drops, trims, seal_all and wild probes") {
  droppable_resource r;
  MESSAGE("backing: ", std::string(dropalloc::to_string(r.arena_backing())));
  constexpr int kSlots = 48;
  std::vector<slot> slots(kSlots);
  std::mutex grave_m;
  std::vector<block_ref> grave;
  std::atomic<bool> stop{false};
  std::shared_mutex writing;  // seal_all only while no thread writes an unsealed block
  std::atomic<long> refused{0}, intact_checks{0}, bad{0}, bad_grave{0}, bad_grave_trim{0}, bad_probe{0}, ops{0};

  // seal() certifies what it reads: a page a neighbour's drop zeroed before
  // it is sealed as zeros (documented). The model then cannot say what an
  // intact check vouches for: mark it unknown (s.sealed = false: not asserted).
  // After a translation barrier: read on a CPU that cached the page before a
  // drop in flight, the bytes would look as written while the seal read zeros.
  auto verify = [&](slot& s) {
    REQUIRE(dropalloc::os::translation_barrier() == 0);
    s.known = std::memcmp(s.b.ptr, s.want.data(), s.size) == 0;
  };
  auto mutator = [&](int t) {
    std::mt19937_64 rng(100 + t);
    while (!stop.load(std::memory_order_relaxed)) {
      std::shared_lock writer(writing);
      slot& s = slots[rng() % kSlots];
      std::unique_lock lock(s.m);
      ops.fetch_add(1, std::memory_order_relaxed);
      if (s.b.ptr == nullptr) {
        s.size = pick_size(rng);
        s.b = r.allocate_block(s.size);
        s.want.assign(s.size, 0);
        fill(s.want.data(), s.size, rng());
        s.sealed = false;
        s.known = true;
        switch (rng() % 3) {
          case 0: {
            std::memcpy(s.b.ptr, s.want.data(), s.size);
            s.sealed = r.seal(s.b) == block_state::intact;
            s.how = 1;
            verify(s);
            break;
          }
          case 1: {
            s.sealed = r.write_and_seal(s.b, s.want.data(), s.size) == block_state::intact;
            s.how = 2;
            // write_and_seal zero-fills to usable_size; the model covers s.size.
            break;
          }
          default: {
            std::memcpy(s.b.ptr, s.want.data(), s.size);
            s.how = 3;  // left live: the sealer's seal_all may seal it
            break;
          }
        }
        continue;
      }
      const int what = static_cast<int>(rng() % 10);
      if (what < 4) {  // free
        const std::uint64_t before = r.generation(s.b.ptr);
        r.deallocate(s.b);
        {
          // After the free: a reader must not find a grave handle still current.
          std::lock_guard g(grave_m);
          if (grave.size() < 20000) grave.push_back(s.b);
        }
        if (before != s.b.generation && refused.fetch_add(1) < 5) {
          MESSAGE("model handle out of date at free: handle ", s.b.generation, " block ", before, " how ", s.how);
        }
        s.b = {nullptr, 0};
        continue;
      }
      // A rewrite: the old life's handle goes to the grave if its contents
      // change (a re-seal moves the generation).
      const block_ref old = s.b;
      std::vector<unsigned char> next(s.size);
      fill(next.data(), s.size, rng());
      const block_state now = r.check(s.b);
      if (what < 7) {
        block_state got = r.write_and_seal(s.b, next.data(), s.size);
        s.want = next;
        s.sealed = got == block_state::intact;
        s.how = 4;
      } else if (now == block_state::dropped) {
        std::memcpy(s.b.ptr, next.data(), s.size);
        s.want = next;
        s.sealed = r.seal_rewritten(s.b) == block_state::intact;
        s.how = 5;
      } else {
        std::memcpy(s.b.ptr, next.data(), s.size);
        s.want = next;
        block_state got = r.seal(s.b);
        s.sealed = got == block_state::intact;
        s.how = 6;
      }
      verify(s);
      if (s.b.generation != old.generation) {
        std::lock_guard g(grave_m);
        if (grave.size() < 20000) grave.push_back(old);
      }
      if (s.b.generation != r.generation(s.b.ptr) && refused.fetch_add(1) < 5) {
        MESSAGE("model handle out of date after rewrite: handle ", s.b.generation, " block ",
                r.generation(s.b.ptr), " how ", s.how);
      }
    }
  };

  auto reader = [&](int t) {
    std::mt19937_64 rng(200 + t);
    std::vector<unsigned char> copy;
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % kSlots];
      std::shared_lock lock(s.m);
      if (s.b.ptr == nullptr) continue;
      const block_ref b = s.b;
      // Also a handle read fresh now (a later life of a re-sealed block).
      const block_ref fresh{b.ptr, r.generation(b.ptr)};
      copy.resize(s.size);
      std::memcpy(copy.data(), b.ptr, s.size);
      for (int which = 0; which < 2; ++which) {
        const block_ref& h = which == 0 ? b : fresh;
          if (!s.known) continue;
        if (r.check(h) == block_state::intact) {
          intact_checks.fetch_add(1, std::memory_order_relaxed);
          if (std::memcmp(copy.data(), s.want.data(), s.size) != 0) {
            if (bad.fetch_add(1) < 5) {
              std::size_t i = 0;
              while (copy[i] == s.want[i]) ++i;
              std::size_t zeros = 0;
              for (std::size_t j = 0; j < s.size; ++j) zeros += copy[j] == 0 && s.want[j] != 0;
              // Which side was fooled: after a barrier, does the check still
              // say intact, and does the block still read as the copy did?
              REQUIRE(dropalloc::os::translation_barrier() == 0);
              const block_state again = r.check(h);
              const bool still_zero = std::memcmp(b.ptr, copy.data(), s.size) == 0;
              MESSAGE("after a barrier: check -> ", std::string(dropalloc::to_string(again)),
                      ", block reads as the copy did: ", std::string(still_zero ? "yes" : "no"));
              MESSAGE("intact over wrong bytes: size ", s.size, " at ", b.ptr, " first difference at ", i,
                      " how ", s.how, " handle ", std::string(which == 0 ? "held" : "fresh"), " gen ", h.generation,
                      " bytes zero instead of data ", zeros, " usable ", r.usable_size(b.ptr));
            }
          }
        }
      }
      if (rng() % 4 == 0) {
        std::lock_guard g(grave_m);
        for (int k = 0; k < 8 && !grave.empty(); ++k) {
          const block_ref& old = grave[rng() % grave.size()];
          if (r.check(old) == block_state::intact) {
            if (bad_grave.fetch_add(1) < 5) {
              MESSAGE("grave handle intact: ", old.ptr, " gen ", old.generation, " now gen ", r.generation(old.ptr));
            }
          }
        }
      }
    }
  };

  auto sealer = [&] {
    std::mt19937_64 rng(600);
    while (!stop.load(std::memory_order_relaxed)) {
      {
        std::unique_lock all(writing);
        // seal_all() seals what a block holds, zeros of a page dropped
        // before it included (documented): until verify() has looked,
        // readers must not take those blocks' seals as the model's bytes.
        for (auto& s : slots) {
          std::unique_lock lock(s.m);
          if (s.b.ptr != nullptr && s.how == 3) s.known = false;
        }
        (void)r.seal_all();
        for (auto& s : slots) {
          std::unique_lock lock(s.m);
          if (s.b.ptr != nullptr && s.how == 3) verify(s);
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 2000));
    }
  };

  auto dropper = [&] {
    std::mt19937_64 rng(300);
    while (!stop.load(std::memory_order_relaxed)) {
      slot& s = slots[rng() % kSlots];
      std::shared_lock lock(s.m);  // the block stays ours while we drop its page
      if (s.b.ptr == nullptr) continue;
      const std::size_t off = rng() % s.size;
      (void)r.drop_for_testing(static_cast<unsigned char*>(s.b.ptr) + off, 1);
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    }
  };

  auto trimmer = [&] {
    std::mt19937_64 rng(400);
    while (!stop.load(std::memory_order_relaxed)) {
      (void)r.trim();
      // Graves checked while their arenas go: never intact, never a crash.
      {
        std::lock_guard g(grave_m);
        for (int k = 0; k < 16 && !grave.empty(); ++k) {
          const block_ref& g = grave[rng() % grave.size()];
          if (r.check(g) == block_state::intact) {
            if (bad_grave_trim.fetch_add(1) < 5) {
              MESSAGE("grave handle intact: ", g.ptr, " gen ", g.generation, " now gen ", r.generation(g.ptr));
            }
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    }
  };

  auto prober = [&] {
    std::mt19937_64 rng(500);
    while (!stop.load(std::memory_order_relaxed)) {
      block_ref g{nullptr, 0};
      {
        std::lock_guard lk(grave_m);
        if (!grave.empty()) g = grave[rng() % grave.size()];
      }
      const auto a = reinterpret_cast<std::uintptr_t>(g.ptr);
      // Never a block start (blocks are 8-byte aligned): none may read intact.
      const std::uintptr_t wild[] = {a + (std::uintptr_t{1} << 47), a | (std::uintptr_t{1} << 63),
                                     a - (std::uintptr_t{1} << 47), a + 1, a + 3, a - 1,
                                     static_cast<std::uintptr_t>(rng()) | 1,
                                     (rng() & ((std::uintptr_t{1} << 47) - 1)) | 1};
      for (std::uintptr_t w : wild) {
        if (r.check(reinterpret_cast<void*>(w), g.generation) == block_state::intact) {
          bad_probe.fetch_add(1);
        }
      }
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) threads.emplace_back(mutator, t);
  for (int t = 0; t < 2; ++t) threads.emplace_back(reader, t);
  threads.emplace_back(dropper);
  threads.emplace_back(trimmer);
  threads.emplace_back(prober);
  threads.emplace_back(sealer);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds_to_run()));
  stop = true;
  for (auto& t : threads) t.join();
  MESSAGE("ops ", ops.load(), ", intact checks ", intact_checks.load(), ", graves ", grave.size());
  CHECK(bad.load() == 0);
  CHECK(bad_grave.load() == 0);
  CHECK(bad_grave_trim.load() == 0);
  CHECK(bad_probe.load() == 0);
  for (auto& s : slots) {
    if (s.b.ptr != nullptr) r.deallocate(s.b);
  }
}
