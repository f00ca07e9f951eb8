// After fork(), the background purger never comes back for a heap that had
// decay work pending at the fork: the child keeps every free arena, cached
// large mapping and free page it inherited or frees later, for good, against
// purger.h ("restarted in a forked child on the next need").
//
// heap::note_decay_work() (core/decay.cc) asks the purger for a run only on
// the false -> true edge of decay_pending_. The flag is inherited by the
// child as it was; purger::forget_after_fork() (core/purger.cc) derives
// g_wanted from g_pending alone, which the parent's purger cleared when it
// woke up and started ticking. So in the child decay_pending_ stays true,
// every later free returns early from note_decay_work() without a request,
// start_if_requested() finds nothing wanted, and no thread is ever started.
// Only trim() still decays. A pre-forking server (every worker is a child
// forked while the parent's heap was busy) never hands memory back.
//
// The parent does the same steps as a control: there the memory goes back.
#include <doctest/doctest.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;

namespace {

// Whether this process has a thread named like the purger.
bool purger_thread_running() {
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
    FILE* f = fopen(path.c_str(), "r");
    if (f == nullptr) continue;
    char name[64] = {};
    if (fgets(name, sizeof name, f) != nullptr && strncmp(name, "dropalloc-decay", 15) == 0) found = true;
    fclose(f);
  }
  closedir(d);
  return found;
}

// Frees memory, then waits (bounded) for the purger to unmap every arena.
// Returns the arenas still mapped.
std::uint64_t free_and_wait(droppable_resource& res) {
  std::vector<void*> ps;
  for (int i = 0; i < 2000; ++i) {
    ps.push_back(res.allocate(256, 8));
    std::memset(ps.back(), 0x5a, 256);
  }
  for (void* p : ps) res.deallocate(p, 256, 8);
  std::uint64_t left = res.stats().arenas_mapped;
  for (int i = 0; i < 400 && left != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    left = res.stats().arenas_mapped;
  }
  return left;
}

}  // namespace

TEST_CASE("a forked child's heap hands memory back on the purger's clock, as the parent's does") {
  dropalloc::resource_options o;
  o.thread_cache = false;        // frees go straight back to their arenas
  o.background_decay = true;
  o.empty_arena_decay_ms = 100;  // a spare empty arena goes after ten decay times
  droppable_resource res(o);

  // Control, in the parent: everything goes back while the program waits.
  CHECK(free_and_wait(res) == 0);
  CHECK(purger_thread_running());

  // Decay work pending at the fork: a freed large block in the large cache
  // (it goes after one decay time; the fork comes well before that).
  void* big = res.allocate(1 << 20, 8);
  std::memset(big, 1, 1 << 20);
  res.deallocate(big, 1 << 20, 8);

  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child: the same steps as the control.
    std::uint64_t left = free_and_wait(res);
    bool thread = purger_thread_running();
    fprintf(stderr, "child: %llu arena(s) still mapped after 4 s; purger thread %s\n",
            static_cast<unsigned long long>(left), thread ? "running" : "never started");
    _exit(left == 0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK_MESSAGE(WEXITSTATUS(status) == 0, "the child's free memory was never handed back (no purger after fork)");
}
