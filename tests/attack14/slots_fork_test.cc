// The fast free section's "slot alone decides" against the slot life cycle:
//   * every slot taken (1024 parked threads that have read): a thread without
//     one frees and double-frees on the slow path under the overflow lock
//     while another trims;
//   * threads exit (slots handed back by the key destructor) and new threads
//     reuse the slots at once, freeing blocks of the exited ones;
//   * fork while other threads are inside fast frees: the child frees and
//     double-frees the parent's blocks and trims.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <cstdint>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"

using dropalloc::core::alloc_error;
using dropalloc::core::heap;

namespace {

void* parked(void* arg) {
  auto* a = static_cast<std::pair<heap*, std::atomic<int>*>*>(arg);
  alloc_error err;
  void* p = a->first->allocate(32, 8, &err);
  (void)a->first->owns(p);  // claims a reader slot
  a->first->deallocate(p);
  a->second->fetch_add(1);
  while (a->second->load() >= 0) usleep(1000);
  return nullptr;
}

}  // namespace

TEST_CASE("every slot taken: frees on the overflow path racing trim") {
  heap h;
  alloc_error err;
  std::atomic<int> ready{0};
  std::pair<heap*, std::atomic<int>*> arg{&h, &ready};
  std::vector<pthread_t> ts;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (int i = 0; i < 1040; ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, parked, &arg) != 0) break;
    ts.push_back(t);
  }
  REQUIRE(ts.size() >= 1030);
  while (ready.load() < static_cast<int>(ts.size())) usleep(1000);
  std::uint64_t expect = h.stats().misuse_refused;
  for (int round = 0; round < 3; ++round) {
    std::vector<void*> ptrs;
    for (int i = 0; i < 300; ++i) ptrs.push_back(h.allocate(16 + 16 * (i % 8), 8, &err));
    std::atomic<int> go{0};
    std::thread trimmer([&] {
      while (go.load() == 0) {
      }
      for (int k = 0; k < 5; ++k) h.trim();
    });
    std::thread freer([&] {
      go.store(1);
      for (void* p : ptrs) h.deallocate(p);
      for (void* p : ptrs) h.deallocate(p);                               // double
      for (void* p : ptrs) h.deallocate(static_cast<char*>(p) + 1);       // interior
    });
    freer.join();
    trimmer.join();
    expect += 2 * ptrs.size();
    REQUIRE(h.stats().misuse_refused == expect);
  }
  ready.store(-1);
  for (pthread_t t : ts) pthread_join(t, nullptr);
  h.trim();
  REQUIRE(h.stats().blocks_live == 0);
}

TEST_CASE("slots handed back and reused at once; frees of exited threads' blocks") {
  heap h;
  alloc_error err;
  std::uint64_t expect = 0;
  std::vector<void*> prev;
  for (int gen = 0; gen < 200; ++gen) {
    std::vector<void*> next;
    std::vector<std::thread> ts;
    std::mutex m;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&, t] {
        std::vector<void*> mine;
        for (int i = 0; i < 50; ++i) mine.push_back(h.allocate(16 + 8 * i, 8, &err));
        for (std::size_t i = t; i < prev.size(); i += 4) {
          h.deallocate(prev[i]);
          h.deallocate(prev[i]);  // double
        }
        h.trim();
        std::lock_guard<std::mutex> g(m);
        next.insert(next.end(), mine.begin(), mine.end());
      });
    }
    for (auto& t : ts) t.join();
    expect += prev.size();
    REQUIRE(h.stats().misuse_refused == expect);
    prev = std::move(next);
  }
  for (void* p : prev) h.deallocate(p);
  h.trim();
  REQUIRE(h.stats().blocks_live == 0);
}

TEST_CASE("fork while other threads free on the fast path") {
  heap h;
  alloc_error err;
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t) {
    ts.emplace_back([&] {
      std::vector<void*> v;
      while (!stop.load()) {
        for (int i = 0; i < 64; ++i) v.push_back(h.allocate(16 + 16 * (i % 4), 8, &err));
        for (void* p : v) h.deallocate(p);
        v.clear();
      }
    });
  }
  for (int round = 0; round < 40; ++round) {
    std::vector<void*> mine;
    for (int i = 0; i < 500; ++i) mine.push_back(h.allocate(16 + 16 * (i % 4), 8, &err));
    std::uint64_t before = h.stats().misuse_refused;
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      for (void* p : mine) h.deallocate(p);
      for (void* p : mine) h.deallocate(p);
      h.trim();
      std::thread t([&] {  // a new thread in the child: claims a reset slot
        for (void* p : mine) h.deallocate(p);
        h.trim();
      });
      t.join();
      _exit(h.stats().misuse_refused == before + 2 * mine.size() ? 0 : 3);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    for (void* p : mine) h.deallocate(p);
  }
  stop.store(true);
  for (auto& t : ts) t.join();
}
