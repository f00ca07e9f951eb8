// Held: fork() from a thread while it exits: in a thread_local destructor
// (its table still live, registered with the key only: in the child it is
// the main thread, tid == pid) and in a key destructor after dropalloc's
// (its table already retired, maybe kept as a spare). The child, on that
// thread, allocates 600 blocks of several sizes: whole, distinct, counted
// exactly, freed, nothing refused; then it _exits. Meanwhile other threads
// start, allocate and exit in the parent (their tables retired or adopted
// around the fork).
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack30/common.h"

using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res = nullptr;
pthread_key_t g_key;
std::atomic<int> g_failed_children{0};
std::atomic<int> g_forks{0};

int child_work() {
  const auto base = g_res->stats();
  std::vector<std::pair<unsigned char*, std::size_t>> got;
  int bad = 0;
  for (int i = 0; i < 600; ++i) {
    const std::size_t size = 8 + static_cast<std::size_t>(i * 37 % 900);
    auto* p = static_cast<unsigned char*>(g_res->allocate(size, 8));
    std::memset(p, i % 250 + 1, size);
    got.emplace_back(p, size);
  }
  std::set<unsigned char*> seen;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!seen.insert(got[i].first).second) ++bad;
    for (std::size_t b = 0; b < got[i].second; ++b) {
      if (got[i].first[b] != static_cast<unsigned char>(i % 250 + 1)) {
        ++bad;
        break;
      }
    }
  }
  if (g_res->stats().blocks_live != base.blocks_live + 600) ++bad;
  for (auto& [p, size] : got) g_res->deallocate(p, size, 8);
  if (g_res->stats().blocks_live != base.blocks_live) ++bad;
  if (g_res->stats().misuse_refused != base.misuse_refused) ++bad;
  return bad;
}

void fork_and_check() {
  const pid_t pid = fork();
  if (pid == 0) _exit(child_work() == 0 ? 0 : 1);
  if (pid < 0) {
    g_failed_children.fetch_add(1);
    return;
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) g_failed_children.fetch_add(1);
  g_forks.fetch_add(1);
}

thread_local int t_round = 0;

void key_destructor(void*) {
  ++t_round;
  fork_and_check();
  if (t_round < 2) pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

struct forks_at_exit {
  bool armed = false;
  ~forks_at_exit() {
    if (armed) fork_and_check();
  }
};
thread_local forks_at_exit t_fork;

}  // namespace

TEST_CASE("fork from a thread_local destructor and from key destructors") {
  droppable_resource res;
  g_res = &res;
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      std::thread([&] {
        void* ps[16];
        for (int i = 0; i < 16; ++i) ps[i] = res.allocate(32 + static_cast<std::size_t>(i) * 16, 8);
        for (int i = 0; i < 16; ++i) res.deallocate(ps[i], 32 + static_cast<std::size_t>(i) * 16, 8);
      }).join();
    }
  });
  for (int i = 0; i < (attack30::kSlow ? 8 : 25); ++i) {
    std::thread([&] {
      void* p = res.allocate(100, 8);
      t_fork.armed = true;
      pthread_setspecific(g_key, reinterpret_cast<void*>(1));
      res.deallocate(p, 100, 8);
    }).join();
  }
  stop = true;
  churn.join();
  MESSAGE(g_forks.load() << " forks");
  CHECK(g_failed_children.load() == 0);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
  pthread_key_delete(g_key);
  g_res = nullptr;
}
