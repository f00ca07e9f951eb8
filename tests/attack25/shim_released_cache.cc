// Run with libdropalloc.so preloaded. Attacks on 04d777f through malloc: a
// freed large mapping past the cache's resident bound is cached with its
// pages released, and calloc of it clears nothing. Checks:
//  - calloc of a reused mapping reads zero over the request at every ratio
//    (request from the mapping's size down to a quarter), the mapping
//    written with 0xee over its whole usable size before each free, with and
//    without a live ballast (pages kept, or released);
//  - three threads churning calloc/malloc/realloc/free of large blocks with
//    cross-thread frees, plus a thread calling malloc_trim(0): calloc reads
//    zero, realloc keeps contents, no two live blocks overlap;
//  - fork while mappings sit in the cache (released and kept) and other
//    threads churn: the child callocs every size (zeros), writes, frees,
//    callocs again (zeros); the parent goes on.
// Exits non-zero at the first failed check.
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/live_set.h"
#include "tests/pattern.h"
#include "tests/shim/shim_check.h"

#pragma GCC diagnostic ignored "-Wuse-after-free"

using dropalloc::testing::all_zero;

namespace {

constexpr size_t kKiB = 1024, kMiB = kKiB * kKiB;

size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}


bool holds_byte(const void* p, size_t n, unsigned char v) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; i += 4096) {
    if (b[i] != v) return false;
  }
  return n == 0 || b[n - 1] == v;
}

dropalloc::testing::live_set g_live;  // no two live blocks overlap

void live_add(void* p) { CHECK(g_live.add(p, malloc_usable_size(p))); }
void live_remove(void* p) { CHECK(g_live.remove(p)); }

void ratios(size_t span) {
  void* m = malloc(opaque(span));
  CHECK(m != nullptr);
  memset(m, 0xee, malloc_usable_size(m));
  free(m);
  for (size_t req = span; req >= span / 4; req -= span / 16 + 4096 * 3) {
    void* z = calloc(1, opaque(req));
    CHECK(z != nullptr);
    CHECK(all_zero(z, req));
    memset(z, 0xee, malloc_usable_size(z));  // tails included: malloc_usable_size allows it
    free(z);
  }
}

struct blk {
  unsigned char* p;
  size_t n;
  unsigned char v;
};

void churn(unsigned seed, int ops, std::atomic<void*>* outbox, std::atomic<void*>* inbox) {
  std::vector<blk> mine;
  unsigned s = seed;
  auto next = [&] {
    s = s * 1103515245u + 12345u;
    return (s >> 8) & 0xffffff;
  };
  auto release = [&](size_t i) {
    blk b = mine[i];
    mine.erase(mine.begin() + static_cast<long>(i));
    CHECK(holds_byte(b.p, b.n, b.v));
    live_remove(b.p);
    memset(b.p, 0xee, malloc_usable_size(b.p));
    void* expected = nullptr;
    if (outbox != nullptr && next() % 3 == 0 && outbox->compare_exchange_strong(expected, b.p)) return;
    free(b.p);
  };
  for (int i = 0; i < ops; ++i) {
    if (inbox != nullptr) {
      if (void* q = inbox->exchange(nullptr)) free(q);
    }
    unsigned op = next() % 100;
    if (op < 45 || mine.empty()) {
      size_t n = 260 * kKiB + (next() % 6) * (next() % 4 == 0 ? 4 * kMiB : 700 * kKiB) + next() % 5000;
      unsigned char* p;
      if (next() % 2 == 0) {
        p = static_cast<unsigned char*>(calloc(1, n));
        CHECK(p != nullptr);
        CHECK(all_zero(p, n));
      } else {
        p = static_cast<unsigned char*>(malloc(n));
        CHECK(p != nullptr);
      }
      live_add(p);
      unsigned char v = static_cast<unsigned char>(1 + next() % 200);
      memset(p, v, n);
      mine.push_back({p, n, v});
    } else if (op < 65) {
      size_t i = next() % mine.size();
      blk& b = mine[i];
      size_t n = next() % 3 == 0 ? b.n / 2 + 300 * kKiB : b.n + (next() % 8) * 512 * kKiB + 1;
      live_remove(b.p);
      auto* q = static_cast<unsigned char*>(realloc(b.p, n));
      CHECK(q != nullptr);
      size_t kept = n < b.n ? n : b.n;
      CHECK(holds_byte(q, kept, b.v));
      live_add(q);
      memset(q, b.v, n);
      b.p = q;
      b.n = n;
    } else {
      release(next() % mine.size());
    }
  }
  while (!mine.empty()) release(mine.size() - 1);
}

void threads_with_trim(int ops) {
  std::atomic<bool> done{false};
  std::thread trimmer([&] {
    while (!done.load()) {
      malloc_trim(0);
      usleep(300);
    }
  });
  std::atomic<void*> ab{nullptr}, bc{nullptr}, ca{nullptr};
  std::thread a([&] { churn(1, ops, &ab, &ca); });
  std::thread b([&] { churn(2, ops, &bc, &ab); });
  std::thread c([&] { churn(3, ops, &ca, &bc); });
  a.join();
  b.join();
  c.join();
  done = true;
  trimmer.join();
  for (auto* q : {&ab, &bc, &ca}) {
    if (void* p = q->exchange(nullptr)) free(p);
  }
}

void fork_with_cached() {
  // Mappings in the cache, some released (nothing much live), some kept
  // (a ballast live): then fork while another thread churns.
  void* ballast = malloc(opaque(30 * kMiB));
  memset(ballast, 1, 30 * kMiB);
  std::vector<void*> ps;
  for (size_t n : {3 * kMiB, 5 * kMiB, 9 * kMiB, 12 * kMiB, 2 * kMiB}) {
    void* p = malloc(n);
    memset(p, 0xee, malloc_usable_size(p));
    ps.push_back(p);
  }
  for (void* p : ps) free(p);
  std::atomic<bool> stop{false};
  std::thread t([&] {
    unsigned i = 0;
    while (!stop.load()) {
      size_t n = 300 * kKiB + (i++ % 7) * kMiB;
      void* p = calloc(1, n);
      CHECK(p != nullptr && all_zero(p, n));
      memset(p, 0xee, malloc_usable_size(p));
      free(p);
    }
  });
  for (int round = 0; round < 6; ++round) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      for (int k = 0; k < 3; ++k) {
        for (size_t n : {12 * kMiB, 9 * kMiB, 5 * kMiB, 3 * kMiB, 2 * kMiB, 1 * kMiB, 700 * kKiB}) {
          void* p = calloc(1, n);
          if (p == nullptr || !all_zero(p, n)) _exit(3);
          memset(p, 0xee, malloc_usable_size(p));
          free(p);
        }
      }
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop = true;
  t.join();
  free(ballast);
}

}  // namespace

int main() {
  require_shim();
  // Alone: every mapping past the floor is released on the way into the cache.
  for (size_t span : {6 * kMiB, 16 * kMiB, 32 * kMiB}) ratios(span);
  // With a live ballast: the same mappings keep their pages.
  void* ballast = malloc(opaque(40 * kMiB));
  memset(ballast, 1, 40 * kMiB);
  for (size_t span : {6 * kMiB, 16 * kMiB}) ratios(span);
  free(ballast);
  for (size_t span : {6 * kMiB, 12 * kMiB}) ratios(span);
  threads_with_trim(500);
  fork_with_cached();
  printf("ok\n");
  return 0;
}
