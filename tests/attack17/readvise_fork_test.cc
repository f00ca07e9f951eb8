// Locks of the re-advice: check() (from check_all(), under the heap's
// segments lock) and seals that find a loss now take seal locks (try_lock) and
// call madvise. Threads seal, drop their own pages, check, check_all,
// write_and_seal, seal_rewritten and free in the private fallback (real OS)
// while the main thread forks; every child (its arenas read as zeros:
// everything sealed is found dropped, and re-advised) checks, seals and
// sweeps, and must exit within 30 s. No hang, no child failure.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("fallback re-advice with forks: no deadlock, no hang") {
  dropalloc::resource_options o;
  o.force_fallback = true;
  droppable_resource res(o);
  REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0};
  auto worker = [&](int t) {
    std::mt19937_64 rng(t);
    std::vector<block_ref> mine;
    std::vector<unsigned char> src(20000, 9);
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t n = rng() % 2 ? 8 + rng() % 200 : 2000 + rng() % 12000;
      block_ref b = res.allocate_block(n);
      std::memset(b.ptr, 1 + t, n);
      (void)res.seal(b);
      if (rng() % 2) (void)res.drop_for_testing(b.ptr, n);
      (void)res.check(b);
      if (rng() % 4 == 0) (void)res.write_and_seal(b, src.data(), n);
      if (res.check(b) == block_state::dropped) {
        std::memset(b.ptr, 3, n);
        (void)res.seal_rewritten(b);
      }
      mine.push_back(b);
      if (mine.size() > 64 || rng() % 3 == 0) {
        const std::size_t k = rng() % mine.size();
        res.deallocate(mine[k]);
        mine.erase(mine.begin() + static_cast<long>(k));
      }
      if (rng() % 16 == 0) (void)res.check_all();
      ops.fetch_add(1, std::memory_order_relaxed);
    }
    for (auto& b : mine) res.deallocate(b);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back(worker, t);
  int children = 0, failed = 0, hung = 0;
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      alarm(30);
      // The arenas read as zeros here, so no block that held data is intact;
      // but a block may have been sealed over zeros (a neighbour's drop
      // zeroed its page between its write and its seal), and such a block
      // reads intact anywhere: the sweep's counts prove nothing here.
      (void)res.check_all();
      block_ref b = res.allocate_block(3000);
      std::memset(b.ptr, 5, 3000);
      int rc = res.seal(b) == block_state::intact ? 0 : 3;
      (void)res.check_all();
      res.deallocate(b);
      _exit(rc);
    }
    ++children;
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (w == 0) {
      ++hung;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      MESSAGE("child " << i << (WIFEXITED(status) ? ": exit " : ": signal ")
                       << (WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
    }
  }
  stop = true;
  for (auto& th : threads) th.join();
  MESSAGE("ops ", ops.load(), ", children ", children, ", failed ", failed, ", hung ", hung);
  CHECK(hung == 0);
  CHECK(failed == 0);
}
