// _Fork() (glibc 2.34+: fork without the atfork handlers; a single-threaded
// parent's child may call anything, malloc included) leaves the child's only
// thread with the table its parent made, whose tid is the PARENT's thread id.
// postfork_child, which rewrites it, never ran. The child's first new thread
// then looks at that table: tgkill(child pid, parent's tid, 0) says ESRCH
// (no such thread in the child's group), so the new thread "reaps" the table
// of the child's main thread while that thread is alive and using it: its
// cached blocks are handed back under it, the table becomes a spare (or is
// unmapped), and the next new thread gets the same table: two live threads
// share one cache (the same block handed out twice).
//
// dropalloc is this program's malloc (cc_test malloc = //allocator:malloc);
// the BUILD target turns the purger thread off so the parent is
// single-threaded.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tests/attack37/common.h"

namespace {

using attack37::my_table;

void* touch(void* out) {
  void* p = std::malloc(64);
  std::free(p);
  *static_cast<void**>(out) = my_table();
  return nullptr;
}

void* run_thread_recording_table() {
  void* table = nullptr;
  pthread_t t;
  if (pthread_create(&t, nullptr, touch, &table) != 0) _exit(90);
  pthread_join(t, nullptr);
  return table;
}

pthread_barrier_t g_hold;
std::atomic<bool> g_go{false};
std::atomic<long> g_clobbered{0};

// Allocates blocks, stamps them with its own byte, checks the stamp is
// still there before freeing: a block handed to two threads at once shows.
void churn(unsigned char stamp) {
  constexpr int kLive = 64;
  unsigned char* live[kLive] = {};
  for (int round = 0; round < 20000; ++round) {
    const int i = round % kLive;
    if (live[i] != nullptr) {
      for (int b = 0; b < 48; ++b) {
        if (live[i][b] != stamp) {
          g_clobbered.fetch_add(1, std::memory_order_relaxed);
          break;
        }
      }
      std::free(live[i]);
    }
    live[i] = static_cast<unsigned char*>(std::malloc(48));
    std::memset(live[i], stamp, 48);
  }
  for (auto* p : live) std::free(p);
}

struct held_thread {
  pthread_t id;
  void* table = nullptr;
  bool shares = false;
};

void* held(void* arg) {
  auto* h = static_cast<held_thread*>(arg);
  std::free(std::malloc(64));
  h->table = my_table();
  pthread_barrier_wait(&g_hold);  // all have their tables
  pthread_barrier_wait(&g_hold);  // main decided who shares
  if (h->shares) churn(0x5a);
  return nullptr;
}

// In the child. Exit codes: 0 fine, 1 main's table reaped, 2 and a new thread
// owning main's table as well, 3 and blocks handed to both.
int child_body() {
  void* mine = my_table();
  if (mine == nullptr) return 91;
  const int tid_in_table = attack37::table_tid(my_table());
  std::printf("child %d: main thread's table %p records tid %d\n", getpid(), mine, tid_in_table);
  (void)run_thread_recording_table();  // its first allocation looks at two tables
  const bool still_mine = attack37::on_registry(my_table());
  std::printf("child: after one thread, main's table on the registry: %s, on the spares: %s\n",
              still_mine ? "yes" : "NO", attack37::on_spares(my_table()) ? "YES" : "no");
  int rc = still_mine ? 0 : 1;
  // Threads alive at once take every spare.
  constexpr int kHeld = 4;
  held_thread h[kHeld];
  pthread_barrier_init(&g_hold, nullptr, kHeld + 1);
  for (auto& x : h) pthread_create(&x.id, nullptr, held, &x);
  pthread_barrier_wait(&g_hold);
  bool any = false;
  for (int i = 0; i < kHeld; ++i) {
    if (h[i].table == mine) {
      std::printf("child: new thread %d got table %p, which the live main thread still uses\n", i, mine);
      h[i].shares = true;
      any = true;
      rc = 2;
    }
  }
  pthread_barrier_wait(&g_hold);
  if (any) churn(0xa5);  // both use one cache at once
  for (auto& x : h) pthread_join(x.id, nullptr);
  if (g_clobbered.load() != 0) {
    std::printf("child: %ld blocks found overwritten by the other thread (handed to both)\n", g_clobbered.load());
    rc = 3;
  }
  std::fflush(stdout);
  return rc;
}

}  // namespace

TEST_CASE("a child made by _Fork() keeps its main thread's cache table when it starts threads") {
  REQUIRE(attack37::threads_alive() == 1);  // DROPALLOC_DECAY_THREAD=0: no purger thread
  std::free(std::malloc(64));
  REQUIRE(my_table() != nullptr);
  std::fflush(stdout);
  // The control (ATTACK37_PLAIN_FORK=1) forks with fork(): postfork_child
  // rewrites the tid, and nothing is reaped.
  const bool plain = std::getenv("ATTACK37_PLAIN_FORK") != nullptr;
  pid_t pid = plain ? fork() : _Fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(child_body());
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status)) std::printf("child killed by signal %d\n", WTERMSIG(status));
  REQUIRE(WIFEXITED(status));
  const int rc = WEXITSTATUS(status);
  std::printf("child exit code %d\n", rc);
  CHECK(rc == 0);
}
