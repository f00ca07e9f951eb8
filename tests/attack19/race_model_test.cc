// Threads racing seal_many: two owners write fresh blocks and re-seal kept
// ones in batches through handles (and pointers), publishing each handle
// once its batch returned; a dropper zeroes pages of published blocks (and
// so of their unpublished neighbours being written); a sweeper runs
// seal_all and check_all; two readers copy published blocks and check.
// Oracle: every copy judged intact equals the contents its generation was
// sealed over. On a fake OS (both backings) and on the real one (the
// _fallback target forces the private fallback). Arenas are never unmapped
// (no trim, no decay, class sizes only): readers read blocks they do not own.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "tests/attack19/common.h"

using dropalloc::backing;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using namespace attack19;

namespace {

const std::size_t kSizes[] = {24, 100, 700, 4096, 5000, 3 * 4096 + 5, 40000};
constexpr std::size_t kSlots = 192;
constexpr std::size_t kMax = 40000;

struct published {
  std::mutex m;
  block_ref ref;  // null: none
  std::size_t size = 0;
  std::uint64_t seed = 0;
};

struct counters {
  std::atomic<std::uint64_t> batches{0}, sealed{0}, copies{0}, intact_copies{0}, drops{0}, wrong{0}, fixed{0};
};

double seconds() {
  const char* e = std::getenv("MODEL_SECONDS");
  return e != nullptr ? std::atof(e) : 2.0;
}

void model(droppable_resource& r, std::uint64_t seed) {
  std::vector<published> slots(kSlots);
  counters c;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> next_seed{seed << 32};
  auto owner = [&](unsigned who) {
    std::mt19937_64 rng(seed * 17 + who);
    std::vector<unsigned char> want(kMax);
    while (!stop.load()) {
      // A batch: some of this owner's slots, each replaced (a fresh block,
      // written before the call) or kept (re-sealed as it is).
      std::vector<std::size_t> chosen;
      const std::size_t k = 1 + rng() % 150;
      for (std::size_t j = 0; j < k; ++j) {
        std::size_t i = (rng() % (kSlots / 2)) * 2 + who;
        bool dup = false;
        for (std::size_t x : chosen) dup |= x == i;
        if (!dup) chosen.push_back(i);
      }
      std::vector<block_ref> refs(chosen.size());
      std::vector<std::size_t> sizes(chosen.size());
      std::vector<std::uint64_t> seeds(chosen.size());
      std::vector<bool> fresh(chosen.size());
      for (std::size_t j = 0; j < chosen.size(); ++j) {
        published& p = slots[chosen[j]];
        std::unique_lock<std::mutex> g(p.m);
        if (p.ref.ptr == nullptr || rng() % 3 != 0) {
          // Replace: unpublish, free, allocate, write.
          block_ref old = p.ref;
          std::size_t old_size = p.size;
          p.ref = block_ref{};
          g.unlock();
          if (old.ptr != nullptr) r.deallocate(old.ptr, old_size);
          sizes[j] = kSizes[rng() % std::size(kSizes)];
          seeds[j] = next_seed++;
          refs[j] = r.allocate_block(sizes[j]);
          fill(refs[j].ptr, sizes[j], seeds[j]);
          fresh[j] = true;
        } else {
          refs[j] = p.ref;  // kept: published, re-sealed unchanged
          sizes[j] = p.size;
          seeds[j] = p.seed;
        }
      }
      std::vector<block_state> got(refs.size());
      if (rng() % 4 == 0) {
        // Through pointers: then the handles are read afterwards.
        std::vector<void*> ptrs(refs.size());
        for (std::size_t j = 0; j < refs.size(); ++j) ptrs[j] = refs[j].ptr;
        r.seal_many(std::span<void* const>(ptrs), std::span<block_state>(got));
        for (std::size_t j = 0; j < refs.size(); ++j) refs[j].generation = r.generation(refs[j].ptr);
      } else {
        r.seal_many(std::span<block_ref>(refs), std::span<block_state>(got));
      }
      ++c.batches;
      for (std::size_t j = 0; j < refs.size(); ++j) {
        // A page dropped before the seal is sealed as zeros: the owner looks
        // and rewrites (verified) what does not hold its contents.
        fill(want.data(), sizes[j], seeds[j]);
        bool ok = got[j] == block_state::intact && std::memcmp(refs[j].ptr, want.data(), sizes[j]) == 0 &&
                  r.check(refs[j]) == block_state::intact;
        if (got[j] == block_state::intact) ++c.sealed;
        if (!ok) {
          ++c.fixed;
          block_ref b{refs[j].ptr, r.generation(refs[j].ptr)};
          if (r.write_and_seal(b, want.data(), sizes[j]) == block_state::intact) refs[j] = b;
        }
        published& p = slots[chosen[j]];
        std::lock_guard<std::mutex> g(p.m);
        p.ref = refs[j];
        p.size = sizes[j];
        p.seed = seeds[j];
      }
    }
  };
  auto reader = [&](unsigned who) {
    std::mt19937_64 rng(seed * 31 + who);
    std::vector<unsigned char> copy(kMax), want(kMax);
    while (!stop.load()) {
      published& p = slots[rng() % kSlots];
      block_ref ref;
      std::size_t size;
      std::uint64_t s;
      {
        std::lock_guard<std::mutex> g(p.m);
        ref = p.ref;
        size = p.size;
        s = p.seed;
      }
      if (ref.ptr == nullptr) continue;
      std::memcpy(copy.data(), ref.ptr, size);
      ++c.copies;
      if (r.check(ref) != block_state::intact) continue;
      ++c.intact_copies;
      fill(want.data(), size, s);
      if (std::memcmp(copy.data(), want.data(), size) != 0) ++c.wrong;
    }
  };
  auto dropper = [&] {
    std::mt19937_64 rng(seed * 43);
    while (!stop.load()) {
      published& p = slots[rng() % kSlots];
      void* at = nullptr;
      {
        std::lock_guard<std::mutex> g(p.m);
        if (p.ref.ptr != nullptr) at = static_cast<char*>(p.ref.ptr) + rng() % p.size;
      }
      if (at != nullptr) {
        drop_page_of(r, at);
        ++c.drops;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };
  auto sweeper = [&] {
    while (!stop.load()) {
      (void)r.seal_all();
      (void)r.check_all();
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  };
  std::vector<std::thread> ts;
  ts.emplace_back(owner, 0u);
  ts.emplace_back(owner, 1u);
  ts.emplace_back(reader, 0u);
  ts.emplace_back(reader, 1u);
  ts.emplace_back(dropper);
  ts.emplace_back(sweeper);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds()));
  stop = true;
  for (auto& t : ts) t.join();
  MESSAGE("batches " << c.batches.load() << " sealed " << c.sealed.load() << " rewritten " << c.fixed.load() << " copies " << c.copies.load()
                     << " intact " << c.intact_copies.load() << " drops " << c.drops.load());
  CHECK(c.wrong.load() == 0);
  for (auto& p : slots) {
    if (p.ref.ptr != nullptr) r.deallocate(p.ref.ptr, p.size);
  }
}

dropalloc::resource_options quiet(dropalloc::resource_options o) {
  o.background_decay = false;
  o.empty_arena_decay_ms = 1000000000;
  return o;
}

}  // namespace

TEST_CASE("seal_many raced by frees, drops, seal_all and readers: fake OS, droppable") {
  steered_os os;
  droppable_resource r(quiet(on(os, backing::droppable)));
  model(r, 1);
}

TEST_CASE("seal_many raced by frees, drops, seal_all and readers: fake OS, private fallback") {
  steered_os os;
  droppable_resource r(quiet(on(os, backing::private_fallback)));
  model(r, 2);
}

TEST_CASE("seal_many raced by frees, drops, seal_all and readers: real OS") {
  droppable_resource r(quiet(dropalloc::resource_options{}));
  MESSAGE("droppable: " << r.stats().droppable);
  model(r, 3);
}
