// larson: server churn after Larson & Krishnan. Each thread owns an array of
// live blocks (8-1000 B) and replaces random ones (free + malloc + touch).
// After every round the arrays move on to the next thread, so most frees
// happen on a thread other than the one that allocated ("bleeding").
#include <barrier>
#include <thread>
#include <vector>

#include "bench/macro/workload.h"

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const std::size_t slots = o.quick ? 500 : 5000;
  const int rounds = o.quick ? 4 : 40;
  const std::size_t ops_per_round = o.quick ? 2000 : 100000;
  const int t = o.threads;

  std::vector<std::vector<char*>> arrays(t, std::vector<char*>(slots));
  bench::rng init(4141);
  for (auto& a : arrays)
    for (auto& p : a) {
      p = static_cast<char*>(std::malloc(init.range(8, 1000)));
      p[0] = 1;
    }

  std::barrier sync(t);
  std::vector<std::uint64_t> sums(t);
  bench::timer clock;
  std::vector<std::thread> workers;
  for (int id = 0; id < t; ++id) {
    workers.emplace_back([&, id] {
      bench::rng r(1000 + id);
      std::uint64_t sum = 0;
      for (int round = 0; round < rounds; ++round) {
        // Round k: thread id works on the array allocated by thread id + k.
        std::vector<char*>& a = arrays[(id + round) % t];
        for (std::size_t i = 0; i < ops_per_round; ++i) {
          const std::size_t slot = r.next() % slots;
          sum += static_cast<unsigned char>(a[slot][0]);
          std::free(a[slot]);
          const std::size_t n = r.range(8, 1000);
          char* p = static_cast<char*>(std::malloc(n));
          p[0] = static_cast<char>(n);
          p[n - 1] = 1;
          bench::escape(p);
          a[slot] = p;
        }
        sync.arrive_and_wait();
      }
      sums[id] = sum;
    });
  }
  for (auto& w : workers) w.join();
  const double s = clock.seconds();
  std::uint64_t check = 0;
  for (auto v : sums) check += v;
  for (auto& a : arrays)
    for (char* p : a) std::free(p);
  bench::report("larson", s, static_cast<std::uint64_t>(t) * rounds * ops_per_round, check);
}
