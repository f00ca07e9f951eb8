/* See early_fork_lib.c. Runs in the parent and in the last child. */
#include <pthread.h>
#include <string.h>

#include "tests/attack36/early_fork_lib.h"
#include "tests/shim/shim_check.h"

static void* allocate(void* arg) {
  for (int i = 0; i < 20000; ++i) free(malloc((size_t)(i % 5000)));
  return arg;
}

int main(void) {
  require_shim();
  pthread_t t[2];
  for (int i = 0; i < 2; ++i) CHECK(pthread_create(&t[i], NULL, allocate, NULL) == 0);
  for (int i = 0; i < 2; ++i) CHECK(pthread_join(t[i], NULL) == 0);
  char* s = strdup("ok");
  CHECK(s != NULL && strcmp(s, "ok") == 0);
  free(s);
  CHECK(early_fork_lib_forks() == 30); /* also in the last child, which inherits the count */
  printf("forks before the allocator's constructors: %d\n", early_fork_lib_forks());
  return 0;
}
