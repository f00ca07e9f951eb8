// Run with libdropalloc.so preloaded. BUG (f062246), with
// DROPALLOC_DECAY_THREAD=0 (README: "then decay happens on later frees and
// on trim() / malloc_trim(0)"): a freed large block past the resident bound
// keeps its pages resident for good while the program goes on with small
// allocations and frees only.
//
// Before f062246 (04d777f) such a block's pages were released as it was
// freed (cache_large). Now cache_large only marks it due; the pages go in
// release_due_large(), called from allocate_large before a NEW large
// mapping (heap.cc) and from heap::decay() (decay.cc). Without the purger
// thread nothing calls decay() but trim(): decay_class_on_free (the "decay
// on later frees") only purges small-class pages and never looks at the
// large cache, and cache_large (a later large free) unmaps only entries
// older than the decay time and releases no due one. So: free(30 MiB) with nothing else large live
// (bound 4 MiB) -> due -> stays resident (30 MiB of RSS) through any number
// of later small frees, forever, where 04d777f released it at once. The
// resident bound the README promises ("its pages go back before the next
// new large mapping is made or at the next decay pass") never applies: no
// decay pass comes.
//
// Control (shim_idle_due_thread_test, the purger on): released within a few
// decay times.
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vector>

#include "tests/shim/shim_check.h"

namespace {

constexpr size_t kKiB = 1024, kMiB = kKiB * kKiB;

size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

uint64_t resident() {
  dropalloc_stats st{};
  CHECK(shim_stats(&st) == 0);
  return st.bytes_resident;
}

}  // namespace

int main() {
  require_shim();
  void* big = malloc(opaque(30 * kMiB));
  CHECK(big != nullptr);
  memset(big, 0x5a, 30 * kMiB);
  const uint64_t with_big = resident();
  free(big);  // nothing else large live: past the 4 MiB floor, due
  // The program goes on with small allocations and frees, for ten decay
  // times (DROPALLOC_DECAY_MS=100 here).
  for (int round = 0; round < 100; ++round) {
    std::vector<void*> v;
    for (int i = 0; i < 200; ++i) {
      v.push_back(malloc(opaque(16 + (i * 37) % 4000)));
      memset(v.back(), 1, 16);
    }
    for (void* p : v) free(p);
    usleep(10000);
  }
  const uint64_t after = resident();
  fprintf(stderr, "resident with the 30 MiB block live: %llu KiB; 1 s of small frees after its free: %llu KiB\n",
          (unsigned long long)(with_big / 1024), (unsigned long long)(after / 1024));
  if (after + 20 * kMiB > with_big) {
    fprintf(stderr, "the freed 30 MiB block's pages are still resident (due, never released)\n");
  }
  CHECK(after + 20 * kMiB <= with_big);
  printf("ok\n");
  return 0;
}
