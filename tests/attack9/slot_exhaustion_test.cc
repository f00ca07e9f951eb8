// Regression: more threads alive at once than there are reader slots (1024):
// the rest read under the overflow lock. All of them check, ask for
// generations and seal while the main thread frees blocks, trims (arenas go
// back to the OS: grace periods) and allocates again. Old handles must read
// `stale`, live sealed ones `intact` or `dropped` with the right bytes; then
// all threads exit at once (slots given back at thread exit) and a second
// wave reuses the slots. Nothing may crash or hang.
#include <doctest/doctest.h>
#include <pthread.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

struct shared {
  droppable_resource* r;
  std::vector<block_ref> old;       // freed lives
  std::vector<block_ref> live;      // sealed with 0xab, never freed during the run
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, checks{0};
};

void* worker(void* arg) {
  auto* s = static_cast<shared*>(arg);
  s->ready.fetch_add(1);
  while (!s->go.load()) sched_yield();
  unsigned x = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(&x));
  unsigned char copy[256];
  for (int i = 0; i < 60 && !s->stop.load(); ++i) {
    x = x * 1103515245u + 12345u;
    const block_ref& o = s->old[x % s->old.size()];
    if (s->r->check(o) != block_state::stale) s->bad.fetch_add(1);
    const block_ref& l = s->live[x % s->live.size()];
    std::memcpy(copy, l.ptr, sizeof copy);
    block_state c = s->r->check(l);
    if (c == block_state::intact) {
      for (unsigned char b : copy) {
        if (b != 0xab) s->bad.fetch_add(1);
      }
    } else if (c != block_state::dropped) {
      s->bad.fetch_add(1);
    }
    (void)s->r->generation(o.ptr);
    s->checks.fetch_add(1);
  }
  return nullptr;
}

}  // namespace

TEST_CASE("more threads than reader slots: overflow readers, grace periods, slot reuse") {
  droppable_resource r;
  shared s;
  s.r = &r;
  std::vector<unsigned char> fill(256, 0xab);
  for (int i = 0; i < 64; ++i) {
    block_ref b = r.allocate_block(256);
    REQUIRE(r.write_and_seal(b, fill.data(), fill.size()) == block_state::intact);
    s.live.push_back(b);
  }
  for (int wave = 0; wave < 2; ++wave) {
    // Old lives in arenas that go back to the OS while the threads run.
    std::vector<block_ref> batch;
    for (int i = 0; i < 2000; ++i) batch.push_back(r.allocate_block(4096 + 64 * (i % 16)));
    for (auto& b : batch) (void)r.seal(b);
    for (auto& b : batch) r.deallocate(b);
    s.old = batch;
    s.ready.store(0);
    s.go.store(false);
    const int n = 1100;
    std::vector<pthread_t> ts(n);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    int started = 0;
    for (; started < n; ++started) {
      if (pthread_create(&ts[started], &attr, worker, &s) != 0) break;
    }
    pthread_attr_destroy(&attr);
    MESSAGE("wave " << wave << ": " << started << " threads");
    while (s.ready.load() < started) sched_yield();
    s.go.store(true);
    for (int k = 0; k < 20; ++k) {
      (void)r.trim();
      std::vector<block_ref> more;
      for (int i = 0; i < 200; ++i) more.push_back(r.allocate_block(4096 + 64 * (i % 16)));
      for (auto& b : more) r.deallocate(b);
      if (k % 5 == 0) (void)r.drop_for_testing(s.live[k % s.live.size()].ptr, 256);
    }
    for (int i = 0; i < started; ++i) pthread_join(ts[i], nullptr);
  }
  MESSAGE("checks " << s.checks.load());
  CHECK(s.bad.load() == 0);
  for (auto& b : s.live) r.deallocate(b);
}
