// The co-tenant of the cgroup pressure benchmark: a neighbour using ordinary
// memory, and the measure of what a cache costs it.
//
// After the go byte it sleeps until --start, then --waves times: allocates and
// touches --mib MiB in 1 MiB steps spread evenly over --ramp seconds, holds it
// for --hold seconds, frees it, and waits --gap seconds before the next wave.
// Each step is timed (mmap + writing every page): beside a cache that keeps
// the cgroup full, a step waits for the kernel to reclaim first. While it is
// present a second thread runs a touch loop (every ms: map 64 KiB, write its
// pages, unmap), the stall a live program would see on its own small
// allocations. Lines for the driver:
//   CT t=<monotonic s> mib=<held>          as it grows (and mib=0 at each arrival)
//   WAVE arrive=<s> full=<s> obtain_ns=<sum of step times> step_p50_ns= step_p99_ns= step_max_ns=
//   LEFT t=<s>                              after each wave's memory is freed
//   STALL n= p50_ns= p99_ns= max_ns=        the touch loop, at the end
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/pressure/workload.h"

namespace {

constexpr std::size_t kStep = 1 << 20, kTouch = 64 << 10;

void sleep_until(double t) {
  double d = t - pressure::now_s();
  if (d > 0) std::this_thread::sleep_for(std::chrono::duration<double>(d));
}

// Maps and writes one chunk; exits (status 4) if the kernel refuses.
void* take(std::size_t n, int fill) {
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::_Exit(4);
  std::memset(p, fill, n);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  pressure::line_buffered();
  double start = 0, ramp = 1, hold = 1, gap = 0;
  long mib = 0, waves = 1;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("--start=", 0) == 0) start = std::atof(argv[i] + 8);
    else if (a.rfind("--ramp=", 0) == 0) ramp = std::atof(argv[i] + 7);
    else if (a.rfind("--hold=", 0) == 0) hold = std::atof(argv[i] + 7);
    else if (a.rfind("--gap=", 0) == 0) gap = std::atof(argv[i] + 6);
    else if (a.rfind("--waves=", 0) == 0) waves = std::atol(argv[i] + 8);
    else if (a.rfind("--mib=", 0) == 0) mib = std::atol(argv[i] + 6);
    else {
      std::fprintf(stderr, "usage: %s --mib=N --start=S --ramp=S --hold=S [--waves=N --gap=S]\n", argv[0]);
      return 2;
    }
  }
  std::printf("READY pid=%d\n", static_cast<int>(getpid()));
  pressure::wait_for_go();
  double t0 = pressure::now_s();
  sleep_until(t0 + start);

  std::atomic<bool> done{false};
  pressure::histogram stall;
  std::thread toucher([&] {
    for (int i = 0; !done.load(std::memory_order_relaxed); ++i) {
      std::uint64_t s = pressure::now_ns();
      void* p = take(kTouch, i | 1);
      munmap(p, kTouch);
      stall.add(pressure::now_ns() - s);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });

  for (long w = 0; w < waves; ++w) {
    double arrive = pressure::now_s();
    std::printf("CT t=%.4f mib=0\n", arrive);
    // Plain anonymous mappings, every page written: memory that cannot be
    // dropped, as any ordinary program's.
    std::vector<void*> chunks;
    pressure::histogram steps;
    std::uint64_t obtain = 0, worst = 0;
    for (long i = 0; i < mib; ++i) {
      sleep_until(arrive + ramp * static_cast<double>(i) / static_cast<double>(mib));
      std::uint64_t s = pressure::now_ns();
      chunks.push_back(take(kStep, static_cast<int>(i | 1)));
      std::uint64_t dt = pressure::now_ns() - s;
      steps.add(dt);
      obtain += dt;
      worst = std::max(worst, dt);
      if (i % 4 == 3 || i + 1 == mib) std::printf("CT t=%.4f mib=%ld\n", pressure::now_s(), i + 1);
    }
    double full = pressure::now_s();
    std::printf("WAVE arrive=%.4f full=%.4f obtain_ns=%llu step_p50_ns=%llu step_p99_ns=%llu step_max_ns=%llu\n",
                arrive, full, (unsigned long long)obtain, (unsigned long long)steps.percentile(0.5),
                (unsigned long long)steps.percentile(0.99), (unsigned long long)worst);
    while (pressure::now_s() < full + hold) {
      // Touch what is held now and then, as a live program would.
      for (void* p : chunks) static_cast<volatile char*>(p)[0] = 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (void* p : chunks) munmap(p, kStep);
    std::printf("LEFT t=%.4f\n", pressure::now_s());
    if (w + 1 < waves) sleep_until(pressure::now_s() + gap);
  }
  done = true;
  toucher.join();
  std::printf("STALL n=%llu p50_ns=%llu p99_ns=%llu max_ns=%llu\n", (unsigned long long)stall.count(),
              (unsigned long long)stall.percentile(0.5), (unsigned long long)stall.percentile(0.99),
              (unsigned long long)stall.max());
  return 0;
}
