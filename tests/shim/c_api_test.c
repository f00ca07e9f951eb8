/* The C API, compiled as C. Linked statically (//allocator:c_api) for the
 * c_api_test target; c_api_dlopen_test runs the same checks through a
 * dlopen()ed libdropalloc.so, resolving every function with dlsym. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "tests/shim/shim_check.h"

#ifdef DROPALLOC_TEST_DLOPEN
/* Function pointers named like the API, filled from the library. */
#define API(ret, name, args) static ret(*p_##name) args;
#define CALL(name) p_##name
#else
#define CALL(name) name
#endif

#ifdef DROPALLOC_TEST_DLOPEN
API(dropalloc_resource*, dropalloc_create, (unsigned))
API(void, dropalloc_destroy, (dropalloc_resource*))
API(dropalloc_block, dropalloc_alloc, (dropalloc_resource*, size_t, size_t))
API(void, dropalloc_free, (dropalloc_resource*, void*))
API(dropalloc_state, dropalloc_seal, (dropalloc_resource*, void*))
API(dropalloc_state, dropalloc_seal_rewritten, (dropalloc_resource*, void*))
API(size_t, dropalloc_seal_all, (dropalloc_resource*))
API(dropalloc_state, dropalloc_check, (dropalloc_resource*, const void*, uint64_t))
API(int, dropalloc_is_intact, (dropalloc_resource*, dropalloc_block))
API(uint64_t, dropalloc_generation, (dropalloc_resource*, const void*))
API(size_t, dropalloc_usable_size, (dropalloc_resource*, const void*))
API(int, dropalloc_get_stats, (dropalloc_resource*, dropalloc_stats*))
API(void, dropalloc_trim, (dropalloc_resource*))
API(int, dropalloc_drop_for_testing, (dropalloc_resource*, void*, size_t))
API(const char*, dropalloc_state_name, (dropalloc_state))
API(int, dropalloc_shim_active, (void))
API(int, dropalloc_malloc_stats, (dropalloc_stats*))
API(int, dropalloc_stats_print, (int, unsigned))
API(int, dropalloc_resource_stats_print, (dropalloc_resource*, int, unsigned))

static void load(const char* path) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen(%s): %s\n", path, dlerror());
    exit(1);
  }
#define LOAD(name)                                   \
  *(void**)(&p_##name) = dlsym(lib, #name);          \
  CHECK(p_##name != NULL);
  LOAD(dropalloc_create) LOAD(dropalloc_destroy) LOAD(dropalloc_alloc) LOAD(dropalloc_free)
  LOAD(dropalloc_seal) LOAD(dropalloc_seal_rewritten) LOAD(dropalloc_seal_all) LOAD(dropalloc_check) LOAD(dropalloc_is_intact)
  LOAD(dropalloc_generation) LOAD(dropalloc_usable_size) LOAD(dropalloc_get_stats)
  LOAD(dropalloc_trim) LOAD(dropalloc_drop_for_testing) LOAD(dropalloc_state_name)
  LOAD(dropalloc_shim_active) LOAD(dropalloc_malloc_stats) LOAD(dropalloc_stats_print)
  LOAD(dropalloc_resource_stats_print)
}
#endif

static void test_lifecycle(unsigned flags) {
  dropalloc_resource* r = CALL(dropalloc_create)(flags);
  CHECK(r != NULL);

  dropalloc_block b = CALL(dropalloc_alloc)(r, 3 * 4096, 0);
  CHECK(b.ptr != NULL && b.generation != 0);
  CHECK((uintptr_t)b.ptr % 16 == 0);
  CHECK(CALL(dropalloc_usable_size)(r, b.ptr) >= 3 * 4096);
  CHECK(CALL(dropalloc_generation)(r, b.ptr) == b.generation);
  memset(b.ptr, 0x5a, 3 * 4096);
  CHECK(CALL(dropalloc_check)(r, b.ptr, b.generation) == DROPALLOC_UNSEALED);
  CHECK(CALL(dropalloc_seal)(r, b.ptr) == DROPALLOC_INTACT);
  CHECK(CALL(dropalloc_is_intact)(r, b));

  /* A dropped page is detected, and a reseal vouches for the rebuilt block. */
  CHECK(CALL(dropalloc_drop_for_testing)(r, (char*)b.ptr + 4096, 4096) == 0);
  CHECK(CALL(dropalloc_check)(r, b.ptr, b.generation) == DROPALLOC_DROPPED);
  memset(b.ptr, 0x5a, 3 * 4096);
  /* A repeated seal does not revive it; a seal of the rewritten block does. */
  CHECK(CALL(dropalloc_seal)(r, b.ptr) == DROPALLOC_DROPPED);
  CHECK(CALL(dropalloc_seal_rewritten)(r, b.ptr) == DROPALLOC_INTACT);
  CHECK(CALL(dropalloc_seal_rewritten)(NULL, b.ptr) == DROPALLOC_FOREIGN);

  /* Memory that is not the resource's is refused, not zeroed. */
  int local = 1;
  CHECK(CALL(dropalloc_drop_for_testing)(r, &local, sizeof local) == EINVAL && local == 1);
  CHECK(CALL(dropalloc_check)(r, &local, 1) == DROPALLOC_STALE ||
        CALL(dropalloc_check)(r, &local, 1) == DROPALLOC_FOREIGN);

  dropalloc_block small[100];
  for (int i = 0; i < 100; ++i) {
    small[i] = CALL(dropalloc_alloc)(r, 40 + (size_t)i, 64);
    CHECK(small[i].ptr != NULL && (uintptr_t)small[i].ptr % 64 == 0);
    memset(small[i].ptr, i + 1, 40);
  }
  /* Only the 100 unsealed blocks: b is sealed already and keeps its state. */
  CHECK(CALL(dropalloc_seal_all)(r) == 100);

  dropalloc_stats st;
  CHECK(CALL(dropalloc_get_stats)(r, &st) == 0);
  CHECK(st.blocks_live == 101 && st.drops_detected == 1 && st.misuse_refused == 0);
  CHECK(CALL(dropalloc_get_stats)(r, NULL) == EINVAL);
  if ((flags & DROPALLOC_FORCE_FALLBACK) != 0) CHECK(st.droppable == 0);

  for (int i = 0; i < 100; ++i) CALL(dropalloc_free)(r, small[i].ptr);
  CALL(dropalloc_free)(r, b.ptr);
  CALL(dropalloc_free)(r, NULL);
  CHECK(CALL(dropalloc_check)(r, b.ptr, b.generation) == DROPALLOC_STALE);
  CHECK(!CALL(dropalloc_is_intact)(r, b));
  CALL(dropalloc_free)(r, b.ptr);  /* double free: refused and counted */
  CHECK(CALL(dropalloc_get_stats)(r, &st) == 0);
  CHECK(st.blocks_live == 0 && st.misuse_refused == 1);
  CALL(dropalloc_trim)(r);

  errno = 0;
  dropalloc_block bad = CALL(dropalloc_alloc)(r, 64, 48);
  CHECK(bad.ptr == NULL && errno == EINVAL);
  errno = 0;
  bad = CALL(dropalloc_alloc)(r, (size_t)1 << 60, 0);
  CHECK(bad.ptr == NULL && errno == ENOMEM);

  CALL(dropalloc_destroy)(r);
  CALL(dropalloc_destroy)(NULL);
}

/* The report's text, printed by print(fd) into a temporary file. */
static char g_report[16384];
static const char* report_of(int (*print)(dropalloc_resource*, int, unsigned), dropalloc_resource* r,
                             unsigned flags, int* rc) {
  FILE* f = tmpfile();
  CHECK(f != NULL);
  *rc = print != NULL ? print(r, fileno(f), flags) : CALL(dropalloc_stats_print)(fileno(f), flags);
  rewind(f);
  size_t n = fread(g_report, 1, sizeof g_report - 1, f);
  g_report[n] = '\0';
  fclose(f);
  return g_report;
}

static void test_stats_print(void) {
  dropalloc_resource* r = CALL(dropalloc_create)(0);
  CHECK(r != NULL);
  dropalloc_block b = CALL(dropalloc_alloc)(r, 100000, 0);
  CHECK(b.ptr != NULL);
  memset(b.ptr, 1, 100000);
  int rc = -1;
  const char* text = report_of(CALL(dropalloc_resource_stats_print), r, 0, &rc);
  CHECK(rc == 0);
  CHECK(strstr(text, "statistics: pid ") != NULL);
  CHECK(strstr(text, " s after start") != NULL);
  CHECK(strstr(text, "heap C API resource: ") != NULL);
  CHECK(strstr(text, "  live           ") != NULL);
  CHECK(strstr(text, " in 1 blocks") != NULL);
  CHECK(strstr(text, "  address space  ") != NULL && strstr(text, "(peak ") != NULL);
  CHECK(strstr(text, "  metadata       ") != NULL);
  CHECK(strstr(text, "KiB") != NULL);
  CHECK(strstr(text, "\nmetadata: ") != NULL);        /* explained */
  CHECK(strstr(text, "\naddress space: ") != NULL);
  CHECK(strstr(text, "size classes") == NULL);
  CHECK(strstr(text, "process: resident") == NULL);  /* one resource only */

  dropalloc_block small = CALL(dropalloc_alloc)(r, 24, 0);
  CHECK(small.ptr != NULL);
  text = report_of(NULL, NULL, DROPALLOC_STATS_CLASSES, &rc);
  CHECK(rc == 0);
  CHECK(strstr(text, "every heap of the process") != NULL);
  CHECK(strstr(text, "heap C API resource: ") != NULL);
  CHECK(strstr(text, "process: resident ") != NULL && strstr(text, ", peak ") != NULL);
  CHECK(strstr(text, "size classes with arenas:") != NULL);
  CHECK(strstr(text, "blocks live") != NULL);

  /* Refused: NULL resource, bad descriptor, unknown flag; a failed write. */
  CHECK(CALL(dropalloc_resource_stats_print)(NULL, 2, 0) == EINVAL);
  CHECK(CALL(dropalloc_stats_print)(-1, 0) == EINVAL);
  CHECK(CALL(dropalloc_stats_print)(2, 1u << 5) == EINVAL);
  CHECK(CALL(dropalloc_resource_stats_print)(r, 1000, 0) == EBADF);
  CALL(dropalloc_free)(r, small.ptr);
  CALL(dropalloc_free)(r, b.ptr);
  CALL(dropalloc_destroy)(r);
}

int main(int argc, char** argv) {
#ifdef DROPALLOC_TEST_DLOPEN
  CHECK(argc == 2);
  load(argv[1]);
  /* dlopen()ed, not preloaded: libc stays the process's malloc. */
  CHECK(CALL(dropalloc_shim_active)() == 0);
#else
  (void)argc;
  (void)argv;
  CHECK(CALL(dropalloc_shim_active)() == 0);  /* no shim linked in */
#endif
  dropalloc_stats st;
  CHECK(CALL(dropalloc_malloc_stats)(&st) == ENOSYS);
  errno = 0;
  CHECK(CALL(dropalloc_create)(1u << 7) == NULL && errno == EINVAL);
  test_lifecycle(0);
  test_lifecycle(DROPALLOC_FORCE_FALLBACK);
  test_lifecycle(DROPALLOC_NO_THREAD_CACHE);
  test_stats_print();
  CHECK(strcmp(CALL(dropalloc_state_name)(DROPALLOC_DROPPED), "dropped") == 0);
  printf("C API passed\n");
  return 0;
}
