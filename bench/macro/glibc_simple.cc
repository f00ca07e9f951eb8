// glibc-simple: after glibc's bench-malloc-simple. Batches of 25, 100, 400 and
// 1600 same-size blocks (16, 32, 64 B), touched, then freed half in
// allocation order and half in reverse; single thread.
#include <vector>

#include "bench/macro/workload.h"

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int reps = o.quick ? 20 : 4000;
  std::vector<char*> ptrs(1600);
  std::uint64_t ops = 0, check = 0;
  bench::timer clock;
  for (int rep = 0; rep < reps; ++rep) {
    for (std::size_t count : {25u, 100u, 400u, 1600u}) {
      for (std::size_t size : {16u, 32u, 64u}) {
        for (std::size_t i = 0; i < count; ++i) {
          char* p = static_cast<char*>(std::malloc(size));
          p[0] = static_cast<char>(i);
          p[size - 1] = 1;
          ptrs[i] = p;
        }
        const std::size_t half = count / 2;
        for (std::size_t i = 0; i < half; ++i) {  // FIFO half
          check += static_cast<unsigned char>(ptrs[i][0]);
          std::free(ptrs[i]);
        }
        for (std::size_t i = count; i-- > half;) {  // LIFO half
          check += static_cast<unsigned char>(ptrs[i][0]);
          std::free(ptrs[i]);
        }
        ops += count;
      }
    }
  }
  bench::report("glibc_simple", clock.seconds(), ops, check);
}
