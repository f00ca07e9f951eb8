// Model-based test of the block promise: random, seeded operation sequences
// against the shadow model (model.h), single-threaded and multi-threaded, plus
// two directed races (write_and_seal against drops, check against unmapping).
//
// Knobs (environment):
//   MODEL_SECONDS  total wall-clock budget, default 16 (split between the cases)
//   MODEL_SEED     base seed, default from the clock; printed at the start and
//                  in every failure. The single-threaded case replays exactly
//                  from it; the threaded ones replay their operation choices
//                  but not the interleaving.
//   MODEL_KEEP_GOING=1  diagnosis: go on after an oracle fired and report
//                  every oracle that fires (first report of each, with counts)
//   bazel test //tests/model:model_test --test_env=MODEL_SECONDS=600 --test_env=MODEL_SEED=42
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "tests/model/ops.h"
#include "tests/rng.h"

namespace {

using clock_type = std::chrono::steady_clock;
using dropalloc::block_ref;
using dropalloc::block_state;

double budget_seconds() {
  const char* s = std::getenv("MODEL_SECONDS");
  double v = s != nullptr ? std::atof(s) : 16.0;
  return v > 0 ? v : 16.0;
}

std::uint64_t base_seed() {
  static const std::uint64_t seed = [] {
    const char* s = std::getenv("MODEL_SEED");
    if (s != nullptr && *s != '\0') return std::strtoull(s, nullptr, 0);
    return static_cast<std::uint64_t>(clock_type::now().time_since_epoch().count()) % 1000000007ull;
  }();
  return seed;
}

bool keep_going() {
  const char* s = std::getenv("MODEL_KEEP_GOING");
  return s != nullptr && *s == '1';
}

// Whether a run should stop early because an oracle fired.
bool stop_on(const model::failure_log& log) { return log.any() && !keep_going(); }

clock_type::time_point deadline(double share) {
  return clock_type::now() + std::chrono::microseconds(static_cast<long long>(budget_seconds() * share * 1e6));
}

using dropalloc::testing::derived_seed;

void announce(const char* what) {
  std::fprintf(stderr, "[model] %s: MODEL_SEED=%llu MODEL_SECONDS=%g%s\n", what,
               static_cast<unsigned long long>(base_seed()), budget_seconds(),
               keep_going() ? " MODEL_KEEP_GOING=1" : "");
}

void report(const model::failure_log& log) {
  if (!log.any()) return;
  std::string all = log.all();
  std::fprintf(stderr, "%s", all.c_str());
  FAIL_CHECK("oracle failures (reproduce with MODEL_SEED=" << base_seed() << "):\n" << all);
}

// A block_state must be one of the five values.
bool valid(block_state s) { return static_cast<unsigned>(s) <= static_cast<unsigned>(block_state::foreign); }

}  // namespace

// Every round gets a fresh resource with its own options, so thread caches,
// immediate arena release (decay 0) and address reuse after unmapping all
// come up. One owner: seal_all/check_all/stats counts are exact here.
TEST_CASE("single-threaded random sequences keep the promise") {
  announce("single-threaded");
  model::failure_log log;
  auto end = deadline(0.40);
  std::uint64_t ops = 0;
  for (std::uint64_t round = 0; clock_type::now() < end && !stop_on(log); ++round) {
    std::uint64_t seed = derived_seed(base_seed(), round);
    dropalloc::resource_options o;
    o.thread_cache = (seed & 1) != 0;
    o.empty_arena_decay_ms = (seed & 2) != 0 ? 0 : 1000;
    dropalloc::droppable_resource res(o);
    model::generation_registry gens;
    model::runner_options ro;
    ro.keep_going = keep_going();
    model::runner run(res, gens, log, seed, ro);
    for (int i = 0; i < 4000 && clock_type::now() < end && !run.failed(); ++i) run.step();
    if (!run.failed()) run.free_all();
    ops += run.ops();
    if (run.failed()) {
      std::fprintf(stderr, "[model] failed in round %llu (round seed %llu, thread_cache=%d decay=%llu)\n",
                   static_cast<unsigned long long>(round), static_cast<unsigned long long>(seed),
                   o.thread_cache ? 1 : 0, static_cast<unsigned long long>(o.empty_arena_decay_ms));
    }
  }
  std::fprintf(stderr, "[model] single-threaded: %llu operations\n", static_cast<unsigned long long>(ops));
  report(log);
}

// Owners with their own blocks (and their own shadow models), checkers that
// only check() the owners' published handles while they are freed, reused and
// their arenas trimmed, and a sweeper calling seal_all, check_all and trim.
TEST_CASE("multi-threaded owners, checkers and a sweeper keep the promise") {
  announce("multi-threaded");
  model::failure_log log;
  dropalloc::resource_options o;
  o.empty_arena_decay_ms = 0;  // arenas go back to the OS as soon as they empty
  dropalloc::droppable_resource res(o);
  model::generation_registry gens;
  constexpr int kOwners = 3, kSlotsEach = 16;
  model::mt_context ctx(kOwners * kSlotsEach);
  auto end = deadline(0.30);
  std::atomic<bool> stop{false};
  auto done = [&] { return stop.load(std::memory_order_relaxed) || stop_on(log) || clock_type::now() >= end; };

  std::vector<std::thread> threads;
  std::atomic<std::uint64_t> owner_ops{0}, checks{0}, sweeps{0};
  for (int t = 0; t < kOwners; ++t) {
    threads.emplace_back([&, t] {
      model::runner_options ro;
      ro.thread_id = t + 1;
      ro.mt = &ctx;
      ro.first_slot = t * kSlotsEach;
      ro.slots = kSlotsEach;
      ro.max_live = 48;
      ro.max_live_bytes = std::size_t{6} << 20;
      ro.fork_allowed = false;
      ro.keep_going = keep_going();
      model::runner run(res, gens, log, derived_seed(base_seed(), 1000 + static_cast<std::uint64_t>(t)), ro);
      while (!done()) run.step();
      if (!run.failed()) run.free_all();
      owner_ops += run.ops();
    });
  }
  auto checker_fail = [&](const std::string& oracle, const std::string& what) {
    log.add(oracle, "ORACLE " + oracle + " fired (checker thread, seed=" + std::to_string(base_seed()) + "): " + what);
  };
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      model::rng r(derived_seed(base_seed(), 2000 + static_cast<std::uint64_t>(t)));
      while (!done()) {
        auto& slot = ctx.board[r.below(ctx.board.size())];
        block_ref ref;
        bool freed;
        {
          std::lock_guard<std::mutex> g(slot.m);
          ref = slot.ref;
          freed = slot.freed;
        }
        if (ref.ptr == nullptr) continue;
        block_state s;
        {
          std::unique_lock<std::shared_mutex> w(ctx.write_lock);
          s = res.check(ref.ptr, ref.generation);
        }
        ++checks;
        if (!valid(s) || s == block_state::foreign) {
          checker_fail("checker-issued-handle-answer",
                       "check(" + std::to_string(reinterpret_cast<std::uintptr_t>(ref.ptr)) + ", " +
                           std::to_string(ref.generation) + ") of a handle the owner was given said " + model::name(s));
        }
        if (freed && s != block_state::stale) {
          checker_fail("checker-freed-handle-not-stale", "handle freed before the check, check said " + model::name(s));
        }
        if (r.chance(5) && res.check(nullptr, ref.generation) != block_state::foreign) {
          checker_fail("nullptr-not-foreign", "check(nullptr, " + std::to_string(ref.generation) + ") not foreign");
        }
      }
    });
  }
  threads.emplace_back([&] {
    while (!done()) {
      {
        ctx.sweeper_waiting.store(true, std::memory_order_release);
        std::unique_lock<std::shared_mutex> lk(ctx.seal_lock);
        ctx.sweeper_waiting.store(false, std::memory_order_release);
        ctx.epoch.fetch_add(1, std::memory_order_acq_rel);
        res.seal_all();
      }
      {
        std::unique_lock<std::shared_mutex> w(ctx.write_lock);
        dropalloc::core::sweep_result sr = res.check_all();
        (void)sr;  // counts move with the owners; the owners' own checks are the oracle
      }
      res.trim();
      ++sweeps;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // pacing only
    }
  });
  for (auto& th : threads) th.join();
  std::fprintf(stderr, "[model] multi-threaded: %llu owner operations, %llu checks, %llu sweeps\n",
               static_cast<unsigned long long>(owner_ops.load()), static_cast<unsigned long long>(checks.load()),
               static_cast<unsigned long long>(sweeps.load()));
  report(log);
}

// write_and_seal while another thread drops pages of the same block: the
// window between the copy and the seal. The answer must be intact with the
// block holding src (read, then check again: intact means what was read is
// src), or dropped with the block left dropped.
TEST_CASE("write_and_seal against concurrent drops") {
  announce("write_and_seal vs drops");
  model::failure_log log;
  dropalloc::droppable_resource res;
  constexpr std::size_t kBytes = 16 * model::kPage;
  block_ref b = res.allocate_block(kBytes, model::kPage);
  REQUIRE(b.ptr != nullptr);
  auto end = deadline(0.10);
  std::atomic<bool> stop{false};
  std::thread dropper([&] {
    model::rng r(derived_seed(base_seed(), 3000));
    while (!stop.load(std::memory_order_relaxed)) {
      auto* page = static_cast<std::byte*>(b.ptr) + r.below(kBytes / model::kPage) * model::kPage;
      res.drop_for_testing(page, model::kPage);
      for (int i = 0, n = static_cast<int>(r.below(64)); i < n; ++i) std::this_thread::yield();
    }
  });
  model::rng r(derived_seed(base_seed(), 3001));
  std::vector<std::uint8_t> src(kBytes), seen(kBytes);
  std::uint64_t rounds = 0, intact = 0, dropped = 0;
  while (clock_type::now() < end && !stop_on(log)) {
    ++rounds;
    // No zero byte, so every page has data to lose; 8 bytes per draw so the
    // round is spent in write_and_seal, where the window is, not in filling.
    for (std::size_t i = 0; i < kBytes; i += 8) {
      std::uint64_t w = r.next() | 0x0101010101010101ull;
      std::memcpy(src.data() + i, &w, 8);
    }
    block_state s = res.write_and_seal(b, src.data(), kBytes);  // b takes a revival's new generation
    if (s == block_state::intact) {
      ++intact;
      std::memcpy(seen.data(), b.ptr, kBytes);
      block_state again = res.check(b.ptr, b.generation);
      if (again == block_state::intact && std::memcmp(seen.data(), src.data(), kBytes) != 0) {
        log.add("write_and_seal-intact-but-bytes-differ", "ORACLE write_and_seal-intact-but-bytes-differ fired: seed=" + std::to_string(base_seed()) +
                " round " + std::to_string(rounds) + ": read after write_and_seal differs from src, check says intact");
      }
    } else if (s == block_state::dropped) {
      ++dropped;
      block_state again = res.check(b.ptr, b.generation);
      if (again != block_state::dropped) {
        log.add("write_and_seal-left-block-not-dropped", "ORACLE write_and_seal-left-block-not-dropped fired: seed=" + std::to_string(base_seed()) +
                " round " + std::to_string(rounds) + ": write_and_seal said dropped, then check said " +
                model::name(again));
      }
    } else {
      log.add("write_and_seal-answer", "ORACLE write_and_seal-answer fired: said " + model::name(s) + " for a live block of ours");
    }
  }
  stop = true;
  dropper.join();
  res.deallocate(b.ptr, kBytes, model::kPage);
  std::fprintf(stderr, "[model] write_and_seal vs drops: %llu rounds, %llu intact, %llu dropped\n",
               static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(intact),
               static_cast<unsigned long long>(dropped));
  report(log);
}

// check() of a handle whose arena is being unmapped: an owner allocates,
// publishes, frees and trims in a loop (multi-page, big and own-mapping
// sizes), a checker checks the published handle. Nothing may crash; a handle
// freed before the check reads stale.
TEST_CASE("check() of handles whose arenas are being unmapped") {
  announce("check vs unmap");
  model::failure_log log;
  dropalloc::resource_options o;
  o.empty_arena_decay_ms = 0;
  dropalloc::droppable_resource res(o);
  auto end = deadline(0.20);
  // The published handle, in a seqlock: the checkers must not slow the owner
  // down (a mutex they hammer would starve it), and must never take a torn
  // (pointer, generation) pair for a handle.
  struct {
    std::atomic<std::uint64_t> seq{0};  // odd while the owner rewrites it
    std::atomic<void*> ptr{nullptr};
    std::atomic<std::uint64_t> gen{0};
    std::atomic<bool> freed{true};
  } pub;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> checks{0}, cycles{0};
  std::thread owner([&] {
    model::rng r(derived_seed(base_seed(), 4000));
    static constexpr std::size_t kSizes[] = {20000, 20000, 300000, 2u << 20};
    while (!stop.load(std::memory_order_relaxed)) {
      block_ref b = res.allocate_block(kSizes[r.below(4)]);
      pub.seq.fetch_add(1, std::memory_order_acq_rel);
      pub.ptr.store(b.ptr, std::memory_order_relaxed);
      pub.gen.store(b.generation, std::memory_order_relaxed);
      pub.freed.store(false, std::memory_order_relaxed);
      pub.seq.fetch_add(1, std::memory_order_acq_rel);
      if (r.chance(50)) res.seal(b.ptr);
      res.deallocate(b.ptr, 20000, alignof(std::max_align_t));
      pub.freed.store(true, std::memory_order_release);  // after the free: checks from now on see stale
      res.trim();
      ++cycles;
    }
  });
  std::vector<std::thread> checkers;
  for (int t = 0; t < 2; ++t) {
    checkers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::uint64_t s1 = pub.seq.load(std::memory_order_acquire);
        block_ref h{pub.ptr.load(std::memory_order_relaxed), pub.gen.load(std::memory_order_relaxed)};
        if ((s1 & 1) != 0 || pub.seq.load(std::memory_order_acquire) != s1 || h.ptr == nullptr) continue;
        // Checked again and again, so the free and the unmap race it.
        for (int i = 0; i < 16; ++i) {
          bool was_freed = pub.freed.load(std::memory_order_acquire) && pub.seq.load(std::memory_order_acquire) == s1;
          block_state s = res.check(h.ptr, h.generation);
          ++checks;
          if (!valid(s) || s == block_state::foreign || (was_freed && s != block_state::stale)) {
            log.add("check-during-unmap", "ORACLE check-during-unmap fired: seed=" + std::to_string(base_seed()) +
                                              ": check of a handle the owner was given said " + model::name(s) +
                                              (was_freed ? " after it was freed" : ""));
            if (!keep_going()) stop = true;
          }
        }
      }
    });
  }
  while (clock_type::now() < end && !stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  owner.join();
  for (auto& c : checkers) c.join();
  std::fprintf(stderr, "[model] check vs unmap: %llu cycles, %llu checks\n",
               static_cast<unsigned long long>(cycles.load()), static_cast<unsigned long long>(checks.load()));
  report(log);
}

// Found by the random single-threaded run (write_and_seal-answer): a block
// sealed whole, one of its later pages dropped, then write_and_seal of a
// prefix that does not reach that page. It used to certify the lost page's
// zeros as the old contents. Now a revived block is treated as new: the bytes
// after the prefix are zeroed, so intact means "prefix, then zeros".
TEST_CASE("write_and_seal of a prefix does not make a lost later page intact") {
  dropalloc::droppable_resource res;
  constexpr std::size_t kBytes = 3 * model::kPage;
  block_ref b = res.allocate_block(kBytes, model::kPage);
  REQUIRE(b.ptr != nullptr);
  std::vector<std::uint8_t> all(kBytes, 0x5a), prefix(model::kPage, 0xa5);
  REQUIRE(res.write_and_seal(b.ptr, all.data(), kBytes) == block_state::intact);
  auto* last = static_cast<std::byte*>(b.ptr) + 2 * model::kPage;
  REQUIRE(res.drop_for_testing(last, model::kPage) == 0);  // sealed 0x5a there now reads zeros
  const std::uint64_t before = b.generation;
  block_state s = res.write_and_seal(b, prefix.data(), prefix.size());  // b takes the new generation
  CHECK_MESSAGE(s == block_state::intact, "write_and_seal said " << model::name(s));
  CHECK(b.generation != before);  // revived: a new life
  CHECK(res.check(b.ptr, before) == block_state::stale);
  std::vector<std::uint8_t> expect(kBytes, 0);
  std::memcpy(expect.data(), prefix.data(), prefix.size());
  CHECK_MESSAGE(std::memcmp(b.ptr, expect.data(), kBytes) == 0, "a revived block holds the prefix, then zeros");
  CHECK(res.check(b.ptr, b.generation) == block_state::intact);
  const std::uint64_t revived = b.generation;
  CHECK(res.write_and_seal(b, all.data(), kBytes) == block_state::intact);  // a re-seal: new generation
  CHECK(b.generation > revived);
  CHECK(res.check(b.ptr, revived) == block_state::stale);
  CHECK(res.check(b.ptr, b.generation) == block_state::intact);
  CHECK(std::memcmp(b.ptr, all.data(), kBytes) == 0);
  res.deallocate(b.ptr, kBytes, model::kPage);
}
