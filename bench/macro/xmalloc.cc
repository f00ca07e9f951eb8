// xmalloc: allocate here, free there (after Lever & Boreham's xmalloc test).
// Producer threads allocate batches of blocks (8-2048 B, mostly 64) and hand
// them over a queue to consumer threads that free them: every free is remote.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/macro/workload.h"

namespace {

constexpr std::size_t kBatch = 128;
constexpr std::size_t kMaxQueued = 64;  // batches; bounds memory use

struct queue {
  std::mutex m;
  std::condition_variable not_empty, not_full;
  std::deque<std::vector<void*>> q;
  int producers_left = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const std::size_t batches_per_producer = o.quick ? 200 : 20000;
  const int pairs = o.threads / 2 > 0 ? o.threads / 2 : 1;

  queue q;
  q.producers_left = pairs;
  std::vector<std::uint64_t> sums(pairs);
  bench::timer clock;
  std::vector<std::thread> threads;
  for (int id = 0; id < pairs; ++id) {
    threads.emplace_back([&, id] {
      bench::rng r(77 + id);
      for (std::size_t b = 0; b < batches_per_producer; ++b) {
        std::vector<void*> batch(kBatch);
        for (auto& p : batch) {
          // Three quarters 64 B (the classic -s 64), the rest 8-2048 B.
          const std::size_t n = (r.next() & 3) != 0 ? 64 : r.range(8, 2048);
          char* c = static_cast<char*>(std::malloc(n));
          c[0] = static_cast<char>(n);
          p = c;
        }
        std::unique_lock lock(q.m);
        q.not_full.wait(lock, [&] { return q.q.size() < kMaxQueued; });
        q.q.push_back(std::move(batch));
        q.not_empty.notify_one();
      }
      std::lock_guard lock(q.m);
      --q.producers_left;
      q.not_empty.notify_all();
    });
    threads.emplace_back([&, id] {
      std::uint64_t sum = 0;
      for (;;) {
        std::vector<void*> batch;
        {
          std::unique_lock lock(q.m);
          q.not_empty.wait(lock, [&] { return !q.q.empty() || q.producers_left == 0; });
          if (q.q.empty()) break;
          batch = std::move(q.q.front());
          q.q.pop_front();
          q.not_full.notify_one();
        }
        for (void* p : batch) {
          sum += static_cast<unsigned char>(*static_cast<char*>(p));
          std::free(p);
        }
      }
      sums[id] = sum;
    });
  }
  for (auto& th : threads) th.join();
  const double s = clock.seconds();
  std::uint64_t check = 0;
  for (auto v : sums) check += v;
  bench::report("xmalloc", s, static_cast<std::uint64_t>(pairs) * batches_per_producer * kBatch, check);
}
