// 2-8 threads sharing one resource, with blocks freed on other threads.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "allocator/core/heap_internal.h"
#include "allocator/core/mutex.h"
#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;

namespace {

struct tagged {
  unsigned char* p;
  std::size_t size;
  unsigned char tag;
};

bool holds(const tagged& t) {
  for (std::size_t i = 0; i < t.size; ++i) {
    if (t.p[i] != t.tag) return false;
  }
  return true;
}

// A lock-protected hand-off queue between producer and consumer threads.
struct mailbox {
  std::mutex lock;
  std::vector<tagged> items;
};

}  // namespace

TEST_CASE("threads allocate and free concurrently, including on other threads") {
  for (int threads : {2, 4, 8}) {
    CAPTURE(threads);
    droppable_resource res;
    std::vector<mailbox> boxes(static_cast<std::size_t>(threads));
    std::atomic<int> corrupt{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
        std::vector<tagged> mine;
        for (int round = 0; round < 20000; ++round) {
          std::size_t size = 1 + rng() % (rng() % 16 == 0 ? 20000 : 600);
          auto* p = static_cast<unsigned char*>(res.allocate(size, 8));
          auto tag = static_cast<unsigned char>(rng());
          std::memset(p, tag, size);
          mine.push_back({p, size, tag});
          if (mine.size() > 64) {
            // Send one block to the next thread, free one of our own.
            auto& box = boxes[static_cast<std::size_t>((t + 1) % threads)];
            {
              std::lock_guard<std::mutex> g(box.lock);
              box.items.push_back(mine.back());
            }
            mine.pop_back();
            std::size_t victim = rng() % mine.size();
            if (!holds(mine[victim])) ++corrupt;
            res.deallocate(mine[victim].p, mine[victim].size, 8);
            mine[victim] = mine.back();
            mine.pop_back();
          }
          if (round % 64 == 0) {
            std::vector<tagged> received;
            {
              std::lock_guard<std::mutex> g(boxes[static_cast<std::size_t>(t)].lock);
              received.swap(boxes[static_cast<std::size_t>(t)].items);
            }
            for (auto& r : received) {
              if (!holds(r)) ++corrupt;
              res.deallocate(r.p, r.size, 8);
            }
          }
        }
        for (auto& m : mine) {
          if (!holds(m)) ++corrupt;
          res.deallocate(m.p, m.size, 8);
        }
      });
    }
    for (auto& w : workers) w.join();
    for (auto& box : boxes) {
      for (auto& r : box.items) {
        if (!holds(r)) ++corrupt;
        res.deallocate(r.p, r.size, 8);
      }
    }
    CHECK(corrupt.load() == 0);
    CHECK(res.stats().blocks_live == 0);
    CHECK(res.stats().misuse_refused == 0);
  }
}

TEST_CASE("thread exit hands cached blocks back; a resource outlives its threads") {
  droppable_resource res;
  std::vector<void*> survivors;
  std::mutex lock;
  for (int generation = 0; generation < 20; ++generation) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] {
        std::vector<void*> local;
        for (int i = 0; i < 1000; ++i) local.push_back(res.allocate(48, 16));
        for (std::size_t i = 0; i + 1 < local.size(); ++i) res.deallocate(local[i], 48, 16);
        std::lock_guard<std::mutex> g(lock);
        survivors.push_back(local.back());
      });
    }
    for (auto& t : ts) t.join();
  }
  CHECK(res.stats().blocks_live == survivors.size());
  for (void* p : survivors) res.deallocate(p, 48, 16);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("a thread does not hand out again what another thread allocated (passive false sharing)") {
  // The main thread allocates small neighbours and gives one to each worker;
  // a worker frees its gift and allocates the same size. Getting the gift back
  // would put two threads' hot data on one cache line.
  droppable_resource res;
  constexpr int kWorkers = 4;
  std::vector<void*> gifts;
  for (int i = 0; i < kWorkers; ++i) gifts.push_back(res.allocate(8, 8));
  std::vector<void*> got(kWorkers);
  std::barrier all_allocated(kWorkers);  // every worker alive until all have allocated
  std::vector<std::thread> ts;
  for (int i = 0; i < kWorkers; ++i) {
    ts.emplace_back([&, i] {
      res.deallocate(gifts[i], 8, 8);
      got[i] = res.allocate(8, 8);
      std::memset(got[i], i, 8);
      all_allocated.arrive_and_wait();
    });
  }
  for (auto& t : ts) t.join();
  for (int i = 0; i < kWorkers; ++i) {
    CAPTURE(i);
    CHECK(got[i] != gifts[i]);
    // Whatever a worker got, no other worker's block shares its cache line.
    for (int j = 0; j < kWorkers; ++j) {
      if (j == i) continue;
      CHECK(reinterpret_cast<std::uintptr_t>(got[i]) / 64 != reinterpret_cast<std::uintptr_t>(got[j]) / 64);
    }
  }
  // The gifts were not lost: the workers' exits passed them on.
  for (void* p : got) res.deallocate(p, 8, 8);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}

TEST_CASE("blocks freed by other threads are counted, passed on and reused") {
  droppable_resource res;
  constexpr int kBlocks = 20000;  // far more than a thread cache holds
  std::vector<void*> blocks;
  for (int i = 0; i < kBlocks; ++i) blocks.push_back(res.allocate(64, 16));
  std::thread([&] {
    for (void* p : blocks) res.deallocate(p, 64, 16);
    CHECK(res.stats().blocks_live == 0);
  }).join();
  CHECK(res.stats().blocks_live == 0);
  const auto mapped = res.stats().bytes_mapped;
  for (int i = 0; i < kBlocks; ++i) blocks[i] = res.allocate(64, 16);
  CHECK(res.stats().bytes_mapped == mapped);  // the freed blocks came back, no new arena
  for (void* p : blocks) res.deallocate(p, 64, 16);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("resources created and destroyed while threads keep caches for them") {
  // Slot reuse: a thread's cache left by a destroyed resource must be ignored.
  for (int i = 0; i < 200; ++i) {
    droppable_resource res;
    std::pmr::vector<int> v(&res);
    for (int j = 0; j < 100; ++j) v.push_back(j);
    std::thread([&] {
      void* p = res.allocate(32, 8);
      res.deallocate(p, 32, 8);
    }).join();
    CHECK(v[99] == 99);
  }
}

TEST_CASE("fork while other threads allocate: parent and child both keep working") {
  droppable_resource res;
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int t = 0; t < 3; ++t) {
    busy.emplace_back([&] {
      std::vector<void*> held;
      while (!stop.load()) {
        held.push_back(res.allocate(8 + held.size() % 3000, 8));
        if (held.size() > 500) {
          for (void* p : held) res.deallocate(p, 1, 8);
          held.clear();
        }
      }
      for (void* p : held) res.deallocate(p, 1, 8);
    });
  }
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // The child inherits no held lock: allocating here must not hang.
      std::pmr::vector<int> v(&res);
      for (int j = 0; j < 10000; ++j) v.push_back(j);
      void* big = res.allocate(1 << 20, 8);
      res.deallocate(big, 1 << 20, 8);
      _exit(v[9999] == 9999 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  stop = true;
  for (auto& t : busy) t.join();
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("a forked child takes back the blocks that other threads' caches held") {
  droppable_resource res;
  constexpr int kThreads = 4;
  std::barrier cached(kThreads + 1), forked(kThreads + 1);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      std::vector<void*> held;
      for (int i = 0; i < 100; ++i) held.push_back(res.allocate(64, 16));
      for (void* p : held) res.deallocate(p, 64, 16);  // into this thread's cache
      cached.arrive_and_wait();
      forked.arrive_and_wait();  // alive until the child is done
    });
  }
  cached.arrive_and_wait();
  REQUIRE(res.stats().blocks_live == 0);
  REQUIRE(res.stats().arenas_mapped >= 1);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Those threads do not exist here; their caches' blocks must come back,
    // so the arena is empty and trim() can unmap it.
    res.trim();
    const auto s = res.stats();
    _exit(s.blocks_live == 0 && s.arenas_mapped == 0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  forked.arrive_and_wait();
  for (auto& t : ts) t.join();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("one thread using three resources in turn: every block goes back to its own") {
  droppable_resource r[3];
  struct held {
    int k;
    tagged t;
  };
  std::vector<held> live;
  std::mt19937 rng(7);
  for (int i = 0; i < 30000; ++i) {
    const int k = static_cast<int>(rng() % 3);
    const std::size_t size = 8 + rng() % 600;
    auto* p = static_cast<unsigned char*>(r[k].allocate(size, 8));
    const auto tag = static_cast<unsigned char>(i | 1);
    std::memset(p, tag, size);
    live.push_back({k, {p, size, tag}});
    if (rng() % 2 == 0) {  // free a random earlier block, of whichever resource
      std::size_t j = rng() % live.size();
      REQUIRE(holds(live[j].t));
      r[live[j].k].deallocate(live[j].t.p, live[j].t.size, 8);
      live[j] = live.back();
      live.pop_back();
    }
  }
  for (auto& h : live) {
    REQUIRE(holds(h.t));
    r[h.k].deallocate(h.t.p, h.t.size, 8);
  }
  for (auto& res : r) {
    CHECK(res.stats().blocks_live == 0);
    CHECK(res.stats().misuse_refused == 0);
  }
}

// An exited thread's table of caches is kept for the next new thread (a few
// are kept; the rest are unmapped). The next thread must find its caches
// empty, and never one of a destroyed resource (whose destruction hands the
// kept tables back): its blocks would belong to unmapped arenas, or to the
// resource that took the same registry slot.
TEST_CASE("tables of exited threads serve new threads: caches empty, none of a destroyed resource") {
  droppable_resource kept;
  auto fill_and_exit = [](droppable_resource& a, droppable_resource& b, int threads) {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&a, &b] {
        // Blocks of many classes freed into this thread's caches, then left
        // there for the exit to hand back.
        std::vector<std::pair<void*, std::size_t>> held;
        for (std::size_t size = 8; size <= 16384; size += size / 4 + 8) {
          for (int i = 0; i < 4; ++i) {
            held.emplace_back(a.allocate(size, 8), size);
            b.deallocate(b.allocate(size, 8), size, 8);
          }
        }
        for (auto& [p, size] : held) a.deallocate(p, size, 8);
      });
    }
    for (auto& t : ts) t.join();
  };
  for (int round = 0; round < 8; ++round) {
    std::vector<tagged> mine;
    {
      auto doomed = std::make_unique<droppable_resource>();
      // More threads than tables are kept: some tables kept, others unmapped.
      fill_and_exit(kept, *doomed, 12);
      CHECK(kept.stats().blocks_live == 0);
      CHECK(doomed->stats().blocks_live == 0);
    }
    // Likely in the destroyed resource's registry slot.
    droppable_resource fresh;
    std::vector<std::thread> ts;
    std::mutex lock;
    for (int t = 0; t < 12; ++t) {
      ts.emplace_back([&, t] {
        std::vector<tagged> got;
        for (std::size_t size = 8; size <= 16384; size += size / 4 + 8) {
          for (int i = 0; i < 4; ++i) {
            const auto tag = static_cast<unsigned char>(t * 16 + i + 1);
            auto* p = static_cast<unsigned char*>(fresh.allocate(size, 8));
            auto* q = static_cast<unsigned char*>(kept.allocate(size, 8));
            std::memset(p, tag, size);
            std::memset(q, tag ^ 0xff, size);
            got.push_back({p, size, tag});
            got.push_back({q, size, static_cast<unsigned char>(tag ^ 0xff)});
          }
        }
        std::lock_guard<std::mutex> g(lock);
        mine.insert(mine.end(), got.begin(), got.end());
      });
    }
    for (auto& t : ts) t.join();
    // Every block whole (no block handed out twice, none from the destroyed
    // resource's unmapped arenas), and each resource counts exactly its own.
    for (const tagged& t : mine) REQUIRE(holds(t));
    CHECK(fresh.stats().blocks_live == mine.size() / 2);
    CHECK(kept.stats().blocks_live == mine.size() / 2);
    for (std::size_t i = 0; i < mine.size(); i += 2) {
      fresh.deallocate(mine[i].p, mine[i].size, 8);
      kept.deallocate(mine[i + 1].p, mine[i + 1].size, 8);
    }
    CHECK(fresh.stats().blocks_live == 0);
    CHECK(kept.stats().blocks_live == 0);
    CHECK(fresh.stats().misuse_refused == 0);
    CHECK(kept.stats().misuse_refused == 0);
  }
}

TEST_CASE("at most a few exited threads' tables are kept, and trim() hands them back") {
  auto spares = [] {
    auto& r = dropalloc::core::internal::registry();
    dropalloc::core::lock_guard g(r.lock);
    return r.spare_count;
  };
  droppable_resource res;
  std::vector<std::thread> ts;
  for (int t = 0; t < 16; ++t) {
    ts.emplace_back([&res] { res.deallocate(res.allocate(64, 8), 64, 8); });
  }
  for (auto& t : ts) t.join();
  const std::uint32_t kept = spares();
  CHECK(kept >= 1);
  CHECK(kept <= 4);
  res.trim();
  CHECK(spares() == 0);
  // New threads after the release map tables of their own again.
  std::thread([&res] {
    void* p = res.allocate(64, 8);
    std::memset(p, 1, 64);
    res.deallocate(p, 64, 8);
  }).join();
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}
