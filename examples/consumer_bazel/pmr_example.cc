// A pmr vector whose elements live in droppable memory, sealed and checked.
// Exits 0 when everything behaved as documented, 1 otherwise.
#include <cstdio>
#include <cstring>
#include <memory_resource>
#include <vector>

#include "allocator/dropalloc.h"

int main() {
  std::printf("dropalloc %s (header %s)\n", dropalloc::version(), DROPALLOC_VERSION_STRING);
  if (std::strcmp(dropalloc::version(), DROPALLOC_VERSION_STRING) != 0) {
    std::fprintf(stderr, "pmr_example: library and header versions differ\n");
    return 1;
  }

  dropalloc::droppable_resource res;

  // A container: its elements come from the resource like any pmr allocation.
  std::pmr::vector<int> squares(&res);
  for (int i = 0; i < 10000; ++i) squares.push_back(i * i);
  long long sum = 0;
  for (int v : squares) sum += v;
  std::printf("sum of squares below 10000: %lld\n", sum);
  if (sum != 333283335000LL) return 1;

  // A block: written, sealed, then checked.
  char text[] = "regenerable bytes";
  auto b = res.allocate_block(sizeof text);
  res.write_and_seal(b.ptr, text, sizeof text);
  bool intact = res.is_intact(b);
  std::printf("block after seal: %s\n", intact ? "intact" : "not intact");
  res.deallocate(b);
  // Freed since: the same (pointer, generation) is no longer intact.
  bool stale = !res.is_intact(b);
  std::printf("block after free: %s\n", stale ? "stale" : "still intact?");
  return intact && stale ? 0 : 1;
}
