/* LIFO fast path: malloc then free at once, sizes 16-143 B, one thread.
 * Prints ns per malloc+free pair; run it with and without the shim preloaded:
 *
 *   bazel build -c opt //allocator:libdropalloc.so //tests/shim:lifo_bench
 *   bazel-bin/tests/shim/lifo_bench
 *   LD_PRELOAD=bazel-bin/allocator/libdropalloc.so bazel-bin/tests/shim/lifo_bench
 *
 * Not a test: it asserts nothing about time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char** argv) {
  long pairs = argc > 1 ? atol(argv[1]) : 50000000;
  /* Through a volatile pointer so the compiler cannot pair up and delete the
   * calls (it may, for malloc immediately followed by free). */
  void* (*volatile m)(size_t) = malloc;
  void (*volatile f)(void*) = free;
  uintptr_t sink = 0;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now_ns();
    for (long i = 0; i < pairs; ++i) {
      void* p = m(16 + (size_t)(i & 127));
      sink += (uintptr_t)p;
      f(p);
    }
    double per = (now_ns() - t0) / (double)pairs;
    if (per < best) best = per;
  }
  printf("LIFO malloc+free, 16-143 B: %.2f ns per pair (best of 5 x %ld)%s\n", best, pairs,
         sink == 1 ? "" : "");
  return 0;
}
