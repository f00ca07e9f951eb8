// fork() while another thread's flush holds the whole stack (taken by
// unmap_deferred_now, not yet unmapped: in its grace period or its unmaps).
// The child has no such thread: those segments are never unmapped there
// (not by trim(), not by a later batch), and g_deferred_count /
// g_deferred_bytes, decremented only as they are unmapped, stay counted
// for good: from then on every eviction in the child is "over the bound"
// and pays a grace period of its own (the batching the change brings is off
// for the child's life). The child reports through its exit status.
// Fixed: the flusher's batch waits in a slot the child's fork handler puts
// back on the stack, and the counters are recounted there
// (recount_deferred_after_fork).
#include <sys/wait.h>
#include <unistd.h>

#include "tests/attack39/common.h"

using namespace attack39;

TEST_CASE("a child forked during a flush: the flusher's segments leak, the batch count stays full") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap hb(dropalloc::testing::with_os_no_decay(&os_b));
  os::fake_os real_a;
  core::heap ha(dropalloc::testing::with_os_no_decay(&real_a));

  core::unmap_deferred_segments();
  std::size_t next_a = free_growing(ha, kLarge, kCacheSlots + 2);  // two of A's wait
  std::thread b([&] {
    std::size_t next = free_growing(hb, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(hb, next, static_cast<int>(core::kRetiredBatchSegments) - 2);
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int bad = 0;
    ha.trim();  // nothing of A's is live: every arena A mapped should go
    if (real_a.arena_maps.load() != real_a.arena_unmaps.load()) {
      std::fprintf(stderr, "child: after trim() %d of A's arenas still mapped\n",
                   real_a.arena_maps.load() - real_a.arena_unmaps.load());
      bad |= 1;
    }
    next_a = free_growing(ha, next_a, kCacheSlots);  // the slots full again
    const int before = real_a.arena_unmaps.load();
    free_growing(ha, next_a, 1);  // one eviction: should wait for its batch
    if (real_a.arena_unmaps.load() != before) {
      std::fprintf(stderr, "child: a lone eviction was unmapped at once (the batch count never came down)\n");
      bad |= 2;
    }
    std::fflush(stderr);
    _exit(bad);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK_MESSAGE((WEXITSTATUS(status) & 1) == 0, "child: the flusher's segments were never unmapped");
  CHECK_MESSAGE((WEXITSTATUS(status) & 2) == 0, "child: g_deferred_count stayed at the bound");
  os_b.release.store(true);
  b.join();
  ha.trim();
  hb.trim();
  CHECK(real_a.arena_maps.load() == real_a.arena_unmaps.load());  // the parent: all went
}
