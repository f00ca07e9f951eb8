// Stress: threads mixing allocate, free, write, seal, forced drops, check and
// read-then-check on shared and private blocks, for a time budget, checking
// throughout that a block reported intact holds what it held when sealed.
//
//   DROPALLOC_TEST_STRESS_SECONDS  run time (default 10, 3 under ASan/TSan)
//   DROPALLOC_TEST_STRESS_THREADS  threads (default 4)
//
// Why the lock: a page dropped between a write and the seal that follows is
// outside the guarantee (seal() reads the witnesses from what is there).
// Sealing and taking the shadow copy happen under a shared lock and drops
// under the exclusive one, so each shadow is exactly what was sealed; writes,
// reads, checks, allocation and free run without it, racing the drops.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

using dropalloc::block_state;

namespace {

struct tracked {
  dropalloc::block_ref ref;
  std::size_t size;
  std::vector<unsigned char> sealed;  // contents at the last seal
  bool is_sealed = false;             // sealed and not written since
  bool ever_sealed = false;           // written after a seal: not covered, but not "unsealed"
};

int env_int(const char* name, int fallback) {
  const char* v = getenv(name);
  return v != nullptr && atoi(v) > 0 ? atoi(v) : fallback;
}

}  // namespace

TEST_CASE("threads mixing every operation with forced drops: intact always means whole") {
  const int seconds = env_int("DROPALLOC_TEST_STRESS_SECONDS", hardening::kSanitized ? 3 : 10);
  const int threads = env_int("DROPALLOC_TEST_STRESS_THREADS", 4);
  dropalloc::droppable_resource res;
  std::shared_mutex drop_lock;
  std::atomic<bool> stop{false};
  std::atomic<long> violations{0}, ops{0}, intact_seen{0}, dropped_seen{0};
  // Handed-off blocks: freed by a thread that did not allocate them.
  std::mutex box_lock;
  std::vector<tracked> box;

  auto worker = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<tracked> mine;
    std::vector<unsigned char> copy;
    long n = 0;
    auto verify = [&](tracked& t) {
      // Read, then check: what was read counts only if check says intact.
      copy.assign(static_cast<unsigned char*>(t.ref.ptr), static_cast<unsigned char*>(t.ref.ptr) + t.size);
      block_state s = res.check(t.ref.ptr, t.ref.generation);
      if (s == block_state::intact) {
        ++intact_seen;
        // Written since the seal: the allocator may still say intact (the
        // README asks for a new seal after writing), so only sealed shadows count.
        if (!t.ever_sealed || (t.is_sealed && std::memcmp(copy.data(), t.sealed.data(), t.size) != 0)) {
          ++violations;
        }
      } else if (s == block_state::dropped) {
        ++dropped_seen;
        if (!t.ever_sealed) ++violations;
      } else if (s != block_state::unsealed || t.ever_sealed) {
        ++violations;  // stale or foreign for a live block; unsealed after a seal
      }
    };
    while (!stop.load(std::memory_order_relaxed)) {
      ++n;
      unsigned op = rng() % 16;
      if (op < 4 || mine.empty()) {  // allocate and write
        std::size_t size = 1 + rng() % (rng() % 8 == 0 ? 60000 : 2000);
        tracked t{res.allocate_block(size), size, {}, false, false};
        std::memset(t.ref.ptr, static_cast<int>(rng() % 3 == 0 ? 0 : 1 + rng() % 255), size);
        mine.push_back(std::move(t));
        continue;
      }
      tracked& t = mine[rng() % mine.size()];
      if (op < 6) {  // free, sometimes on another thread
        tracked victim = std::move(t);
        t = std::move(mine.back());
        mine.pop_back();
        if (rng() % 4 == 0) {
          std::lock_guard<std::mutex> g(box_lock);
          box.push_back(std::move(victim));
        } else {
          res.deallocate(victim.ref.ptr, victim.size);
        }
      } else if (op < 8) {  // write part of it (unsealing it in the model)
        std::size_t off = rng() % t.size;
        std::memset(static_cast<char*>(t.ref.ptr) + off, static_cast<int>(1 + rng() % 255),
                    std::min<std::size_t>(t.size - off, 1 + rng() % 3000));
        t.is_sealed = false;
      } else if (op < 10) {  // seal and take the shadow copy
        std::shared_lock<std::shared_mutex> g(drop_lock);
        res.seal(t.ref);  // a re-seal gives t.ref the new generation
        t.sealed.assign(static_cast<unsigned char*>(t.ref.ptr), static_cast<unsigned char*>(t.ref.ptr) + t.size);
        t.is_sealed = t.ever_sealed = true;
      } else if (op < 11) {  // force a drop of one of its pages (and neighbours')
        std::size_t page = rng() % ((t.size + 4095) / 4096);
        std::unique_lock<std::shared_mutex> g(drop_lock);
        res.drop_for_testing(static_cast<char*>(t.ref.ptr) + page * 4096, 1);
      } else if (op < 15) {
        verify(t);
      } else {  // take blocks other threads handed off, check and free them
        std::vector<tracked> got;
        {
          std::lock_guard<std::mutex> g(box_lock);
          got.swap(box);
        }
        for (auto& g : got) {
          verify(g);
          res.deallocate(g.ref.ptr, g.size);
        }
      }
      if (mine.size() > 300) {
        for (std::size_t i = 0; i < 100; ++i) {
          verify(mine.back());
          res.deallocate(mine.back().ref.ptr, mine.back().size);
          mine.pop_back();
        }
      }
    }
    for (auto& t : mine) {
      verify(t);
      res.deallocate(t.ref.ptr, t.size);
    }
    ops += n;
  };

  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) ts.emplace_back(worker, 1000u + static_cast<unsigned>(i));
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  for (auto& t : box) res.deallocate(t.ref.ptr, t.size);
  MESSAGE(ops.load() << " operations in " << seconds << " s on " << threads << " threads; checks said intact "
                     << intact_seen.load() << " times, dropped " << dropped_seen.load() << " times");
  CHECK(violations.load() == 0);
  CHECK(intact_seen.load() > 0);
  CHECK(dropped_seen.load() > 0);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}
