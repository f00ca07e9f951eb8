// rptest: after rpmalloc's benchmark as run by mimalloc-bench. Each thread
// keeps 1000 live blocks of random sizes 8 B-16 KiB with a linear drop-off
// (small sizes most likely), replaces 100 per iteration, touches what it
// allocates, and every second iteration hands 100 blocks to the next thread's
// inbox, which that thread frees (cross-thread frees).
#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/macro/workload.h"

namespace {

constexpr std::size_t kLive = 1000, kOps = 100, kMin = 8, kMax = 16000;

struct inbox {
  std::mutex m;
  std::vector<char*> blocks;
};

// Density falls linearly from kMin to kMax: inverse transform of the
// triangular distribution.
std::size_t pick_size(bench::rng& r) {
  const double u = static_cast<double>(r.next() >> 11) * 0x1.0p-53;
  return kMin + static_cast<std::size_t>(static_cast<double>(kMax - kMin) * (1.0 - std::sqrt(1.0 - u)));
}

char* alloc_touched(std::size_t n) {
  char* p = static_cast<char*>(std::malloc(n));
  for (std::size_t i = 0; i < n; i += 512) p[i] = static_cast<char>(i);
  p[n - 1] = static_cast<char>(n);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int t = o.threads;
  const int loops = o.quick ? 20 : 4000;
  std::vector<inbox> inboxes(t);
  std::vector<std::uint64_t> sums(t);
  std::atomic<int> finished{0};
  bench::timer clock;
  std::vector<std::thread> workers;
  for (int id = 0; id < t; ++id) {
    workers.emplace_back([&, id] {
      bench::rng r(500 + id);
      std::uint64_t sum = 0;
      std::vector<char*> live(kLive);
      for (auto& p : live) p = alloc_touched(pick_size(r));
      std::vector<char*> incoming;
      for (int loop = 0; loop < loops; ++loop) {
        for (std::size_t i = 0; i < kOps; ++i) {
          const std::size_t slot = r.next() % kLive;
          sum += static_cast<unsigned char>(live[slot][0]);
          std::free(live[slot]);
          live[slot] = alloc_touched(pick_size(r));
        }
        if (loop % 2 == 1) {
          // Give kOps blocks away and replace them.
          inbox& next = inboxes[(id + 1) % t];
          std::vector<char*> gift;
          for (std::size_t i = 0; i < kOps; ++i) {
            const std::size_t slot = r.next() % kLive;
            gift.push_back(live[slot]);
            live[slot] = alloc_touched(pick_size(r));
          }
          std::lock_guard lock(next.m);
          next.blocks.insert(next.blocks.end(), gift.begin(), gift.end());
        }
        {
          std::lock_guard lock(inboxes[id].m);
          incoming.swap(inboxes[id].blocks);
        }
        for (char* p : incoming) std::free(p);
        incoming.clear();
      }
      // Keep emptying the inbox until every thread is done: a thread that
      // finished early would otherwise leave its inbox to fill with the
      // others' gifts, and the peak would measure how unevenly the threads
      // were scheduled (one run in three peaked several times higher).
      finished.fetch_add(1);
      while (finished.load() < t) {
        {
          std::lock_guard lock(inboxes[id].m);
          incoming.swap(inboxes[id].blocks);
        }
        for (char* p : incoming) std::free(p);
        incoming.clear();
        std::this_thread::yield();
      }
      for (char* p : live) std::free(p);
      sums[id] = sum;
    });
  }
  for (auto& w : workers) w.join();
  const double s = clock.seconds();
  for (auto& in : inboxes)
    for (char* p : in.blocks) std::free(p);
  std::uint64_t check = 0;
  for (auto v : sums) check += v;
  bench::report("rptest", s, static_cast<std::uint64_t>(t) * loops * (kOps + kOps / 2), check);
}
