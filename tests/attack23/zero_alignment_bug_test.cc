// pmr allocate(n, 0) for 4096 < n <= 256 KiB: SIGFPE (integer division by
// zero) instead of std::bad_alloc, until class_for refused such alignments. tests/pmr_contract_test.cc requires
// allocate(24, 0) to throw bad_alloc ("the answer must not depend on the
// cache"); the same request above 4 KiB crashes the process. heap::allocate
// evaluates class_for(bytes, 0) as an argument of allocate_slow, before
// allocate_slow checks the alignment; class_for's loop for classes above
// 4 KiB takes kSizeClasses[cls].size % alignment. Not introduced by 69c6333
// (the same on 2b00151: small_class_for sent every size above 4 KiB to that
// call already).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <new>

#include "allocator/dropalloc.h"

namespace {

// Runs allocate(n, align) in a child: 0 = threw bad_alloc, 1 = returned,
// otherwise the signal number that killed it (+ 1000).
int outcome(std::size_t n, std::size_t align) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGFPE, SIG_DFL);  // not doctest's handler: die of the signal, quietly
    dropalloc::droppable_resource res;
    try {
      void* p = res.allocate(n, align);
      (void)p;
      _exit(1);
    } catch (const std::bad_alloc&) {
      _exit(0);
    }
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  if (WIFSIGNALED(st)) return 1000 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

}  // namespace

TEST_CASE("allocate(n, 0) throws bad_alloc at every size, as allocate(24, 0) does") {
  for (std::size_t n : {24, 4096, 4097, 8192, 16384, 65536, 65537, 262144, 262145}) {
    CAPTURE(n);
    const int got = outcome(n, 0);
    if (got >= 1000) MESSAGE("allocate(" << n << ", 0) killed the process by signal " << got - 1000);
    CHECK(got == 0);
  }
}
