// Holds: a surviving heap's blocks in arenas whose fold entries other heaps'
// arenas (64 GiB away, several windows) keep taking, giving up and taking
// again, from several threads. Every answer about the survivor's blocks
// (owns, usable_size, generation, check, seal) is checked against a shadow
// model, and pointers into the churning heaps (live, freed, or in arenas
// already unmapped) are refused by the survivor. At the end the fold names
// only segments the table names (fold_violations).
//
// The survivor's blocks are not freed while the churn runs: frees that give
// blocks back to their arenas are unmapped_fold_read_bug_test's subject
// (finding 1, fixed).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "tests/attack38/common.h"
#include "tests/core_heap.h"

using namespace attack38;
using dropalloc::block_state;

namespace {

constexpr std::size_t kSizes[] = {16, 64, 200, 1024, 4000, 16384, 60000, 300000, 5u << 20};

std::atomic<std::uint64_t> g_wrong_at[512];
#define WRONG() (g_wrong_at[__LINE__ % 512].fetch_add(1), wrong.fetch_add(1))

struct live_block {
  void* p;
  std::size_t size;
  std::uint64_t gen;
};

}  // namespace

TEST_CASE("lookups of a surviving heap stay right while colliding heaps come and go") {
  const std::uintptr_t base = free_spots(4, 256 * kStep, 11);
  REQUIRE(base != 0);
  dropalloc::os::fake_os real;
  placed_os os_s(real, base);
  core::heap s(dropalloc::testing::with_os_no_decay(&os_s));
  // A heap in window 1 takes the entries first, for the steps the
  // survivor's arenas will use: the survivor is found through the table
  // until it goes, then whoever registers next takes them.
  placed_os os_g(real, base + kFoldSpan);
  auto g = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_g));
  for (int round = 0; round < 8; ++round) {
    for (std::size_t size : kSizes) REQUIRE(allocate(*g, size) != nullptr);
  }
  std::vector<live_block> mine, resealed;
  for (int round = 0; round < 8; ++round) {
    for (std::size_t size : kSizes) {
      void* p = allocate(s, size);
      REQUIRE(p != nullptr);
      std::memset(p, 0x5a, size < 4096 ? size : 4096);
      std::uint64_t gen = 0;
      REQUIRE(s.seal(p, &gen) == block_state::intact);
      (round % 2 == 0 ? mine : resealed).push_back(live_block{p, size, gen});
    }
  }
  REQUIRE(os_s.placed.load() > 4);
  int taken = 0;
  for (const auto* v : {&mine, &resealed}) {
    for (const live_block& b : *v) {
      auto a = reinterpret_cast<std::uintptr_t>(b.p);
      core::segment* held = core::g_segment_fold[fold_index(a)].load();
      if (held != nullptr && held != core::segment_in_table(a)) ++taken;
    }
  }
  MESSAGE("survivor blocks whose fold entry another heap holds: " << taken);
  CHECK(taken > 0);
  g.reset();
  CHECK(fold_violations() == 0);
  std::vector<std::uintptr_t> steps;
  for (const live_block& b : mine) steps.push_back(reinterpret_cast<std::uintptr_t>(b.p));

  // Addresses the churning heaps used (live or gone): the survivor refuses them.
  constexpr int kProbes = 4096;
  std::vector<std::atomic<std::uintptr_t>> probes(kProbes);
  std::atomic<int> probe_n{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0}, churned{0}, churn_refused{0}, churn_expected_refused{0};

  auto churn = [&](int who) {
    std::mt19937_64 rng(who);
    while (!stop.load(std::memory_order_relaxed)) {
      // Windows 1..3 in turn: the same 4 MiB steps mod 64 GiB as the survivor's.
      const std::uintptr_t at = base + (1 + (rng() % 3)) * kFoldSpan;
      placed_os os_c(real, at);
      auto c = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_c));
      std::vector<void*> theirs;
      for (std::size_t size : kSizes) {
        for (int k = 0; k < 3; ++k) {
          void* p = allocate(*c, size);
          if (p == nullptr) continue;
          theirs.push_back(p);
          probes[probe_n.fetch_add(1) % kProbes].store(reinterpret_cast<std::uintptr_t>(p));
          if (!c->owns(p) || s.owns(p)) WRONG();
        }
      }
      // Frees, and a double free of each third: refused.
      for (std::size_t i = 0; i < theirs.size(); ++i) {
        c->deallocate(theirs[i]);
        if (i % 3 == 0) {
          c->deallocate(theirs[i]);
          churn_expected_refused.fetch_add(1);
        }
      }
      churn_refused.fetch_add(c->stats().misuse_refused);
      c.reset();  // everything unregistered and unmapped
      churned.fetch_add(1);
    }
  };

  auto checker = [&](int who) {
    std::mt19937_64 rng(100 + who);
    std::uint64_t refused_expected = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const live_block& b = mine[rng() % mine.size()];
      if (!s.owns(b.p)) WRONG();
      if (s.usable_size(b.p) < b.size) WRONG();
      if (s.generation(b.p) != b.gen) WRONG();
      if (s.check(b.p, b.gen) != block_state::intact) WRONG();
      if (s.check(b.p, b.gen + 1) == block_state::intact) WRONG();
      // Interior pointers are no blocks.
      void* inside = static_cast<char*>(b.p) + 1;
      if (s.owns(inside) || s.usable_size(inside) != 0) WRONG();
      // The churning heaps' addresses, and the same steps in the windows.
      const int n = probe_n.load();
      if (n > 0) {
        std::uintptr_t q = probes[rng() % (n < kProbes ? n : kProbes)].load();
        void* pq = reinterpret_cast<void*>(q);
        if (s.owns(pq) || s.usable_size(pq) != 0 || s.generation(pq) != 0) WRONG();
        if (s.check(pq, b.gen) == block_state::intact) WRONG();
        if (rng() % 8 == 0) {
          s.deallocate(pq);  // never the survivor's: refused (checked path, in a read section)
          ++refused_expected;
        }
      }
      const std::uintptr_t mirror = reinterpret_cast<std::uintptr_t>(b.p) + (1 + rng() % 3) * kFoldSpan;
      void* pm = reinterpret_cast<void*>(mirror);
      if (s.owns(pm) || s.usable_size(pm) != 0 || s.check(pm, b.gen) == block_state::intact) WRONG();
    }
    return refused_expected;
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back(churn, i);
  std::atomic<std::uint64_t> refused_expected{0};
  std::thread check_thread([&] { refused_expected += checker(1); });
  // Here: reseals of the survivor's blocks (new generations) and checks.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  std::uint64_t reseals = 0, samples = 0, foreign_held = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (std::uintptr_t a : steps) {
      core::segment* held = core::g_segment_fold[fold_index(a)].load();
      ++samples;
      if (held != nullptr && held != core::segment_in_table(a)) ++foreign_held;
    }
    for (live_block& b : resealed) {
      std::uint64_t g = 0;
      if (s.seal(b.p, &g) != block_state::intact || g == 0) WRONG();
      if (s.check(b.p, g) != block_state::intact || s.generation(b.p) != g) WRONG();
      if (!s.owns(b.p) || s.usable_size(b.p) < b.size) WRONG();
      ++reseals;
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  check_thread.join();
  MESSAGE("colliding heaps made and destroyed: " << churned.load() << ", reseals: " << reseals
                                                   << ", survivor entries held by another heap: " << foreign_held
                                                   << " of " << samples << " samples");
  CHECK(foreign_held > 0);
  for (int line = 0; line < 512; ++line) {
    if (g_wrong_at[line].load() != 0) MESSAGE("wrong answers at line " << line << ": " << g_wrong_at[line].load());
  }
  CHECK(wrong.load() == 0);
  CHECK(churned.load() > 4);
  CHECK(churn_refused.load() == churn_expected_refused.load());
  CHECK(s.stats().misuse_refused == refused_expected.load());
  int used = 0;
  CHECK(fold_violations(&used) == 0);
  mine.insert(mine.end(), resealed.begin(), resealed.end());
  for (const live_block& b : mine) {
    CHECK(s.owns(b.p));
    s.deallocate(b.p);
    CHECK(s.usable_size(b.p) == 0);  // owns() is "a block start of ours", live or not
  }
  CHECK(fold_violations() == 0);
}
