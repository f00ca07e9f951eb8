// Run with libdropalloc.so preloaded. Four threads realloc large blocks
// upward (growth in place replaces headers: retire_header) and free large
// blocks of changing sizes (300 KiB - 12 MiB: most frees evict from the
// large cache, retire::batched), checking contents at both ends and
// malloc_usable_size; a fifth thread calls malloc_trim(0) now and then; the
// main thread forks all the while: the child (inheriting a stack of waiting
// segments, maybe a flush cut in two) churns from two threads, trims and
// exits. Any failed check exits non-zero; a child that hangs fails too.
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/shim/shim_check.h"

namespace {

constexpr size_t kPage = 4096;

struct rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return next() % n; }
};

size_t draw(rng& r) {
  switch (r.below(3)) {
    case 0: return 300 * 1024 + r.below(256) * kPage;
    case 1: return 1024 * 1024 + r.below(1024) * kPage;
    default: return 4 * 1024 * 1024 + r.below(2048) * kPage;
  }
}

void mark(char* p, size_t n, unsigned char v) {
  memset(p, v, kPage);
  memset(p + n - kPage, v ^ 0x5a, kPage);
}
bool marked(const char* p, size_t n, unsigned char v) {
  for (size_t i = 0; i < kPage; i += 97) {
    if (static_cast<unsigned char>(p[i]) != v) return false;
    if (static_cast<unsigned char>(p[n - kPage + i]) != (v ^ 0x5a)) return false;
  }
  return true;
}

struct block {
  char* p = nullptr;
  size_t n = 0;
  unsigned char v = 0;
};

void churn(uint64_t seed, std::atomic<bool>* stop, long max_ops) {
  rng r{seed};
  block b[6];
  for (long op = 0; (max_ops < 0 || op < max_ops) && !stop->load(std::memory_order_relaxed); ++op) {
    block& x = b[r.below(6)];
    if (x.p == nullptr) {
      x.n = draw(r);
      x.p = static_cast<char*>(malloc(x.n));
      CHECK(x.p != nullptr);
      x.v = static_cast<unsigned char>(r.next() | 1);
      mark(x.p, x.n, x.v);
      continue;
    }
    CHECK(marked(x.p, x.n, x.v));
    CHECK(malloc_usable_size(x.p) >= x.n);
    if (r.below(3) == 0) {
      free(x.p);
      x.p = nullptr;
      continue;
    }
    size_t m = x.n + (1 + r.below(48)) * kPage * (r.below(4) == 0 ? 32 : 1);
    if (m > (13u << 20)) m = x.n + kPage;
    char* q = static_cast<char*>(realloc(x.p, m));
    CHECK(q != nullptr);
    CHECK(static_cast<unsigned char>(q[0]) == x.v);
    CHECK(static_cast<unsigned char>(q[x.n - 1]) == (x.v ^ 0x5a));
    x.p = q;
    x.n = m;
    mark(x.p, x.n, x.v);
  }
  for (block& x : b) free(x.p);
}

}  // namespace

int main() {
  require_shim();
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back(churn, 1000 + t, &stop, -1L);
  ts.emplace_back([&] {
    while (!stop.load()) {
      malloc_trim(0);
      usleep(3000);
    }
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(12);
  int forks = 0;
  while (std::chrono::steady_clock::now() < until) {
    usleep(15000);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      alarm(20);  // a hang in the child shows as SIGALRM
      std::atomic<bool> never{false};
      std::thread other(churn, 77 + forks, &never, 300L);
      churn(99 + forks, &never, 300L);
      other.join();
      malloc_trim(0);
      churn(5 + forks, &never, 100L);
      malloc_trim(0);
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "child %d: %s %d\n", forks, WIFSIGNALED(status) ? "signal" : "exit",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
      return 1;
    }
    ++forks;
  }
  stop.store(true);
  for (auto& t : ts) t.join();
  malloc_trim(0);
  dropalloc_stats st;
  CHECK(shim_stats(&st) == 0);
  printf("forks %d, arenas_mapped after trim %llu, bytes_mapped %llu\n", forks,
         static_cast<unsigned long long>(st.arenas_mapped), static_cast<unsigned long long>(st.bytes_mapped));
  return 0;
}
