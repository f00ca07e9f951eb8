// For tests that need real kernel drops: runs work() in a forked child that
// joins a fresh child memory cgroup (made under this process's own, removed
// afterwards) before it starts, and brings its trivially copyable result back.
// Never hangs on a child that dies: the parent closes its copies of the
// child's pipe ends, so a killed child ends the read with end-of-file.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include <doctest/doctest.h>

#include "allocator/dropalloc.h"
#include "allocator/os/cgroup.h"
#include "allocator/os/options.h"

namespace dropalloc::testing {

template <class Result>
struct cgroup_run {
  std::string skipped;  // non-empty: why nothing ran (no cgroup, no MAP_DROPPABLE)
  bool joined = false;  // the child was moved into the cgroup
  std::string why;      // why joining failed
  int status = 0;       // waitpid status of the child
  bool got_result = false;
  Result result{};
  int cgroup_version = 0;
  os::cgroup_memory_state state;  // of the cgroup once the child has exited
};

template <class Result, class Work>
cgroup_run<Result> run_in_child_cgroup(const std::string& name, std::uint64_t limit_bytes, Work work) {
  static_assert(std::is_trivially_copyable_v<Result>, "the result crosses a pipe");
  cgroup_run<Result> run;
  {
    // The fallback runs only when asked for (DROPALLOC_FORCE_FALLBACK=1, the
    // *_fallback targets): there the kernel reclaims sealed (MADV_FREE) pages
    // only, and a test written for MAP_DROPPABLE may expect more drops.
    droppable_resource probe;
    if (probe.arena_backing() != backing::droppable && !os::option_flag(os::option::force_fallback)) {
      run.skipped = "the kernel refused MAP_DROPPABLE, nothing to drop";
      return run;
    }
  }
  auto cg = os::child_cgroup::create(name + "-" + std::to_string(getpid()), limit_bytes, &run.skipped);
  if (!cg) {
    run.skipped = "no writable memory cgroup: " + run.skipped;
    return run;
  }
  run.skipped.clear();
  run.cgroup_version = cg->cgroup().version;
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) {
    run.why = "pipe failed";
    return run;
  }
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    char go;
    if (read(to_child[0], &go, 1) != 1) _exit(3);  // wait until we are in the cgroup
    Result r = work();
    _exit(write(from_child[1], &r, sizeof r) == static_cast<ssize_t>(sizeof r) ? 0 : 4);
  }
  close(to_child[0]);
  close(from_child[1]);
  if (pid > 0) {
    run.joined = cg->add_process(pid, &run.why);
    char go = 1;
    if (run.joined && write(to_child[1], &go, 1) == 1) {
      // Read as bytes, then copied: gcc -O1 with UBSan otherwise mistakes
      // the result struct for its first member (-Wstringop-overflow).
      unsigned char bytes[sizeof run.result];
      run.got_result = read(from_child[0], bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes);
      if (run.got_result) std::memcpy(static_cast<void*>(&run.result), bytes, sizeof bytes);
    }
    close(to_child[1]);  // a child that never joined sees end-of-file and exits
    waitpid(pid, &run.status, 0);
  } else {
    run.why = "fork failed";
    close(to_child[1]);
  }
  close(from_child[0]);
  run.state = cg->state();
  return run;
}

// The checks every test makes of its run: false, with a SKIPPED message, when
// nothing could run here; otherwise it requires that the child joined the
// cgroup, exited normally with status 0 and sent its result back.
template <class Result>
bool child_ran_cleanly(const cgroup_run<Result>& run) {
  if (!run.skipped.empty()) {
    MESSAGE("SKIPPED: " << run.skipped);
    return false;
  }
  REQUIRE_MESSAGE(run.joined, run.why);
  REQUIRE_MESSAGE(WIFEXITED(run.status), "child killed by signal " << WTERMSIG(run.status) << " (cgroup v"
                                                                  << run.cgroup_version << ": OOM kills "
                                                                  << run.state.oom_kills << ", usage "
                                                                  << (run.state.usage >> 20) << " MiB)");
  REQUIRE(WEXITSTATUS(run.status) == 0);
  REQUIRE(run.got_result);
  return true;
}

// What a forked child run by run_child_in_dir() reported: its waitpid status
// and the text it wrote back.
struct child_report {
  int status = 0;
  std::string text;
};

// Forks a child, moves it into the existing cgroup directory `dir` (writes
// its pid to dir/cgroup.procs) and only then lets it run work(&text), whose
// return value becomes the child's exit status. For tests that build their
// own cgroup trees (a limit on a parent, a bind-mounted container cgroup).
template <class Work>
child_report run_child_in_dir(const std::string& dir, Work work) {
  child_report out;
  int go[2], back[2];
  REQUIRE(pipe(go) == 0);
  REQUIRE(pipe(back) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char c;
    close(go[1]);
    close(back[0]);
    if (read(go[0], &c, 1) != 1) _exit(100);  // not moved: the parent closed the pipe
    std::string text;
    const int code = work(&text);
    if (write(back[1], text.data(), text.size()) < 0) _exit(101);
    _exit(code);
  }
  close(go[0]);
  close(back[1]);
  FILE* procs = std::fopen((dir + "/cgroup.procs").c_str(), "w");
  const bool moved = procs != nullptr && std::fprintf(procs, "%d", pid) > 0 && std::fclose(procs) == 0;
  if (moved) REQUIRE(write(go[1], "x", 1) == 1);
  close(go[1]);  // a child never moved sees end-of-file and exits
  char buf[1024];
  for (ssize_t n; (n = read(back[0], buf, sizeof buf)) > 0;) out.text.append(buf, static_cast<std::size_t>(n));
  close(back[0]);
  waitpid(pid, &out.status, 0);
  REQUIRE_MESSAGE(moved, "could not move the child into " << dir);
  return out;
}

}  // namespace dropalloc::testing
