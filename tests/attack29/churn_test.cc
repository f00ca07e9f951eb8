// Held: short threads exit while others start (retire_table racing
// new_table), with blocks handed between threads (frees of other threads'
// blocks set aside at the top of bins, then their thread exits), a resource
// destroyed and created again each round (a new heap likely in the old
// one's registry slot while spare tables hold caches for the old one), and
// stats() polled from another thread throughout. Every block stays whole,
// none is handed out twice, blocks_live is exact at each quiet point, and
// nothing is refused.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack29/common.h"

using attack29::tagged;
using dropalloc::droppable_resource;

namespace {

struct owned {
  tagged t;
  int which;  // 0: stable, 1: doomed
};

}  // namespace

TEST_CASE("thread churn with resources destroyed and recreated under spare tables") {
  droppable_resource stable;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> polls{0};
  std::thread poller([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      (void)stable.stats();
      polls.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  std::mutex lock;
  std::vector<owned> mailbox;
  std::atomic<int> corrupt{0};
  std::uint64_t misuse_doomed = 0;
  for (int round = 0; round < (attack29::kSlow ? 2 : 6); ++round) {
    CAPTURE(round);
    auto doomed = std::make_unique<droppable_resource>();
    droppable_resource* res[2] = {&stable, doomed.get()};
    std::atomic<int> next_thread{0};
    auto worker = [&](int id) {
      std::mt19937 rng(static_cast<unsigned>(round * 100003 + id));
      std::vector<owned> got;
      {
        std::lock_guard<std::mutex> g(lock);
        for (int i = 0; i < 40 && !mailbox.empty(); ++i) {
          std::size_t k = rng() % mailbox.size();
          got.push_back(mailbox[k]);
          mailbox[k] = mailbox.back();
          mailbox.pop_back();
        }
      }
      // Other threads' blocks (their threads perhaps gone): checked, freed here.
      for (const owned& o : got) {
        if (!attack29::holds(o.t)) corrupt.fetch_add(1);
        res[o.which]->deallocate(o.t.p, o.t.size, 8);
      }
      std::vector<owned> mine;
      const int n = 20 + static_cast<int>(rng() % 60);
      for (int i = 0; i < n; ++i) {
        const int which = static_cast<int>(rng() % 2);
        const std::size_t size = rng() % 8 == 0 ? 1 + rng() % 20000 : 1 + rng() % 200;
        auto* p = static_cast<unsigned char*>(res[which]->allocate(size, 8));
        owned o{{p, size, static_cast<unsigned char>(rng() | 1)}, which};
        attack29::fill(o.t);
        mine.push_back(o);
      }
      for (std::size_t i = 0; i < mine.size(); ++i) {
        if (!attack29::holds(mine[i].t)) corrupt.fetch_add(1);
        if (i % 2 == 0) res[mine[i].which]->deallocate(mine[i].t.p, mine[i].t.size, 8);
      }
      std::lock_guard<std::mutex> g(lock);
      for (std::size_t i = 1; i < mine.size(); i += 2) mailbox.push_back(mine[i]);
    };
    // Waves of 8 threads (more than the 4 kept tables), 40 waves a round.
    for (int wave = 0; wave < 40; ++wave) {
      std::vector<std::thread> ts;
      for (int t = 0; t < 8; ++t) ts.emplace_back(worker, next_thread++);
      for (auto& t : ts) t.join();
    }
    // Quiet: every block whole, none twice, the counts exact.
    std::set<unsigned char*> seen;
    std::uint64_t live[2] = {0, 0};
    for (const owned& o : mailbox) {
      CHECK(attack29::holds(o.t));
      CHECK(seen.insert(o.t.p).second);
      ++live[o.which];
    }
    CHECK(corrupt.load() == 0);
    CHECK(stable.stats().blocks_live == live[0]);
    CHECK(doomed->stats().blocks_live == live[1]);
    CHECK(stable.stats().misuse_refused == 0);
    misuse_doomed += doomed->stats().misuse_refused;
    // The doomed resource goes with some of its blocks still live (allowed:
    // they go with it); the rest were freed on threads that have exited.
    std::vector<owned> keep;
    for (const owned& o : mailbox) {
      if (o.which == 0) keep.push_back(o);
    }
    mailbox.swap(keep);
    doomed.reset();
  }
  stop = true;
  poller.join();
  for (const owned& o : mailbox) {
    CHECK(attack29::holds(o.t));
    stable.deallocate(o.t.p, o.t.size, 8);
  }
  CHECK(stable.stats().blocks_live == 0);
  CHECK(stable.stats().misuse_refused == 0);
  CHECK(misuse_doomed == 0);
  CHECK(polls.load() > 0);
}
