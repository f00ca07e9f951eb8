// More threads than reader slots (1024): the rest read under the overflow
// lock. All of them seal (queueing advice, try_lock on advice_lock_, flushing
// batches inside read sections), write_and_seal, check, free, seal_all and
// trim, while the background purger decays (flush_advice under the registry
// lock) and a thread forks repeatedly (prefork takes every advice lock); each
// child seals, flushes, trims and checks, and must exit. A watchdog turns a
// hang (deadlock) into a failure. The real OS (MAP_DROPPABLE where it exists).
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res = nullptr;
std::atomic<int> g_ready{0};
std::atomic<bool> g_go{false};
std::atomic<bool> g_stop{false};
std::atomic<long> g_ops{0}, g_bad{0};
constexpr int kThreads = 1100;

void* worker(void* arg) {
  const auto t = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(arg));
  droppable_resource& r = *g_res;
  // Take a reader slot (or not, past 1024) before the others go.
  (void)r.check(nullptr, 1);
  block_ref first = r.allocate_block(64);
  std::memset(first.ptr, 1, 64);
  (void)r.seal(first);
  g_ready.fetch_add(1);
  while (!g_go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  unsigned x = t * 2654435761u + 1;
  unsigned char src[6000];
  for (int i = 0; !g_stop.load(std::memory_order_relaxed) && i < 400; ++i) {
    x = x * 1103515245u + 12345u;
    const std::size_t n = 16 + x % 5000;
    block_ref b = r.allocate_block(n);
    std::memset(b.ptr, static_cast<int>(x >> 8) | 1, n);
    block_state st = (x >> 4) % 3 == 0 ? r.write_and_seal(b, (std::memset(src, 7, n), src), n) : r.seal(b);
    if (st == block_state::intact) {
      const unsigned char want = (x >> 4) % 3 == 0 ? 7 : static_cast<unsigned char>((x >> 8) | 1);
      // owner-only block: intact means its bytes are what was sealed
      for (std::size_t k = 0; k < n; ++k) {
        if (static_cast<const unsigned char*>(b.ptr)[k] != want) {
          if (r.check(b) == block_state::intact) g_bad.fetch_add(1);
          break;
        }
      }
    }
    if (x % 97 == 0) (void)r.seal_all();
    if (x % 211 == 0) (void)r.trim();
    r.deallocate(b);
    g_ops.fetch_add(1, std::memory_order_relaxed);
  }
  r.deallocate(first);
  return nullptr;
}

}  // namespace

TEST_CASE("more threads than reader slots, background purger, forks: no deadlock, no hang") {
  dropalloc::resource_options o;
  o.background_decay = true;
  o.empty_arena_decay_ms = 2;
  droppable_resource r(o);
  g_res = &r;
  MESSAGE("backing: ", std::string(dropalloc::to_string(r.arena_backing())));
  std::vector<pthread_t> threads(kThreads);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  int made = 0;
  for (int i = 0; i < kThreads; ++i) {
    if (pthread_create(&threads[i], &attr, worker, reinterpret_cast<void*>(static_cast<std::uintptr_t>(i))) != 0) break;
    ++made;
  }
  pthread_attr_destroy(&attr);
  MESSAGE("threads made: ", made);
  REQUIRE(made > 1024);
  while (g_ready.load() < made) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  g_go = true;
  // Forks while they run.
  int forks = 0, hung = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  while (forks < 30 && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(20);
      droppable_resource& c = *g_res;
      for (int i = 0; i < 100; ++i) {
        block_ref b = c.allocate_block(100 + i * 37);
        std::memset(b.ptr, 3, 100 + i * 37);
        (void)c.seal(b);
        if (i % 10 == 0) (void)c.seal_all();
        (void)c.check(b);
        c.deallocate(b);
      }
      (void)c.trim();
      _exit(0);
    }
    REQUIRE(pid > 0);
    ++forks;
    int status = 0;
    bool done = false;
    for (int w = 0; w < 3000 && !done; ++w) {
      if (waitpid(pid, &status, WNOHANG) == pid) done = true;
      else std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!done) {
      ++hung;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      MESSAGE("child status ", status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Watchdog for the parent's threads.
  std::atomic<bool> joined{false};
  std::thread dog([&] {
    for (int i = 0; i < 1800 && !joined.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!joined.load()) {
      std::fprintf(stderr, "watchdog: workers still running after 180 s (ops %ld): deadlock\n", g_ops.load());
      std::fflush(stderr);
      std::_Exit(3);
    }
  });
  for (int i = 0; i < made; ++i) pthread_join(threads[i], nullptr);
  joined = true;
  dog.join();
  MESSAGE("forks ", forks, " hung ", hung, " failed ", failed, " ops ", g_ops.load());
  CHECK(hung == 0);
  CHECK(failed == 0);
  CHECK(g_bad.load() == 0);
}
