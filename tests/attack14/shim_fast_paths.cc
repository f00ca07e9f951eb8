// Run with libdropalloc.so preloaded (shim_fast_paths_preload_test): malloc's
// own class table and the out-of-line slow paths of malloc, free, operator
// new and delete, at every size up to past the largest small class (then a
// spread to past the largest class the fast paths serve), and every
// kind of bad free through the new fast free path. Linked against libc and
// libstdc++ only; exits non-zero on the first failed check.
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <thread>
#include <vector>

#include "allocator/dropalloc_c.h"

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      _exit(1);                                                               \
    }                                                                         \
  } while (0)

#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {

size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

uint64_t refused() {
  auto stats = reinterpret_cast<int (*)(dropalloc_stats*)>(dlsym(RTLD_DEFAULT, "dropalloc_malloc_stats"));
  CHECK(stats != nullptr);
  dropalloc_stats st{};
  CHECK(stats(&st) == 0);
  return st.misuse_refused;
}

uint64_t foreign_ignored() {
  auto stats = reinterpret_cast<int (*)(dropalloc_stats*)>(dlsym(RTLD_DEFAULT, "dropalloc_malloc_stats"));
  CHECK(stats != nullptr);
  dropalloc_stats st{};
  CHECK(stats(&st) == 0);
  return st.foreign_ignored;
}

void* volatile g_sink;

// Every size to past the largest small class (4 KiB), then a spread to the
// largest class the fast paths serve (64 KiB), every size around it.
size_t next_size(size_t n) { return n < 4200 || n >= 65400 ? n + 1 : n + 61; }
constexpr size_t kLastSize = 66 * 1024;

void sizes_and_alignment() {
  // Two live blocks of each size must not overlap and must have the
  // alignment malloc promises; all of the usable size is writable.
  for (size_t n = 0; n <= kLastSize; n = next_size(n)) {
    auto* a = static_cast<unsigned char*>(malloc(opaque(n)));
    auto* b = static_cast<unsigned char*>(malloc(opaque(n)));
    CHECK(a != nullptr && b != nullptr && a != b);
    size_t want = n <= 8 ? 8 : 16;
    CHECK(reinterpret_cast<uintptr_t>(a) % want == 0 && reinterpret_cast<uintptr_t>(b) % want == 0);
    size_t ua = malloc_usable_size(a), ub = malloc_usable_size(b);
    CHECK(ua >= n && ub >= n);
    CHECK(a + ua <= b || b + ub <= a);
    memset(a, 0x5a, ua);
    memset(b, 0xa5, ub);
    CHECK(a[ua - 1 < ua ? ua - 1 : 0] == 0x5a || ua == 0);
    free(a);
    free(b);
    CHECK(malloc_usable_size(a) == 0);  // freed: not a live block any more
  }
  // operator new(n): the same table, the same promises.
  for (size_t n = 0; n <= kLastSize; n = next_size(n)) {
    auto* a = static_cast<unsigned char*>(::operator new(opaque(n)));
    CHECK(reinterpret_cast<uintptr_t>(a) % (n <= 8 ? 8 : 16) == 0);
    CHECK(malloc_usable_size(a) >= n);
    ::operator delete(a, opaque(n * 3 + 1));  // a wrong size: not trusted
    CHECK(malloc_usable_size(a) == 0);
    auto* b = static_cast<unsigned char*>(::operator new[](opaque(n)));
    ::operator delete[](b);
  }
  for (size_t al = 1; al <= 8192; al *= 2) {
    for (size_t n : {size_t{0}, size_t{1}, al - 1, al, al + 1, size_t{4095}, size_t{4096}, size_t{4097}}) {
      void* p = ::operator new(opaque(n), std::align_val_t(al));
      CHECK(reinterpret_cast<uintptr_t>(p) % al == 0);
      ::operator delete(p, opaque(n + 100), std::align_val_t(al == 1 ? 1 : al / 2));  // wrong size and alignment
      CHECK(malloc_usable_size(p) == 0);
      void* q = aligned_alloc(al, opaque(n + (al - n % al) % al));
      CHECK(q != nullptr && reinterpret_cast<uintptr_t>(q) % al == 0);
      free(q);
      void* r = nullptr;
      if (al >= sizeof(void*)) {
        CHECK(posix_memalign(&r, al, opaque(n)) == 0 && reinterpret_cast<uintptr_t>(r) % al == 0);
        free(r);
      }
      void* m = memalign(al, opaque(n));
      CHECK(m != nullptr && reinterpret_cast<uintptr_t>(m) % al == 0);
      free(m);
    }
  }
  void* v = valloc(opaque(1));
  CHECK(v != nullptr && reinterpret_cast<uintptr_t>(v) % 4096 == 0);
  free(v);
  v = pvalloc(opaque(1));
  CHECK(v != nullptr && reinterpret_cast<uintptr_t>(v) % 4096 == 0 && malloc_usable_size(v) >= 4096);
  free(v);
  errno = 0;
  CHECK(calloc(opaque(SIZE_MAX / 2 + 2), 2) == nullptr && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(opaque(1) << 33, opaque(1) << 33) == nullptr && errno == ENOMEM);
  errno = 0;
  CHECK(malloc(opaque(SIZE_MAX)) == nullptr && errno == ENOMEM);
  void* p = malloc(16);
  errno = 0;
  CHECK(realloc(p, opaque(SIZE_MAX - 8)) == nullptr && errno == ENOMEM);
  CHECK(malloc_usable_size(p) >= 16);  // untouched by the failed realloc
  void* r = nullptr;
  CHECK(posix_memalign(&r, 24, 16) == EINVAL);
  CHECK(posix_memalign(&r, 4096, opaque(SIZE_MAX - 100)) == ENOMEM);
  free(p);
  bool threw = false;
  try {
    g_sink = ::operator new(opaque(SIZE_MAX - 4));
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  CHECK(threw);
}

void bad_frees() {
  // Each of these must be refused and counted once; nothing freed.
  uint64_t before = refused();
  uint64_t expect = before;
  std::vector<unsigned char*> live;
  for (size_t n : {size_t{1}, size_t{8}, size_t{9}, size_t{16}, size_t{17}, size_t{24}, size_t{100},
                   size_t{1000}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{70000},
                   size_t{300000}, size_t{5} << 20}) {
    auto* p = static_cast<unsigned char*>(malloc(n));
    size_t u = malloc_usable_size(p);
    CHECK(u >= n);
    free(p + 1);
    ++expect;
    if (u > 16) {
      free(p + 16);
      ++expect;
    }
    CHECK(refused() == expect);
    CHECK(malloc_usable_size(p) == u);
    live.push_back(p);
  }
  for (unsigned char* p : live) free(p);
  for (unsigned char* p : live) {
    free(p);  // double
    ++expect;
  }
  CHECK(refused() == expect);
  // a C++ delete of a freed block and of an interior pointer
  auto* q = static_cast<unsigned char*>(::operator new(48));
  ::operator delete(q + 16, size_t{32});
  ++expect;
  ::operator delete(q);
  ::operator delete(q, size_t{48});
  ++expect;
  CHECK(refused() == expect);
}

std::atomic<int> g_go{0};

void racing_double_frees() {
  // Two threads free the same block at once: exactly one free wins, the
  // other is refused; then no block is handed out twice.
  uint64_t before = refused();
  const int kRounds = 3000;
  for (int round = 0; round < kRounds; ++round) {
    void* p = malloc(32 + (round % 5) * 16);
    std::atomic<int> ready{0};
    std::thread a([&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      free(p);
    });
    std::thread b([&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      free(p);
    });
    a.join();
    b.join();
  }
  CHECK(refused() == before + kRounds);
  std::vector<void*> got;
  for (int i = 0; i < 5000; ++i) got.push_back(malloc(32 + (i % 5) * 16));
  std::vector<void*> sorted = got;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) CHECK(sorted[i] != sorted[i - 1]);
  for (void* x : got) free(x);
}

pthread_key_t g_key;
void free_at_exit(void* p) {
  free(p);
  free(p);  // refused
}

void exit_frees() {
  // Frees in a thread-exit destructor after the reader slot went back, and a
  // thread whose first call is free (no slot yet), racing malloc_trim.
  CHECK(pthread_key_create(&g_key, free_at_exit) == 0);
  uint64_t before = refused() + foreign_ignored();
  const int kThreads = 200;
  std::atomic<bool> stop{false};
  std::thread trimmer([&] {
    while (!stop.load()) malloc_trim(0);
  });
  for (int i = 0; i < kThreads; ++i) {
    void* p = malloc(64);
    void* q = malloc(200);
    uint64_t r0 = refused() + foreign_ignored();
    std::thread t([p, q] {
      pthread_setspecific(g_key, malloc(80));
      free(p);
      free(q);
      free(q);  // refused
    });
    t.join();
    uint64_t r1 = refused() + foreign_ignored();
    free(p);  // refused: already freed by the thread (as foreign if trim unmapped its arena)
    uint64_t r2 = refused() + foreign_ignored();
    if (getenv("EXIT_FREES_TRACE") != nullptr && (r1 - r0 != 2 || r2 - r1 != 1)) {
      fprintf(stderr, "exit_frees: round %d: thread refused %llu (expected 2: q, the key's block), free(p) %llu\n", i,
              (unsigned long long)(r1 - r0), (unsigned long long)(r2 - r1));
    }
  }
  stop.store(true);
  trimmer.join();
  // A block freed by the thread may have gone back to its arena, and the
  // arena to the OS, through the racing malloc_trim: freeing it again is then
  // a free of memory outside every arena, refused and counted as foreign.
  uint64_t got = refused() + foreign_ignored() - before;
  if (got != 3 * kThreads) fprintf(stderr, "exit_frees: refused %llu, expected %d\n", (unsigned long long)got, 3 * kThreads);
  CHECK(got == 3 * kThreads);
}

}  // namespace

int main() {
  auto active = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "dropalloc_shim_active"));
  if (active == nullptr || active() != 1) {
    fprintf(stderr, "FAIL: libdropalloc.so is not this process's malloc\n");
    return 1;
  }
  sizes_and_alignment();
  bad_frees();
  racing_double_frees();
  exit_frees();
  puts("ok");
  return 0;
}
