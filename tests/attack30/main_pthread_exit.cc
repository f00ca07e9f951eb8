// Held: the main thread, whose exit handler is registered twice (the key and
// __cxa_thread_atexit_impl), calls pthread_exit while other threads run and
// start new threads: its thread_local destructors run the handler (its table
// retired, maybe kept as a spare), then the key's destructor calls it again,
// which must do nothing (the table may already belong to a new thread).
// (glibc 2.36 runs no thread_local destructor of a main thread that calls
// pthread_exit, only its key destructors: __libc_start_call_main calls
// __nptl_deallocate_tsd alone; so only dropalloc's key flushes the table.)
// The main thread frees blocks in a key destructor, after its table is gone. A coordinator thread then checks,
// over 200 waves of new threads adopting spare tables, that blocks are whole
// and distinct, blocks_live exact, nothing refused, and exits with the
// status.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack30/common.h"

using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res;
std::atomic<int> g_bad{0};
pthread_key_t g_key;
std::atomic<bool> g_main_gone{false};

#define EXPECT(c)                                                   \
  do {                                                              \
    if (!(c)) {                                                     \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
      g_bad.fetch_add(1);                                           \
    }                                                               \
  } while (0)

std::vector<void*> g_held;

void key_destructor(void* v) {
  for (void* p : g_held) g_res->deallocate(p, 96, 8);
  g_res->deallocate(v, 200, 8);
  g_main_gone = true;
}

void coordinator() {
  while (!g_main_gone.load()) usleep(100);
  {
    const auto st = g_res->stats();
    std::printf("after main's exit: blocks_live %llu, misuse_refused %llu\n",
                static_cast<unsigned long long>(st.blocks_live), static_cast<unsigned long long>(st.misuse_refused));
    EXPECT(st.blocks_live == 0);
  }
  std::mutex lock;
  for (int wave = 0; wave < (attack30::kSlow ? 60 : 200); ++wave) {
    std::vector<std::pair<unsigned char*, unsigned char>> all;
    std::vector<std::thread> ts;
    for (int t = 0; t < 5; ++t) {
      ts.emplace_back([&, t] {
        std::vector<std::pair<unsigned char*, unsigned char>> mine;
        for (int i = 0; i < 50; ++i) {
          auto* p = static_cast<unsigned char*>(g_res->allocate(96, 8));
          const auto tag = static_cast<unsigned char>(t * 50 + i + 1);
          std::memset(p, tag, 96);
          mine.emplace_back(p, tag);
        }
        std::lock_guard<std::mutex> g(lock);
        all.insert(all.end(), mine.begin(), mine.end());
      });
    }
    for (auto& t : ts) t.join();
    std::set<unsigned char*> seen;
    for (auto& [p, tag] : all) {
      EXPECT(seen.insert(p).second);
      for (int i = 0; i < 96; ++i) {
        if (p[i] != tag) {
          EXPECT(p[i] == tag);
          break;
        }
      }
    }
    EXPECT(g_res->stats().blocks_live == all.size());
    std::thread([&] {
      for (auto& [p, tag] : all) g_res->deallocate(p, 96, 8);
    }).join();
    EXPECT(g_res->stats().blocks_live == 0);
  }
  EXPECT(g_res->stats().misuse_refused == 0);
  const auto tables = attack30::count_tables();
  std::printf("main exited with pthread_exit; %d failures; %zu tables on the registry, %zu spare\n", g_bad.load(),
              tables.live, tables.spare);
  EXPECT(tables.live == 0);  // this thread allocates nothing itself
  std::fflush(stdout);
  std::exit(g_bad.load() == 0 ? 0 : 1);
}

}  // namespace

// LeakSanitizer: glibc's record for the main thread's __cxa_thread_atexit_impl
// registration (32 bytes, calloc'd in libc): glibc runs no thread_local
// destructor of a main thread that calls pthread_exit, so the record stays.
// Bounded (one per process) and older than the change.
extern "C" const char* __lsan_default_suppressions() { return "leak:libc.so.6\n"; }

int main() {
  static droppable_resource res;
  g_res = &res;
  if (pthread_key_create(&g_key, key_destructor) != 0) return 2;
  for (int i = 0; i < 40; ++i) g_held.push_back(res.allocate(96, 8));
  pthread_setspecific(g_key, res.allocate(200, 8));
  std::thread(coordinator).detach();
  pthread_exit(nullptr);
}
