// cache-scratch: passive false sharing (after Hoard's test). The main thread
// allocates one small object per worker; each worker frees it, then keeps
// allocating, writing and freeing objects of the same size. An allocator that
// hands the freed object (or its neighbours on the same cache line) to
// different threads makes the writers fight over one cache line.
#include <thread>
#include <vector>

#include "bench/macro/workload.h"

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int t = o.threads;
  const std::size_t objects = o.quick ? 2000 : 2000000;  // per thread
  const int writes = 100;                                // per object
  constexpr std::size_t kSize = 8;

  std::vector<char*> first(t);
  for (auto& p : first) p = static_cast<char*>(std::malloc(kSize));

  std::vector<std::uint64_t> sums(t);
  bench::timer clock;
  std::vector<std::thread> workers;
  for (int id = 0; id < t; ++id) {
    workers.emplace_back([&, id] {
      std::free(first[id]);
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < objects; ++i) {
        volatile char* p = static_cast<char*>(std::malloc(kSize));
        for (int w = 0; w < writes; ++w) p[w % kSize] = static_cast<char>(p[w % kSize] + 1);
        sum += static_cast<unsigned char>(p[0]);
        std::free(const_cast<char*>(p));
      }
      sums[id] = sum;
    });
  }
  for (auto& w : workers) w.join();
  const double s = clock.seconds();
  std::uint64_t check = 0;
  for (auto v : sums) check += v;
  bench::report("cache_scratch", s, static_cast<std::uint64_t>(t) * objects, check);
}
