// malloc-large: large blocks (after mimalloc issue #447's test): 5-25 MiB
// arrays with new[], at most 20 live, one byte written per 4 KiB page. Measures
// how an allocator maps, reuses and returns big blocks (and the page faults
// that follow from its choice).
#include <memory>
#include <vector>

#include "bench/macro/workload.h"

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int iterations = o.quick ? 20 : 150;
  const std::size_t max_live = o.quick ? 4 : 20;
  constexpr std::size_t kMiB = 1 << 20;
  bench::rng r(447);
  std::vector<std::unique_ptr<char[]>> live(max_live);
  std::uint64_t check = 0;
  bench::timer clock;
  for (int i = 0; i < iterations; ++i) {
    const std::size_t n = r.range(5 * kMiB, 25 * kMiB);
    const std::size_t slot = r.next() % max_live;
    if (live[slot]) check += static_cast<unsigned char>(live[slot][0]);
    live[slot].reset(new char[n]);  // default-initialised: no implicit memset
    char* p = live[slot].get();
    for (std::size_t off = 0; off < n; off += 4096) p[off] = static_cast<char>(i);
    bench::escape(p);
  }
  for (auto& p : live) p.reset();
  bench::report("malloc_large", clock.seconds(), static_cast<std::uint64_t>(iterations), check);
}
