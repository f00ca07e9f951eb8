// Promise 1: fork while the advice queue holds entries (and while another
// thread seals, so that the queue's lock may be taken at the fork). The
// child gives the inherited queue (seal_all), checks every block (wiped in
// the child: `dropped`, never `intact` over other bytes), seals and checks
// new ones; the parent goes on. No hang, no crash, truth held.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
using dropalloc::block_state;

TEST_CASE("fork with queued advice and a sealing thread: the child gives it and its checks hold") {
  core::heap h(dropalloc::testing::with_os(&dropalloc::os::system_os()));
  std::vector<void*> mine;
  std::vector<std::uint64_t> gens;
  for (int i = 0; i < 200; ++i) {
    core::alloc_error err{};
    void* p = h.allocate(i % 2 == 0 ? 48 : 3000, 16, &err);
    REQUIRE(p != nullptr);
    dropalloc::testing::fill(p, h.usable_size(p), i);
    std::uint64_t g = 0;
    REQUIRE(h.seal(p, &g) == block_state::intact);  // queued (MAP_DROPPABLE)
    mine.push_back(p);
    gens.push_back(g);
  }
  std::atomic<bool> stop{false};
  std::thread sealer([&] {
    std::vector<void*> ps;
    int i = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      core::alloc_error err{};
      void* p = h.allocate(++i % 3 == 0 ? 1000 : 64, 16, &err);
      if (p == nullptr) continue;
      std::memset(p, 0x33, h.usable_size(p));
      (void)h.seal(p);
      ps.push_back(p);
      if (ps.size() > 300) {
        for (void* q : ps) h.deallocate(q);
        ps.clear();
      }
    }
    for (void* q : ps) h.deallocate(q);
  });
  int bad_children = 0;
  for (int f = 0; f < 20; ++f) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int status = 0;
      h.seal_all();
      for (std::size_t i = 0; i < mine.size(); ++i) {
        // Droppable memory is wiped in the child (README, "Fork"): the
        // blocks read `dropped`; never `intact` over other contents.
        const bool same = dropalloc::testing::holds(mine[i], h.usable_size(mine[i]), i);
        const block_state st = h.check(mine[i], gens[i]);
        if (st == block_state::intact && !same) status |= 1;
        if (st != block_state::intact && st != block_state::dropped) status |= 2;
      }
      for (int i = 0; i < 300; ++i) {
        core::alloc_error err{};
        void* p = h.allocate(48, 16, &err);
        if (p == nullptr) {
          status |= 4;
          break;
        }
        std::memset(p, 0x44, 48);
        std::uint64_t g = 0;
        if (h.seal(p, &g) != block_state::intact) status |= 8;
        if (h.check(p, g) != block_state::intact) status |= 8;
      }
      h.seal_all();
      _exit(status);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      ++bad_children;
      MESSAGE("child " << f << ": " << (WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st)));
    }
  }
  stop = true;
  sealer.join();
  CHECK(bad_children == 0);
  h.seal_all();
  for (std::size_t i = 0; i < mine.size(); ++i) CHECK(h.check(mine[i], gens[i]) == block_state::intact);
  for (void* p : mine) h.deallocate(p);
}
