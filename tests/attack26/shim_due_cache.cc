// Run with libdropalloc.so preloaded. Attacks on f062246 through malloc: a
// freed large mapping past the resident bound is cached with its pages and
// marked due; the next new large mapping or decay pass (the purger thread,
// malloc_trim) takes it out of its slot, releases its pages and puts it back.
//  - calloc of a due mapping (warm: it must clear) and of a released one
//    (it clears nothing) at every ratio, the mapping written with 0xee over
//    its whole usable size before each free;
//  - four threads churning calloc/malloc/realloc/free with few bytes live
//    (so most frees are due) and cross-thread frees, a malloc_trim(0)
//    thread: calloc reads zero, every page of a live block keeps its byte
//    (a release after a reuse would zero whole pages), realloc keeps
//    contents, no two live blocks overlap;
//  - fork while those threads churn (mappings due, out of their slots): the
//    child checks the forking thread's live blocks, callocs every size,
//    writes, trims, callocs again;
//  - at the end, everything freed and malloc_trim(0): no large mapping left.
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


// Every page's first byte and the last byte.
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

// Whether a freed mapping stays in the cache between two calls: with a
// decay time of a few milliseconds the purger may unmap it at any moment.
bool cache_keeps_it() {
  const char* d = getenv("DROPALLOC_DECAY_MS");
  return d == nullptr || atoi(d) >= 100;
}

void due_ratios(size_t span) {
  for (size_t req = span; req >= span / 4; req -= span / 8 + 4096 * 3) {
    void* m = malloc(opaque(span));
    CHECK(m != nullptr);
    memset(m, 0xee, malloc_usable_size(m));
    free(m);  // due (nothing much live): pages kept
    void* z = calloc(1, opaque(req));  // warm reuse: must clear
    CHECK(z != nullptr);
    if (cache_keeps_it()) CHECK(z == m);
    CHECK(all_zero(z, req));
    memset(z, 0xee, malloc_usable_size(z));
    free(z);  // due again
    void* other = malloc(opaque(300 * kKiB));  // a new mapping: the due one goes first
    void* z2 = calloc(1, opaque(req));  // released reuse: clears nothing
    CHECK(z2 != nullptr);
    CHECK(all_zero(z2, req));
    memset(z2, 0xee, malloc_usable_size(z2));
    free(z2);
    free(other);
    malloc_trim(0);
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
    if ((op < 40 && mine.size() < 3) || mine.empty()) {
      size_t n = 260 * kKiB + (next() % 6) * (next() % 3 == 0 ? 3 * kMiB : 900 * kKiB) + next() % 5000;
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
    } else if (op < 60) {
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
    } else if (op < 70) {
      const blk& b = mine[next() % mine.size()];
      CHECK(holds_byte(b.p, b.n, b.v));
    } else {
      release(next() % mine.size());
    }
  }
  while (!mine.empty()) release(mine.size() - 1);
}

void threads_trim_fork(int ops, int forks) {
  std::atomic<bool> done{false};
  std::thread trimmer([&] {
    while (!done.load()) {
      malloc_trim(0);
      usleep(700);
    }
  });
  std::atomic<void*> box[4] = {nullptr, nullptr, nullptr, nullptr};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) ts.emplace_back([&, i] { churn(10u + i, ops, &box[i], &box[(i + 1) % 4]); });
  // Fork while they churn: this thread's own blocks must survive in the child.
  for (int round = 0; round < forks; ++round) {
    std::vector<blk> mine;
    for (size_t n : {5 * kMiB, 700 * kKiB, 12 * kMiB}) {
      auto* p = static_cast<unsigned char*>(malloc(n));
      CHECK(p != nullptr);
      memset(p, 0x30 + round, n);
      mine.push_back({p, n, static_cast<unsigned char>(0x30 + round)});
    }
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      // Droppable memory (DROPALLOC_DROPPABLE_RANGE) is wiped in a child by
      // design (README: Fork): its blocks read zeros there.
      const bool wiped = getenv("DROPALLOC_DROPPABLE_RANGE") != nullptr;
      for (const blk& b : mine) {
        if (!holds_byte(b.p, b.n, wiped ? 0 : b.v)) _exit(4);
      }
      for (int k = 0; k < 3; ++k) {
        for (size_t n : {16 * kMiB, 12 * kMiB, 9 * kMiB, 5 * kMiB, 3 * kMiB, 1 * kMiB, 700 * kKiB, 300 * kKiB}) {
          void* p = calloc(1, n);
          if (p == nullptr || !all_zero(p, n)) _exit(3);
          memset(p, 0xee, malloc_usable_size(p));
          free(p);
        }
        malloc_trim(0);
      }
      for (const blk& b : mine) {
        if (!holds_byte(b.p, b.n, wiped ? 0 : b.v)) _exit(5);
        free(b.p);
      }
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      fprintf(stderr, "child of round %d: status %d\n", round, status);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (const blk& b : mine) {
      CHECK(holds_byte(b.p, b.n, b.v));
      free(b.p);
    }
    usleep(2000);
  }
  for (auto& t : ts) t.join();
  done = true;
  trimmer.join();
  for (auto& b : box) {
    if (void* p = b.exchange(nullptr)) free(p);
  }
}

}  // namespace

int main() {
  require_shim();
  for (size_t span : {6 * kMiB, 16 * kMiB, 32 * kMiB}) due_ratios(span);
  threads_trim_fork(700, 6);
  CHECK(g_live.empty());
  malloc_trim(0);
  dropalloc_stats st{};
  if (shim_stats(&st) == 0) {
    // Small arenas may stay (other heaps' metadata aside); no large mapping.
    if (st.bytes_mapped >= 4 * kMiB) fprintf(stderr, "bytes_mapped %llu after trim\n", (unsigned long long)st.bytes_mapped);
    CHECK(st.bytes_mapped < 4 * kMiB);
  }
  printf("ok\n");
  return 0;
}
