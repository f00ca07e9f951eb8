/* Run with libdropalloc.so preloaded and a 1 ms decay: malloc_trim(), the
 * background purger and every free's decay race malloc, calloc, realloc and
 * free on other threads, and a forked child does the same. Every block keeps
 * its bytes, calloc always returns zeros, malloc_usable_size covers the
 * request. Exits 0 when all holds. */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      _exit(1);                                                               \
    }                                                                         \
  } while (0)

/* The preload must have taken, or this would test libc's malloc. */
static void require_shim(void) {
  int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "dropalloc_shim_active");
  CHECK(active != NULL && active() == 1);
}

enum { kSlots = 256 };

static volatile int g_stop;

static uint32_t next_rand(uint32_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static size_t pick_size(uint32_t r) {
  static const size_t sizes[] = {1, 24, 100, 700, 4096, 5000, 20000, 70000, 300000, 2 << 20};
  return sizes[r % (sizeof sizes / sizeof sizes[0])];
}

static void fill(unsigned char* p, size_t n, unsigned char v) { memset(p, v, n); }

static int holds(const unsigned char* p, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != v) return 0;
  }
  return 1;
}

static void* worker(void* arg) {
  uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
  unsigned char* ptr[kSlots] = {0};
  size_t size[kSlots] = {0};
  unsigned char tag[kSlots] = {0};
  while (!g_stop) {
    uint32_t r = next_rand(&seed);
    int i = (int)(r % kSlots);
    if (ptr[i] != NULL) {
      CHECK(holds(ptr[i], size[i], tag[i]));
      if (r & 0x100) {
        size_t n = pick_size(next_rand(&seed));
        unsigned char* q = realloc(ptr[i], n);
        CHECK(q != NULL);
        size_t keep = n < size[i] ? n : size[i];
        CHECK(holds(q, keep, tag[i]));
        fill(q, n, tag[i]);
        ptr[i] = q;
        size[i] = n;
        CHECK(malloc_usable_size(q) >= n);
        continue;
      }
      free(ptr[i]);
      ptr[i] = NULL;
      continue;
    }
    size_t n = pick_size(next_rand(&seed));
    unsigned char* p;
    if (r & 0x200) {
      p = calloc(1, n);
      CHECK(p != NULL);
      CHECK(holds(p, n, 0));
    } else {
      p = malloc(n);
      CHECK(p != NULL);
    }
    CHECK(malloc_usable_size(p) >= n);
    tag[i] = (unsigned char)(r >> 24 | 1);
    fill(p, n, tag[i]);
    ptr[i] = p;
    size[i] = n;
  }
  for (int i = 0; i < kSlots; ++i) {
    if (ptr[i] != NULL) {
      CHECK(holds(ptr[i], size[i], tag[i]));
      free(ptr[i]);
    }
  }
  return NULL;
}

static void* trimmer(void* arg) {
  (void)arg;
  while (!g_stop) {
    malloc_trim(0);
    usleep(500);
  }
  return NULL;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Threads for `ms` milliseconds; returns when they are joined. */
static void run(long ms, int forks) {
  pthread_t t[4];
  g_stop = 0;
  for (int i = 0; i < 3; ++i) CHECK(pthread_create(&t[i], NULL, worker, (void*)(uintptr_t)(i + 1)) == 0);
  CHECK(pthread_create(&t[3], NULL, trimmer, NULL) == 0);
  for (int k = 0; k < forks; ++k) {
    sleep_ms(ms / (forks + 1));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      /* The child: only this thread; allocate, free and trim as well. */
      g_stop = 0;
      pthread_t c[2];
      CHECK(pthread_create(&c[0], NULL, worker, (void*)(uintptr_t)99) == 0);
      CHECK(pthread_create(&c[1], NULL, trimmer, NULL) == 0);
      sleep_ms(200);
      g_stop = 1;
      pthread_join(c[0], NULL);
      pthread_join(c[1], NULL);
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  sleep_ms(ms / (forks + 1));
  g_stop = 1;
  for (int i = 0; i < 4; ++i) pthread_join(t[i], NULL);
}

int main(void) {
  require_shim();
  run(2000, 3);
  /* Idle: the purger hands back what is left; then everything works again. */
  sleep_ms(50);
  run(300, 0);
  puts("ok");
  return 0;
}
