// The same measurement as block_rss.c, for blocks of a droppable_resource:
//   bazel-bin/bench/macro_block_rss_resource 3000 4200 5000 9000
// Each size gets a fresh resource, so arenas of one size do not serve the next.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

constexpr int kBlocks = 20000;

long resident_kib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) kib = std::atol(line + 6);
  }
  std::fclose(f);
  return kib;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SIZE...\n", argv[0]);
    return 2;
  }
  for (int a = 1; a < argc; ++a) {
    long n = std::atol(argv[a]);
    if (n <= 0) {
      std::fprintf(stderr, "block_rss_resource: bad size '%s'\n", argv[a]);
      return 2;
    }
    dropalloc::resource_options options;
    options.background_decay = false;  // nothing to decay; keep the figure still
    dropalloc::droppable_resource res(options);
    std::vector<void*> blocks(kBlocks);
    long before = resident_kib();
    for (void*& b : blocks) {
      b = res.allocate(static_cast<std::size_t>(n), 8);
      std::memset(b, 1, static_cast<std::size_t>(n));
    }
    long after = resident_kib();
    double got = (after - before) * 1024.0 / 1e6, ideal = double(kBlocks) * n / 1e6;
    std::printf("%6ld B x %d: %7.1f MB resident, ideal %7.1f MB, %.2fx\n", n, kBlocks, got, ideal, got / ideal);
    for (void* b : blocks) res.deallocate(b, static_cast<std::size_t>(n), 8);
  }
  return 0;
}
