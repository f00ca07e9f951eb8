// DROPALLOC_ABORT_ON_MISUSE=1 (set by the BUILD rule) turns every refused free
// into abort(), in the checked build also a mismatched sized free.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "allocator/pmr/droppable_resource.h"  // the checked build of the front end

namespace {

int run_child(const std::function<void()>& body) {
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : -WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("misuse aborts when asked to") {
  CHECK(run_child([] {
          dropalloc::droppable_resource res;
          void* p = res.allocate(64);
          res.deallocate(p, 64);
          res.deallocate(p, 64);
        }) == SIGABRT);
  CHECK(run_child([] {
          dropalloc::droppable_resource res;
          int x = 0;
          res.deallocate(&x, sizeof x);
        }) == SIGABRT);
  CHECK(run_child([] {
          dropalloc::droppable_resource res;
          void* p = res.allocate(64);
          res.deallocate(p, 64 * 1024);  // checked build: wrong size
        }) == SIGABRT);
  CHECK(run_child([] {
          dropalloc::droppable_resource res;
          void* p = res.allocate(64);
          res.deallocate(p, 64);  // correct: no abort
        }) == 0);
}
