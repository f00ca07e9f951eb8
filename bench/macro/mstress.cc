// mstress: thread churn after mimalloc's stress test. Each phase starts fresh
// threads that allocate mostly small power-of-two-ish blocks (1% up to
// 256 KiB, 0.1% up to 4 MiB), grow one block with realloc, and swap blocks
// through a shared array of slots, so blocks are freed by threads that did not
// allocate them, often after their allocating thread has exited.
#include <atomic>
#include <thread>
#include <vector>

#include "bench/macro/workload.h"

namespace {

constexpr std::size_t kShared = 1000;

std::size_t pick_size(bench::rng& r) {
  const std::uint64_t x = r.next();
  const std::uint64_t roll = x % 1000;
  std::size_t n;
  if (roll == 0) n = std::size_t{1} << (16 + (x >> 20) % 7);       // 64 KiB-4 MiB
  else if (roll < 10) n = std::size_t{1} << (10 + (x >> 20) % 9);  // 1-256 KiB
  else n = std::size_t{1} << (3 + (x >> 20) % 7);                  // 8-512 B
  return n + (x >> 40) % n;  // spread within the doubling
}

char* alloc_touched(std::size_t n) {
  char* p = static_cast<char*>(std::malloc(n));
  p[0] = static_cast<char>(n);
  p[n - 1] = 1;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int phases = o.quick ? 3 : 50;
  const std::size_t steps = o.quick ? 2000 : 40000;  // per thread per phase
  const int t = o.threads;
  std::vector<std::atomic<char*>> shared(kShared);
  for (auto& s : shared) s.store(nullptr);
  std::atomic<std::uint64_t> check{0};

  bench::timer clock;
  for (int phase = 0; phase < phases; ++phase) {
    std::vector<std::thread> workers;
    for (int id = 0; id < t; ++id) {
      workers.emplace_back([&, id] {
        bench::rng r(static_cast<std::uint64_t>(phase) * 131 + id);
        std::uint64_t sum = 0;
        std::vector<char*> mine;
        std::size_t grow_n = 64;
        char* grow = alloc_touched(grow_n);
        for (std::size_t i = 0; i < steps; ++i) {
          const std::uint64_t what = r.next() % 100;
          if (what < 50) {
            mine.push_back(alloc_touched(pick_size(r)));
          } else if (what < 80 && !mine.empty()) {
            sum += static_cast<unsigned char>(mine.back()[0]);
            std::free(mine.back());
            mine.pop_back();
          } else if (what < 98) {
            // Swap a block into the shared array; free whatever was there.
            char* old = shared[r.next() % kShared].exchange(alloc_touched(pick_size(r)));
            if (old != nullptr) {
              sum += static_cast<unsigned char>(old[0]);
              std::free(old);
            }
          } else if (grow_n < (std::size_t{1} << 20)) {
            grow_n += grow_n / 2;
            grow = static_cast<char*>(std::realloc(grow, grow_n));
            grow[grow_n - 1] = 1;
          }
        }
        for (char* p : mine) std::free(p);
        std::free(grow);
        check += sum;
      });
    }
    for (auto& w : workers) w.join();
  }
  const double s = clock.seconds();
  for (auto& slot : shared) std::free(slot.load());
  bench::report("mstress", s, static_cast<std::uint64_t>(phases) * t * steps, check.load());
}
