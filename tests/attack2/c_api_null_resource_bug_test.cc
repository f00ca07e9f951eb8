// A defect a review found; this test failed while it existed and guards the fix.
//
// The C API checks a NULL resource in two functions only
// (dropalloc_seal_rewritten: FOREIGN; dropalloc_get_stats: EINVAL). The
// others call a member function on it. The queries happen to survive for a
// pointer that is in no arena (they return before touching the heap), but
// dropalloc_free(NULL, p), dropalloc_alloc(NULL, ...), dropalloc_seal_all(NULL)
// and dropalloc_trim(NULL) crash (SIGSEGV) instead of doing nothing /
// returning NULL with errno EINVAL / returning 0. A C caller whose
// dropalloc_create() failed (it returns NULL with errno set, as documented)
// and who asks anyway takes the process down.
//
// Contract relied on: "asking never crashes" and "no crash or hang on any
// input (NULL, ...)"; the header itself treats a NULL resource as an input
// for two functions, so it is not a documented precondition for the rest.
// Each call runs in a child process; the parent reports how the child ended.
#include <doctest/doctest.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "allocator/dropalloc_c.h"

namespace {

// 0 if fn() returned normally in a child, else the signal that ended it.
int run_in_child(const std::function<void()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    fn();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

}  // namespace

TEST_CASE("C API entry points given a NULL resource answer instead of crashing [KNOWN BUG]") {
  static char not_a_block[64];
  struct call {
    const char* name;
    std::function<void()> fn;
  } calls[] = {
      {"dropalloc_seal_rewritten(NULL, p)", [] { (void)dropalloc_seal_rewritten(nullptr, not_a_block); }},
      {"dropalloc_get_stats(NULL, &s)", [] { dropalloc_stats s; (void)dropalloc_get_stats(nullptr, &s); }},
      {"dropalloc_check(NULL, p, 1)", [] { (void)dropalloc_check(nullptr, not_a_block, 1); }},
      {"dropalloc_is_intact(NULL, b)", [] { (void)dropalloc_is_intact(nullptr, dropalloc_block{not_a_block, 1}); }},
      {"dropalloc_generation(NULL, p)", [] { (void)dropalloc_generation(nullptr, not_a_block); }},
      {"dropalloc_usable_size(NULL, p)", [] { (void)dropalloc_usable_size(nullptr, not_a_block); }},
      {"dropalloc_seal(NULL, p)", [] { (void)dropalloc_seal(nullptr, not_a_block); }},
      {"dropalloc_seal_all(NULL)", [] { (void)dropalloc_seal_all(nullptr); }},
      {"dropalloc_free(NULL, p)", [] { dropalloc_free(nullptr, not_a_block); }},
      {"dropalloc_trim(NULL)", [] { dropalloc_trim(nullptr); }},
      {"dropalloc_drop_for_testing(NULL, p, 64)", [] { (void)dropalloc_drop_for_testing(nullptr, not_a_block, 64); }},
      {"dropalloc_alloc(NULL, 64, 0)", [] { (void)dropalloc_alloc(nullptr, 64, 0); }},
  };
  int crashed = 0;
  for (const call& c : calls) {
    int sig = run_in_child(c.fn);
    if (sig != 0) {
      ++crashed;
      MESSAGE(std::string(c.name) << ": child killed by signal " << sig << " (" << std::string(strsignal(sig)) << ")");
    }
  }
  CHECK(crashed == 0);
}
