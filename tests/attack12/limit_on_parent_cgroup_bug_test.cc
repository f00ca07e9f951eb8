// pressure_monitor() reads only the limit of the process's own memory cgroup.
// When the limit is set on an ancestor (a systemd slice over its services, a
// container's cgroup over the sub-cgroups its runtime makes), the own cgroup
// reads "no limit", and the monitor falls back to PSI: the keeper never sees
// the 95% watermark of the limit that actually applies (cgroup v1 reports it
// as hierarchical_memory_limit in memory.stat; on v2 it is the smallest
// memory.max/memory.high up the tree).
//
// Made here: outer (256 MiB limit) / inner (no limit); a forked child joins
// inner and builds a pressure_monitor. Needs root and a writable memory
// cgroup (tag no-sandbox).
// Fixed: the monitor watches every limited cgroup from its own up to the
// hierarchy's root (os::cgroup_and_ancestors).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "allocator/cache/pressure.h"
#include "allocator/os/cgroup.h"

TEST_CASE("a process under a limited parent cgroup gets a cgroup signal, not PSI") {
  std::string why;
  auto outer = dropalloc::os::child_cgroup::create("attack12-outer-" + std::to_string(getpid()), 256ull << 20, &why);
  if (!outer) {
    MESSAGE("skipped: " << why);
    return;
  }
  const auto& cg = outer->cgroup();
  if (cg.version == 2) {
    FILE* f = std::fopen((cg.dir + "/cgroup.subtree_control").c_str(), "w");
    if (f != nullptr) {
      std::fputs("+memory", f);
      std::fclose(f);
    }
  }
  std::string inner = cg.dir + "/inner";
  REQUIRE(mkdir(inner.c_str(), 0755) == 0);
  int go[2], back[2];
  REQUIRE(pipe(go) == 0);
  REQUIRE(pipe(back) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1) _exit(100);
    dropalloc::pressure_monitor m;
    std::string d = m.description();
    if (write(back[1], d.data(), d.size()) < 0) _exit(101);
    _exit(static_cast<int>(m.source()));
  }
  close(go[0]);
  close(back[1]);
  FILE* procs = std::fopen((inner + "/cgroup.procs").c_str(), "w");
  REQUIRE(procs != nullptr);
  std::fprintf(procs, "%d", pid);
  std::fclose(procs);
  REQUIRE(write(go[1], "x", 1) == 1);
  close(go[1]);
  char buf[512] = {};
  ssize_t n = read(back[0], buf, sizeof buf - 1);
  (void)n;
  close(back[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  rmdir(inner.c_str());
  REQUIRE(WIFEXITED(status));
  auto source = static_cast<dropalloc::pressure_source>(WEXITSTATUS(status));
  MESSAGE("cgroup v" << cg.version << ", limit 256 MiB on " << cg.dir << "; the monitor in inner/ chose: " << buf);
  CHECK((source == dropalloc::pressure_source::cgroup_v1 || source == dropalloc::pressure_source::cgroup_v2));
}
