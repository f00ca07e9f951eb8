// eviction_order: which sealed blocks survive when the kernel drops them
// under a memory cgroup limit, by age. A child process in a fresh child
// memory cgroup writes and seals `total` bytes of blocks of one size through
// droppable_resource, one after another, far more than the limit, then
// checks every block (newest first) and prints how many of each tenth
// (oldest first) are still intact. Sealed pages are advised (MADV_FREE) so
// that the kernel drops them oldest first: the newest tenths should survive,
// the oldest go.
//
//   bazel run -c opt //bench:eviction_order -- [block_bytes] [total_mib] [limit_mib]
//   (defaults 4096, 512, 64; needs a writable memory cgroup: root here)
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/cgroup.h"

namespace {

int run_child(std::size_t block, std::size_t total) {
  dropalloc::droppable_resource res;
  const std::size_t n = total / block;
  std::vector<dropalloc::block_ref> refs;
  refs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    dropalloc::block_ref b = res.allocate_block(block);
    if (b.ptr == nullptr) return 3;
    std::memset(b.ptr, static_cast<int>(i % 255 + 1), block);
    res.seal(b);
    refs.push_back(b);
  }
  // Checked newest first: a check reads a witness word of each page, and on
  // a kernel that maps no shared zero page for a read fault, reading a page
  // the kernel dropped faults in a fresh page, charged to the cgroup. Checked
  // oldest first, the lost tenths' fresh pages would push the newest sealed
  // pages out before their turn came, and the run would report what its own
  // reads evicted rather than what survived the writing.
  double share[10];
  for (int d = 9; d >= 0; --d) {
    std::size_t intact = 0, from = n * d / 10, to = n * (d + 1) / 10;
    for (std::size_t i = from; i < to; ++i) intact += res.check(refs[i]) == dropalloc::block_state::intact;
    share[d] = 100.0 * static_cast<double>(intact) / static_cast<double>(to - from);
  }
  std::printf("%s, %zu blocks of %zu B; intact by age, oldest tenth first:",
              dropalloc::to_string(res.arena_backing()), n, block);
  for (double s : share) std::printf(" %3.0f%%", s);
  std::printf("\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t block = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 4096;
  const std::size_t total = (argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 512) << 20;
  const std::uint64_t limit = (argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 64) << 20;
  if (block == 0 || total < block) {
    std::fprintf(stderr, "eviction_order: block_bytes must be > 0 and total_mib large enough\n");
    return 2;
  }
  std::string why;
  auto cg = dropalloc::os::child_cgroup::create("dropalloc-eviction-order", limit, &why);
  if (!cg) {
    std::fprintf(stderr, "eviction_order: no memory cgroup to use: %s\n", why.c_str());
    return 4;
  }
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("eviction_order: fork");
    return 1;
  }
  if (pid == 0) {
    // Joins the cgroup before it maps anything (the parent waits for it).
    std::string err;
    if (!cg->add_process(getpid(), &err)) {
      std::fprintf(stderr, "eviction_order: joining the cgroup: %s\n", err.c_str());
      _exit(1);
    }
    _exit(run_child(block, total));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const auto st = cg->state();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "eviction_order: the child failed (status %d; cgroup OOM kills %llu)\n", status,
                 static_cast<unsigned long long>(st.oom_kills));
    if (st.oom_kills != 0) {
      std::fprintf(stderr,
                   "eviction_order: its own bookkeeping (16 B per block) and the blocks' metadata are ordinary "
                   "memory charged to the cgroup: use bigger blocks, less total or a higher limit\n");
    }
    return 1;
  }
  return 0;
}
