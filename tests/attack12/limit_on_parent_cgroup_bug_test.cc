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
#include "tests/cgroup_child.h"

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
  const auto child = dropalloc::testing::run_child_in_dir(inner, [](std::string* text) {
    dropalloc::pressure_monitor m;
    *text = m.description();
    return static_cast<int>(m.source());
  });
  rmdir(inner.c_str());
  const int status = child.status;
  const std::string buf = child.text;
  REQUIRE(WIFEXITED(status));
  auto source = static_cast<dropalloc::pressure_source>(WEXITSTATUS(status));
  MESSAGE("cgroup v" << cg.version << ", limit 256 MiB on " << cg.dir << "; the monitor in inner/ chose: " << buf);
  CHECK((source == dropalloc::pressure_source::cgroup_v1 || source == dropalloc::pressure_source::cgroup_v2));
}
