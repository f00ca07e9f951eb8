// Held: fork() while short threads exit and start (their tables retired and
// adopted around the fork). The child retires the parent's other tables
// (postfork_child), keeps some as spares, and its own new threads adopt
// them: the child's blocks are distinct and whole, blocks_live moves
// exactly with the child's allocations and frees, nothing is refused.
// no_sanitizer: the child starts threads, and a sanitizer's own allocator
// lock, taken by another thread at the fork, hangs it (seen under ASan: every
// child thread in __sanitizer::SizeClassAllocator64::GetFromAllocator).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack29/common.h"

using attack29::tagged;
using dropalloc::droppable_resource;

namespace {

// In the child: 4 threads allocate, check and free; exit status 0 if all held.
int child_work(droppable_resource& res) {
  const std::uint64_t base_live = res.stats().blocks_live;
  const std::uint64_t base_misuse = res.stats().misuse_refused;
  std::vector<tagged> all[4];
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const std::size_t size = 1 + static_cast<std::size_t>((i * 37 + t) % 700);
        tagged b{static_cast<unsigned char*>(res.allocate(size, 8)), size, static_cast<unsigned char>(t * 50 + i % 50 + 1)};
        attack29::fill(b);
        all[t].push_back(b);
      }
    });
  }
  for (auto& t : ts) t.join();
  std::set<unsigned char*> seen;
  int bad = 0;
  for (auto& v : all) {
    for (const tagged& b : v) {
      if (!attack29::holds(b)) ++bad;
      if (!seen.insert(b.p).second) ++bad;
    }
  }
  if (res.stats().blocks_live != base_live + 2000) {
    std::fprintf(stderr, "child: blocks_live %llu, expected %llu\n",
                 static_cast<unsigned long long>(res.stats().blocks_live),
                 static_cast<unsigned long long>(base_live + 2000));
    ++bad;
  }
  // Freed on other (new) threads than the allocating ones.
  ts.clear();
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (const tagged& b : all[(t + 1) % 4]) res.deallocate(b.p, b.size, 8);
    });
  }
  for (auto& t : ts) t.join();
  if (res.stats().blocks_live != base_live) ++bad;
  if (res.stats().misuse_refused != base_misuse) ++bad;
  return bad == 0 ? 0 : 1;
}

}  // namespace

TEST_CASE("fork while threads exit and start") {
  droppable_resource res;
  std::atomic<bool> stop{false};
  std::vector<std::thread> spawners;
  for (int s = 0; s < 2; ++s) {
    spawners.emplace_back([&, s] {
      int n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        std::thread([&res, s, n] {
          std::vector<void*> ps;
          for (int i = 0; i < 40; ++i) ps.push_back(res.allocate(16 + static_cast<std::size_t>((i + s + n) % 200), 8));
          for (std::size_t i = 0; i < ps.size(); ++i) res.deallocate(ps[i], 16 + (i + static_cast<std::size_t>(s + n)) % 200, 8);
        }).join();
        ++n;
      }
    });
  }
  int failures = 0;
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(child_work(res));
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failures;
      std::fprintf(stderr, "child %d: status %d\n", i, status);
    }
  }
  stop = true;
  for (auto& t : spawners) t.join();
  CHECK(failures == 0);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}
