// A look for tables of exited threads (reap_exited_tables) marks the table
// it found (tid = 0) and unlocks the registry, then calls retire_table on it,
// which measures the table's caches (a mincore per cache) before it takes
// the lock again and unlinks it. A fork() made in that window (here: from a
// signal handler, as POSIX allows; glibc runs the atfork handlers) copies a
// registry where the table is still on the list: the child's
// postfork_child retires it (to the spares) as another thread's table, then
// the interrupted retire_table resumes in the child and retires it again:
// it unlinks a table that is on the spare list (prev == nullptr, so
// r.tables = t->next: the registry list loses every live table, the calling
// thread's own included) and pushes it on the spares a second time
// (t->next = t: a cycle; the next two new threads get the same table).
//
// Against the first design (a thread id per table, the table left on the
// list while retired) the handler forked only when the window was open (a
// table with tid 0 on the list and the registry lock free): within about ten
// trials. Since, a look takes the table off the list in the same hold of the
// registry lock in which it finds it dead. The window is still visible: a
// tag marked in use that no table on the list holds is the tag of a table
// taken off the list and not yet retired (retire_table releases it); a
// table on the list whose owner_alive is unlocked is one a look found dead
// and left there (the design before the fix), or one its owner is handing
// back (harmless: the owner does not exist in the child). The
// handler forks then (no allocator lock is held there; anywhere else the
// fork could wait on a lock its own thread holds), up to kForks times, and
// every child checks its registry. Signals come from
// another thread as fast as it can send them. The tables are made by threads whose first
// allocation is in the last round of key destructors (never handed back by
// their exit handler), each in 16 heaps to widen the window.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "allocator/dropalloc.h"
#include "tests/attack37/common.h"

using dropalloc::droppable_resource;

namespace {

constexpr int kHeaps = 16;
droppable_resource* g_res[kHeaps];
pthread_key_t g_key;
thread_local int t_round = 0;

void key_destructor(void*) {
  if (++t_round == 4) {
    for (auto* r : g_res) r->deallocate(r->allocate(48, 8), 48, 8);
  }
  if (t_round < 4) pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

constexpr int kForks = 100;
std::atomic<bool> g_armed{false};
volatile sig_atomic_t g_in_child = 0;
volatile sig_atomic_t g_forks = 0;
pid_t g_children[kForks];

void on_signal(int) {
  if (!g_armed.load(std::memory_order_relaxed) || g_forks >= kForks || g_in_child) return;
  auto& r = dropalloc::core::internal::registry();
  if (!r.lock.try_lock()) return;
  unsigned held = 0;
  bool unlocked_on_list = false;
  for (auto* t = r.tables; t != nullptr; t = t->next) {
    held |= 1u << t->tag;
    unlocked_on_list = unlocked_on_list || attack37::owner_word(t) == 0;
  }
  const bool window = (r.tags_in_use & ~held) != 0 || unlocked_on_list;
  r.lock.unlock();
  if (!window) return;
  const pid_t pid = fork();
  if (pid == 0) {
    g_in_child = 1;
  } else if (pid > 0) {
    g_children[g_forks] = pid;
    g_forks = g_forks + 1;
  }
}

// In the child, after the interrupted trim() returned: is the registry whole?
int check_child(const void* mine) {
  auto& r = dropalloc::core::internal::registry();
  // No lock: a cycle would hold it forever; only this thread exists.
  int on_list = 0, spares = 0;
  for (auto* t = r.tables; t != nullptr && on_list < 100; t = t->next) on_list += t == mine ? 1 : 0;
  bool cycle = false;
  for (auto* t = r.spare_tables; t != nullptr; t = t->next) {
    if (++spares > 64 || t->next == t) {
      cycle = true;
      break;
    }
  }
  const bool whole = on_list == 1 && !cycle;
  if (!whole) {
    std::printf("child: own table on the registry list %d time(s), spare list %s (%d walked, spare_count %u)\n",
                on_list, cycle ? "CYCLES" : "ends", spares, r.spare_count);
    std::fflush(stdout);
  }
  return whole ? 0 : 4;
}

}  // namespace

TEST_CASE("fork from a signal handler while a look retires an exited thread's table") {
  std::unique_ptr<droppable_resource> res[kHeaps];
  for (int i = 0; i < kHeaps; ++i) {
    res[i] = std::make_unique<droppable_resource>();
    g_res[i] = res[i].get();
  }
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  // The main thread has its table before the signals start.
  for (auto* r : g_res) r->deallocate(r->allocate(48, 8), 48, 8);
  const void* mine = attack37::my_table();
  REQUIRE(mine != nullptr);

  const pthread_t main_thread = pthread_self();
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    while (!stop.load(std::memory_order_relaxed)) pthread_kill(main_thread, SIGUSR1);
  });
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  int trials = 0;
  for (; trials < 20000 && g_forks < kForks && !g_in_child; ++trials) {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec > 20) break;
    g_armed.store(false);
    std::thread([] { pthread_setspecific(g_key, reinterpret_cast<void*>(1)); }).join();
    g_armed.store(true);
    g_res[0]->trim();  // looks at every table: retires the one just left behind
    g_armed.store(false);
  }
  if (g_in_child) _exit(check_child(mine));
  stop.store(true);
  sender.join();
  std::printf("%d trials, %d forks in the window\n", trials, static_cast<int>(g_forks));
  for (int i = 0; i < g_forks; ++i) {
    int status = 0;
    REQUIRE(waitpid(g_children[i], &status, 0) == g_children[i]);
    if (WIFSIGNALED(status)) std::printf("child killed by signal %d\n", WTERMSIG(status));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  pthread_key_delete(g_key);
}
