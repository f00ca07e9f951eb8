// Attack round 34 (81d5a07), change 2: pending_advice has no default member
// initialiser for next_sealed any more; batches on the stack are left
// uninitialised (advice.cc: advise_later, flush_advice), and add() zeroes the
// bits of an entry it queues.
//
// If any entry reached give_advice with bits it was never given (the stack's
// garbage), give_advice would advise blocks 1-63 after the entry's that were
// sealed long ago (or, past the gen_base test, of another arena). Before
// every seal, seal_many, write_and_seal and flush this test fills the stack
// below it with a non-zero pattern, so that an uninitialised field would read
// as bits. Single-threaded, a model of every block:
//   - at each advice (inside seal_pages, as it is given): every advised page
//     touches a block that is sealed now and was sealed since the last
//     explicit flush ("no advice for an unsealed block or an old seal");
//   - at each explicit flush (decay(false), seal_all()): every block sealed
//     since the previous flush and still sealed at that generation had every
//     page advised since its seal ("no advice missing");
//   - with the fake OS dropping advised pages at once (drop_on_seal), 4096 B
//     blocks (a page each): a live block being written never loses a byte,
//     and a sealed block that lost its page never checks intact.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::backing;
using dropalloc::block_state;
using dropalloc::testing::fill;
using dropalloc::testing::holds;
using dropalloc::testing::rng;

namespace {

// Leaves 16 KiB of the stack below the caller holding 0xa5 bytes.
__attribute__((noinline)) void poison_stack() {
  volatile unsigned char junk[16384];
  for (std::size_t i = 0; i < sizeof junk; ++i) junk[i] = 0xa5;
  asm volatile("" ::"r"(junk) : "memory");
}

struct blk {
  std::size_t n = 0;
  bool live = true;      // allocated
  bool sealed = false;   // sealed (per the answers: intact) and not written since
  std::uint64_t gen = 0;
  std::uint64_t seed = 0;
  std::uint64_t sealed_at = 0;  // advice sequence number when its seal began
  bool pending = false;         // sealed since the last explicit flush
  bool dropped = false;         // a seal answered dropped: its data may be gone
};

struct event {
  std::uintptr_t from, to;
  std::uint64_t seq;
};

struct checking_os : dropalloc::testing::forwarding_os {
  explicit checking_os(os::os_interface& r) : forwarding_os(r) {}
  std::map<std::uintptr_t, blk>* model = nullptr;
  std::vector<std::uintptr_t> in_flight;  // blocks being sealed by the call under way
  std::vector<event> events;
  std::uint64_t seq = 1;
  std::uint64_t bad_pages = 0;
  std::uint64_t pages = 0;
  bool touched_by_pending(std::uintptr_t page) {
    // Blocks that start before page + 4096 and end after page.
    auto it = model->lower_bound(page + 4096);
    while (it != model->begin()) {
      --it;
      const blk& b = it->second;
      if (it->first + b.n <= page) {
        if (page - it->first > 8192) break;
        continue;
      }
      if (b.live && b.sealed && b.pending) return true;
      if (std::find(in_flight.begin(), in_flight.end(), it->first) != in_flight.end()) return true;
    }
    return false;
  }
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    events.push_back(event{a, a + bytes, seq++});
    if (model != nullptr) {
      for (std::uintptr_t page = a; page < a + bytes; page += 4096) {
        ++pages;
        if (!touched_by_pending(page)) {
          ++bad_pages;
          if (bad_pages < 10) MESSAGE("advised page " << reinterpret_cast<void*>(page) << " touches no block sealed since the last flush");
        }
      }
    }
    return real.seal_pages(p, bytes);
  }
  bool advised_since(std::uintptr_t page, std::uint64_t since) const {
    for (const auto& e : events) {
      if (e.seq >= since && e.from <= page && page < e.to) return true;
    }
    return false;
  }
};

struct harness {
  os::fake_os fake;
  checking_os ck{fake};
  core::heap h;
  std::map<std::uintptr_t, blk> model;
  std::uint64_t next_seed = 1;
  std::uint64_t uncovered = 0, flushes = 0, seals = 0, lost_live = 0, false_intact = 0;
  explicit harness(bool drop_on_seal, bool tc) : h(options(tc)) {
    fake.drop_on_seal = drop_on_seal;
    ck.model = &model;
  }
  core::heap_options options(bool tc) {
    fake.reported_backing = backing::droppable;
    core::heap_options o = dropalloc::testing::with_os_no_decay(&ck);
    o.thread_cache = tc;
    return o;
  }
  void* alloc(std::size_t size) {
    core::alloc_error err{};
    void* p = h.allocate(size, 16, &err);
    REQUIRE(p != nullptr);
    blk b;
    b.n = h.usable_size(p);
    b.seed = next_seed++;
    fill(p, b.n, b.seed);
    model[reinterpret_cast<std::uintptr_t>(p)] = b;
    return p;
  }
  void release(std::uintptr_t a) {
    blk& b = model[a];
    b.live = false;
    b.sealed = false;
    h.deallocate(reinterpret_cast<void*>(a));
    model.erase(a);
  }
  void after_seal(std::uintptr_t a, block_state ans, std::uint64_t g, std::uint64_t mark) {
    ++seals;
    blk& b = model[a];
    if (ans == block_state::intact) {
      b.sealed = true;
      b.gen = g;
      b.pending = true;
      b.sealed_at = mark;
    } else {
      b.sealed = false;
      b.dropped = true;
    }
  }
  void seal(std::vector<std::uintptr_t> blocks, int how) {
    const std::uint64_t mark = ck.seq;
    ck.in_flight = blocks;
    if (how == 0 || blocks.size() == 1) {
      for (auto a : blocks) {
        std::uint64_t g = 0;
        poison_stack();
        block_state ans;
        if (how == 2) {
          blk& b = model[a];
          std::vector<unsigned char> src(b.n);
          b.seed = next_seed++;
          fill(src.data(), b.n, b.seed);
          ans = h.write_and_seal(reinterpret_cast<void*>(a), src.data(), b.n, &g);
        } else {
          ans = h.seal(reinterpret_cast<void*>(a), &g);
        }
        after_seal(a, ans, g, mark);
      }
    } else {
      std::vector<void*> ps;
      for (auto a : blocks) ps.push_back(reinterpret_cast<void*>(a));
      std::vector<block_state> ans(ps.size());
      std::vector<std::uint64_t> gens(ps.size());
      poison_stack();
      h.seal_many(ps.data(), ps.size(), ans.data(), gens.data());
      for (std::size_t i = 0; i < ps.size(); ++i) after_seal(blocks[i], ans[i], gens[i], mark);
    }
    ck.in_flight.clear();
  }
  void flush(bool all) {
    poison_stack();
    if (all) {
      // seal_all() seals the live unsealed blocks too: they are in flight.
      for (auto& [a, b] : model) {
        if (!b.sealed) ck.in_flight.push_back(a);
      }
      const std::uint64_t mark = ck.seq;
      h.seal_all();
      for (auto a : ck.in_flight) after_seal(a, block_state::intact, h.generation(reinterpret_cast<void*>(a)), mark);
      ck.in_flight.clear();
    } else {
      h.decay(false);
    }
    ++flushes;
    for (auto& [a, b] : model) {
      if (!b.pending) continue;
      b.pending = false;
      if (!b.sealed || h.check(reinterpret_cast<void*>(a), b.gen) != block_state::intact) continue;
      for (std::uintptr_t page = a & ~std::uintptr_t{4095}; page < a + b.n; page += 4096) {
        if (!ck.advised_since(page, b.sealed_at)) {
          ++uncovered;
          if (uncovered < 10) MESSAGE("a sealed block's page never advised: block " << reinterpret_cast<void*>(a));
        }
      }
    }
  }
  // Live blocks hold what was written; sealed blocks that check intact hold
  // what was sealed.
  void verify_contents() {
    for (auto& [a, b] : model) {
      void* p = reinterpret_cast<void*>(a);
      if (!b.sealed) {
        if (!b.dropped && !holds(p, b.n, b.seed)) {
          ++lost_live;
          if (lost_live < 10) MESSAGE("live block " << p << " lost what was written (size " << b.n << ")");
        }
      } else if (h.check(p, b.gen) == block_state::intact && !holds(p, b.n, b.seed)) {
        ++false_intact;
      }
    }
  }
};

std::vector<std::uintptr_t> pick_run(harness& H, rng& r) {
  // Consecutive live blocks (address order), from a random one.
  std::vector<std::uintptr_t> out;
  if (H.model.empty()) return out;
  auto it = H.model.begin();
  std::advance(it, static_cast<long>(r.below(H.model.size())));
  const std::size_t len = 1 + r.below(70);
  const std::size_t stride = r.chance(70) ? 1 : 1 + r.below(4);
  for (std::size_t i = 0; i < len && it != H.model.end(); ++i) {
    out.push_back(it->first);
    for (std::size_t s = 0; s < stride && it != H.model.end(); ++s) ++it;
  }
  return out;
}

void history(harness& H, std::uint64_t seed, const std::vector<std::size_t>& sizes, int steps) {
  rng r{seed};
  for (int i = 0; i < 600; ++i) H.alloc(sizes[r.below(sizes.size())]);
  for (int step = 0; step < steps; ++step) {
    const unsigned op = static_cast<unsigned>(r.below(100));
    if (op < 30) {
      auto run = pick_run(H, r);
      if (run.empty()) continue;
      const unsigned order = static_cast<unsigned>(r.below(3));
      if (order == 1) std::reverse(run.begin(), run.end());
      if (order == 2) {
        for (std::size_t i = run.size(); i > 1; --i) std::swap(run[i - 1], run[r.below(i)]);
      }
      H.seal(run, r.chance(50) ? 1 : 0);
    } else if (op < 38) {
      auto run = pick_run(H, r);
      if (!run.empty()) H.seal({run[0]}, 2);
    } else if (op < 55) {
      // Free some blocks (sealed and queued ones among them) and hand out
      // new ones, likely at the same addresses: written, not sealed.
      auto run = pick_run(H, r);
      for (auto a : run) {
        if (r.chance(50)) H.release(a);
      }
      const std::size_t k = run.size();
      for (std::size_t i = 0; i < k; ++i) H.alloc(sizes[r.below(sizes.size())]);
    } else if (op < 65) {
      // The caller rewrites sealed blocks and seals them again (sealed ->
      // sealed, a new generation).
      auto run = pick_run(H, r);
      std::vector<std::uintptr_t> again;
      for (auto a : run) {
        blk& b = H.model[a];
        if (!b.sealed || r.chance(50)) continue;
        b.seed = H.next_seed++;
        fill(reinterpret_cast<void*>(a), b.n, b.seed);
        again.push_back(a);
      }
      if (!again.empty()) H.seal(again, r.chance(50) ? 1 : 0);
    } else if (op < 72) {
      H.flush(false);
      H.verify_contents();
    } else if (op < 75) {
      H.flush(true);
      H.verify_contents();
    } else if (op < 77) {
      std::this_thread::sleep_for(std::chrono::milliseconds(11));  // the queue's age bound
    } else {
      auto run = pick_run(H, r);
      if (!run.empty()) H.seal({run[0]}, 0);
    }
  }
  H.flush(false);
  H.verify_contents();
}

}  // namespace

TEST_CASE("advice model: mixed sizes, stack poisoned, no over-advice, no missing advice") {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    for (bool tc : {true, false}) {
      CAPTURE(seed);
      CAPTURE(tc);
      harness H(false, tc);
      history(H, seed * 31 + tc, {48, 64, 64, 1000, 3000, 4096}, 1000);
      MESSAGE("seed " << seed << " tc " << tc << ": seals " << H.seals << ", flushes " << H.flushes
                      << ", advised pages " << H.ck.pages << ", over-advised pages " << H.ck.bad_pages
                      << ", uncovered pages " << H.uncovered);
      CHECK(H.ck.bad_pages == 0);
      CHECK(H.uncovered == 0);
      CHECK(H.false_intact == 0);
    }
  }
}

TEST_CASE("advice model: 4096 B blocks, advised pages dropped at once: live data never lost, truth held") {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    CAPTURE(seed);
    harness H(true, seed % 2 == 0);
    history(H, seed * 77, {4096}, 1000);
    MESSAGE("seed " << seed << ": seals " << H.seals << ", flushes " << H.flushes << ", advised pages "
                    << H.ck.pages << ", over-advised " << H.ck.bad_pages << ", uncovered " << H.uncovered
                    << ", live blocks that lost data " << H.lost_live);
    CHECK(H.ck.bad_pages == 0);
    CHECK(H.lost_live == 0);
    CHECK(H.false_intact == 0);
  }
}

TEST_CASE("advice model: queued entries with bits across fork(); the child frees and rewrites them") {
  // The parent queues entries with bits (4096 B blocks sealed in address
  // order), forks; the child frees the entry blocks and every other bit
  // block, hands them out again live and written, flushes: no live block may
  // lose data (advised pages are dropped at once), every still-sealed one is
  // advised. The parent does the same after the child exits.
  harness H(true, false);
  std::vector<std::uintptr_t> run;
  for (int i = 0; i < 200; ++i) run.push_back(reinterpret_cast<std::uintptr_t>(H.alloc(4096)));
  std::sort(run.begin(), run.end());
  H.seal(run, 1);  // seal_many in address order: entries with 63 bits each
  std::vector<std::uintptr_t> odd;
  for (std::size_t i = 0; i < run.size(); i += 2) odd.push_back(run[i]);
  auto churn = [&H, &odd] {
    for (auto a : odd) H.release(a);
    for (std::size_t i = 0; i < odd.size(); ++i) H.alloc(4096);
    H.flush(false);
    H.verify_contents();
    return H.ck.bad_pages == 0 && H.lost_live == 0 && H.uncovered == 0 && H.false_intact == 0;
  };
  fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    _exit(churn() ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(churn());
  MESSAGE("parent: over-advised " << H.ck.bad_pages << ", lost live " << H.lost_live << ", uncovered "
                                  << H.uncovered);
}
