/* idle_rss: allocate, touch, free, then idle; how much of the freed memory
 * the allocator gives back, and when. A plain C program: the allocator is the
 * process's malloc (compare.py preloads each contender).
 *
 *   idle_rss [--quick] [--trim]
 *
 * Phases: 4 blocks of 16 MiB, written and freed; 256 MiB of 256-byte blocks,
 * written and freed (in allocation order); 3 s idle, VmRSS read every 100 ms.
 * With --trim, malloc_trim(0) is then called and VmRSS read for 1 s more.
 * malloc_trim is looked up with dlsym(RTLD_DEFAULT), so the call goes to
 * whichever library provides it (glibc's when the preloaded allocator has
 * none, and that one trims only glibc's own heap). --quick: 4 x 1 MiB, 16 MiB
 * of small blocks, 0.5 s idle and 0.3 s after the trim.
 *
 * Samples are kept in an array and printed at the end, so stdio allocates
 * nothing while the resident set is being read:
 *   SAMPLE t=<s since start> rss_kib=<VmRSS> phase=<phase>
 *   RESULT name=idle_rss malloc_from=<lib> trim_from=<lib|none> freed_kib=<k>
 *          idle_end_kib=<k> trimmed_kib=<k|-1> hwm_kib=<VmHWM> check=<x>
 * (one line). freed_kib is VmRSS just after the last free, idle_end_kib the
 * last idle sample, trimmed_kib the last sample after the trim. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

struct sample {
  double t;
  long rss_kib;
  const char* phase;
};

static struct sample samples[128];
static int n_samples;
static struct timespec start;

static void escape(void* p) { __asm__ volatile("" : : "g"(p) : "memory"); }

/* A "<key> <n> kB" line of /proc/self/status, read without stdio. */
static long status_kib(const char* key) {
  static char buf[8192];
  int fd = open("/proc/self/status", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* line = strstr(buf, key);
  return line == NULL ? -1 : strtol(line + strlen(key), NULL, 10);
}

static void sample(const char* phase) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (n_samples == (int)(sizeof samples / sizeof samples[0])) return;
  samples[n_samples].t = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
  samples[n_samples].rss_kib = status_kib("VmRSS:");
  samples[n_samples].phase = phase;
  ++n_samples;
}

static void idle(int steps, const char* phase) {
  const struct timespec tenth = {0, 100 * 1000 * 1000};
  for (int i = 0; i < steps; ++i) {
    nanosleep(&tenth, NULL);
    sample(phase);
  }
}

static const char* library_of(void* sym) {
  Dl_info info;
  if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL) return "none";
  return info.dli_fname;
}

int main(int argc, char** argv) {
  int quick = 0, trim = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else if (strcmp(argv[i], "--trim") == 0) {
      trim = 1;
    } else {
      fprintf(stderr, "usage: %s [--quick] [--trim]\n", argv[0]);
      return 2;
    }
  }
  const size_t big = quick ? MIB : 16 * MIB;
  const size_t small_total = quick ? 16 * MIB : 256 * MIB;
  const size_t small = 256;
  const int idle_steps = quick ? 5 : 30, trim_steps = quick ? 3 : 10;
  void* malloc_sym = dlsym(RTLD_DEFAULT, "malloc");
  void* trim_sym = dlsym(RTLD_DEFAULT, "malloc_trim");
  uint64_t check = 0;

  clock_gettime(CLOCK_MONOTONIC, &start);
  sample("start");
  char* blocks[4];
  for (int i = 0; i < 4; ++i) {
    blocks[i] = malloc(big);
    if (blocks[i] == NULL) return 1;
    memset(blocks[i], i + 1, big);
    escape(blocks[i]);
  }
  sample("large-touched");
  for (int i = 0; i < 4; ++i) {
    check += (unsigned char)blocks[i][big - 1];
    free(blocks[i]);
  }
  sample("large-freed");

  const size_t count = small_total / small;
  char** ptrs = malloc(count * sizeof *ptrs);
  if (ptrs == NULL) return 1;
  for (size_t i = 0; i < count; ++i) {
    ptrs[i] = malloc(small);
    if (ptrs[i] == NULL) return 1;
    memset(ptrs[i], (int)(i & 0x7f), small);
    escape(ptrs[i]);
  }
  sample("small-touched");
  for (size_t i = 0; i < count; ++i) {
    check += (unsigned char)ptrs[i][small - 1];
    free(ptrs[i]);
  }
  free(ptrs);
  sample("small-freed");
  const long freed_kib = samples[n_samples - 1].rss_kib;

  idle(idle_steps, "idle");
  const long idle_end_kib = samples[n_samples - 1].rss_kib;
  long trimmed_kib = -1;
  if (trim) {
    if (trim_sym != NULL) ((int (*)(size_t))trim_sym)(0);
    sample("trimmed");
    idle(trim_steps, "after-trim");
    trimmed_kib = samples[n_samples - 1].rss_kib;
  }

  for (int i = 0; i < n_samples; ++i)
    printf("SAMPLE t=%.3f rss_kib=%ld phase=%s\n", samples[i].t, samples[i].rss_kib, samples[i].phase);
  printf("RESULT name=idle_rss malloc_from=%s trim_from=%s freed_kib=%ld idle_end_kib=%ld trimmed_kib=%ld "
         "hwm_kib=%ld check=%llu\n",
         library_of(malloc_sym), library_of(trim_sym), freed_kib, idle_end_kib, trimmed_kib,
         status_kib("VmHWM:"), (unsigned long long)check);
  return 0;
}
