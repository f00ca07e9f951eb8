// The co-tenant of the cgroup pressure benchmark: a neighbour using ordinary
// memory. After the go byte it sleeps until --start, allocates and touches
// --mib MiB evenly over --ramp seconds, holds it for --hold seconds, frees it
// and exits. Reports "CT t=<monotonic s> mib=<held>" as it goes and
// "LEFT t=<s>" after freeing, so the driver can draw it and time the regrowth.
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/pressure/workload.h"

int main(int argc, char** argv) {
  pressure::line_buffered();
  double start = 0, ramp = 1, hold = 1;
  long mib = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("--start=", 0) == 0) start = std::atof(argv[i] + 8);
    else if (a.rfind("--ramp=", 0) == 0) ramp = std::atof(argv[i] + 7);
    else if (a.rfind("--hold=", 0) == 0) hold = std::atof(argv[i] + 7);
    else if (a.rfind("--mib=", 0) == 0) mib = std::atol(argv[i] + 6);
    else {
      std::fprintf(stderr, "usage: %s --mib=N --start=S --ramp=S --hold=S\n", argv[0]);
      return 2;
    }
  }
  std::printf("READY pid=%d\n", static_cast<int>(getpid()));
  pressure::wait_for_go();
  double t0 = pressure::now_s();
  auto sleep_until = [](double t) {
    double d = t - pressure::now_s();
    if (d > 0) std::this_thread::sleep_for(std::chrono::duration<double>(d));
  };
  sleep_until(t0 + start);
  std::printf("CT t=%.4f mib=0\n", pressure::now_s());
  // Plain anonymous mappings, 1 MiB each, every page written: memory that
  // cannot be dropped, as any ordinary program's.
  std::vector<void*> chunks;
  double ramp_start = pressure::now_s();
  for (long i = 0; i < mib; ++i) {
    sleep_until(ramp_start + ramp * static_cast<double>(i) / static_cast<double>(mib));
    void* p = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 4;
    std::memset(p, static_cast<int>(i | 1), 1 << 20);
    chunks.push_back(p);
    if (i % 4 == 3 || i + 1 == mib) std::printf("CT t=%.4f mib=%ld\n", pressure::now_s(), i + 1);
  }
  double held = pressure::now_s();
  while (pressure::now_s() < held + hold) {
    // Touch what is held now and then, as a live program would.
    for (void* p : chunks) static_cast<volatile char*>(p)[0] = 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (void* p : chunks) munmap(p, 1 << 20);
  std::printf("LEFT t=%.4f\n", pressure::now_s());
  return 0;
}
