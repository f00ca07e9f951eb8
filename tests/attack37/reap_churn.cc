// Regression (held): the looks for tables of exited threads under load.
// Threads are started and end all the time, a third of them with their
// first allocation in the last round of key destructors (their tables are
// never handed back by their exit handler: only a look finds them); two
// threads call trim() (a look at every table) and stats() (which walks the
// tables) on the resources in turn; a heap is made and destroyed in a loop;
// a thread forks and the child checks its registry (only its own table on
// the list, a spare list that ends) and allocates. At the end, with every
// thread joined, one trim() leaves only the main thread's table, and no
// block is live. A watchdog aborts a hang.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack37/common.h"

namespace {
// Seconds of churn: fewer under a sanitizer.
int attack37_seconds() {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  return 3;
#else
  return 5;
#endif
}
}  // namespace

using dropalloc::droppable_resource;

namespace {

constexpr int kHeaps = 3;
droppable_resource* g_res[kHeaps];
pthread_key_t g_key;
thread_local int t_round = 0;

void key_destructor(void*) {
  if (++t_round == 4) {
    for (auto* r : g_res) r->deallocate(r->allocate(80, 8), 80, 8);
  }
  if (t_round < 4) pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

void* late_thread(void*) {
  pthread_setspecific(g_key, reinterpret_cast<void*>(1));
  return nullptr;
}

void* normal_thread(void* arg) {
  auto* r = g_res[reinterpret_cast<std::uintptr_t>(arg) % kHeaps];
  void* p[16];
  for (auto& x : p) x = r->allocate(32, 8);
  for (auto& x : p) r->deallocate(x, 32, 8);
  return nullptr;
}

// No purger thread: a forked child would start one at its first allocation,
// and ASan's runtime can deadlock creating a thread in the child of a
// multi-threaded fork (its thread registry lock copied held).
dropalloc::resource_options quiet() {
  dropalloc::resource_options o;
  o.background_decay = false;
  return o;
}

int child_check(const void* mine) {
  auto& r = dropalloc::core::internal::registry();
  int on_list = 0, others = 0, spares = 0;
  {
    dropalloc::core::lock_guard g(r.lock);
    for (auto* t = r.tables; t != nullptr && on_list + others < 10000; t = t->next) {
      if (t == mine) ++on_list; else ++others;
    }
    for (auto* t = r.spare_tables; t != nullptr && spares < 100; t = t->next) ++spares;
  }
  for (auto* res : g_res) res->deallocate(res->allocate(64, 8), 64, 8);
  if (mine != nullptr && on_list != 1) return 1;
  if (others != 0) return 2;
  if (spares > 4) return 3;
  return 0;
}

}  // namespace

TEST_CASE("looks for exited threads' tables under thread churn, trim, stats, heap churn and fork") {
  alarm(120);  // watchdog: SIGALRM kills a hang
  std::unique_ptr<droppable_resource> res[kHeaps];
  for (int i = 0; i < kHeaps; ++i) {
    res[i] = std::make_unique<droppable_resource>(quiet());
    g_res[i] = res[i].get();
  }
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  for (auto* r : g_res) r->deallocate(r->allocate(16, 8), 16, 8);
  const std::size_t baseline = attack37::tables_on_registry();

  std::atomic<bool> stop{false};
  std::atomic<int> forks{0}, bad_children{0};
  std::vector<std::thread> helpers;
  for (int k = 0; k < 2; ++k) {
    helpers.emplace_back([&, k] {
      unsigned n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        g_res[(n + k) % kHeaps]->trim();
        (void)g_res[n % kHeaps]->stats();
        ++n;
      }
    });
  }
  helpers.emplace_back([&] {  // a heap made and destroyed (~heap releases spares)
    while (!stop.load(std::memory_order_relaxed)) {
      droppable_resource tmp(quiet());
      tmp.deallocate(tmp.allocate(256, 8), 256, 8);
      tmp.trim();
    }
  });
  helpers.emplace_back([&] {  // forks
    while (!stop.load(std::memory_order_relaxed)) {
      g_res[0]->deallocate(g_res[0]->allocate(24, 8), 24, 8);
      const void* mine = attack37::my_table();
      pid_t pid = fork();
      if (pid == 0) _exit(child_check(mine));
      if (pid < 0) continue;
      int status = 0;
      waitpid(pid, &status, 0);
      forks.fetch_add(1);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::printf("child status %#x\n", status);
        bad_children.fetch_add(1);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  pthread_attr_t detached;
  pthread_attr_init(&detached);
  pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(attack37_seconds());
  int started = 0;
  for (std::uintptr_t i = 0; std::chrono::steady_clock::now() < end; ++i) {
    pthread_t t[4];
    for (int j = 0; j < 4; ++j) {
      const bool late = (i + j) % 3 == 0;
      if (pthread_create(&t[j], nullptr, late ? late_thread : normal_thread, reinterpret_cast<void*>(i + j)) != 0) {
        t[j] = 0;
      } else {
        ++started;
      }
    }
    pthread_t d;
    if (pthread_create(&d, &detached, (i % 2) != 0 ? late_thread : normal_thread, reinterpret_cast<void*>(i)) == 0) {
      ++started;
    }
    for (auto x : t) {
      if (x != 0) pthread_join(x, nullptr);
    }
  }
  stop.store(true);
  for (auto& h : helpers) h.join();
  pthread_attr_destroy(&detached);
  for (int i = 0; i < 4000 && attack37::threads_alive() > 1; ++i) usleep(1000);
  if (attack37::threads_alive() != 1) {
    std::printf("threads alive: %zu\n", attack37::threads_alive());
    std::fflush(stdout);
    (void)!system("for t in /proc/$PPID/task/*; do echo $t $(cat $t/comm) $(cat $t/wchan); done >&2");
  }
  REQUIRE(attack37::threads_alive() == 1);
  const std::size_t gone_before_trim = attack37::tables_of_gone_threads();
  for (int i = 0; i < 3 && attack37::tables_of_gone_threads() != 0; ++i) g_res[0]->trim();
  const std::size_t gone = attack37::tables_of_gone_threads();
  std::printf("%d threads, %d forks (%d bad children); tables on the registry %zu -> %zu, of gone threads "
              "%zu before trim(), %zu after\n",
              started, forks.load(), bad_children.load(), baseline, attack37::tables_on_registry(),
              gone_before_trim, gone);
  CHECK(bad_children.load() == 0);
  CHECK(gone == 0);
  for (auto* r : g_res) {
    r->trim();
    CHECK(r->stats().blocks_live == 0);
  }
  pthread_key_delete(g_key);
  alarm(0);
}
