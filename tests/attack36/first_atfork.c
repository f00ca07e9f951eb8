/* first_atfork <plugin.so>: see first_atfork_lib.c. Exit 0: the
 * constructor's registrations finished; the hang exits 1 (watchdog). */
#include <stdio.h>

#include "tests/attack36/first_atfork_lib.h"
#include "tests/shim/shim_check.h"

int main(int argc, char** argv) {
  (void)argv;
  require_shim();
  CHECK(argc < 2 || first_atfork_lib_result() == 1);
  printf("first registration beside a dlopen: no hang\n");
  return 0;
}
