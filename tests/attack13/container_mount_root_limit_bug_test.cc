// find_memory_cgroup() sets memory_cgroup::root to the directory where the
// memory hierarchy is mounted, and cgroup_and_ancestors() stops before it
// ("the root's own files are not limits"). That holds only when the mount
// shows the hierarchy's real root (mountinfo root "/"). A container without
// a cgroup namespace (Docker/containerd on cgroup v1, and v2 containers whose
// runtime moves processes into a sub-cgroup) gets its own cgroup bind-mounted
// at /sys/fs/cgroup/memory: the mount's root IS the container's cgroup, with
// the container's limit. A process in a sub-cgroup of it then sees no limit
// and the monitor falls back to machine-wide PSI.
//
// Made here as a container runtime makes it: outer (256 MiB) / inner (no
// limit); a forked child joins inner, enters a new mount namespace and
// bind-mounts outer over /sys/fs/cgroup/memory, then builds a
// pressure_monitor(). Needs root and a writable v1 memory cgroup (no-sandbox).
// Fixed: os::cgroup_and_ancestors includes the mount directory itself.
#include <doctest/doctest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "allocator/cache/pressure.h"
#include "allocator/os/cgroup.h"
#include "tests/cgroup_child.h"

TEST_CASE("a process in a sub-cgroup of a container's bind-mounted cgroup sees the container's limit") {
  std::string why;
  auto outer = dropalloc::os::child_cgroup::create("attack13-outer-" + std::to_string(getpid()), 256ull << 20, &why);
  if (!outer) {
    MESSAGE("skipped: " << why);
    return;
  }
  const auto& cg = outer->cgroup();
  if (cg.version != 1) {
    MESSAGE("skipped: the test bind-mounts a v1 hierarchy; this is v" << cg.version);
    return;
  }
  const std::string inner = cg.dir + "/inner";
  REQUIRE(mkdir(inner.c_str(), 0755) == 0);
  const auto child = dropalloc::testing::run_child_in_dir(inner, [&cg](std::string* report) {
    if (unshare(CLONE_NEWNS) != 0) {
      *report = std::string("unshare: ") + strerror(errno);
    } else if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      *report = std::string("make-private: ") + strerror(errno);
    } else if (mount(cg.dir.c_str(), cg.root.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      *report = std::string("bind: ") + strerror(errno);
    } else {
      dropalloc::os::memory_cgroup found;
      std::string w;
      bool ok = dropalloc::os::find_memory_cgroup(&found, &w);
      dropalloc::pressure_monitor m;
      *report = "found " + std::string(ok ? "" : "nothing ") + "dir=" + found.dir + " root=" + found.root +
                "; monitor: " + m.description();
      return 10 + static_cast<int>(m.source());
    }
    return 102;
  });
  rmdir(inner.c_str());
  const int status = child.status;
  const std::string buf = child.text;
  MESSAGE("limit 256 MiB on " << cg.dir << ", bind-mounted at " << cg.root << "; the child in inner/: " << buf);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) >= 10);
  auto source = static_cast<dropalloc::pressure_source>(WEXITSTATUS(status) - 10);
  CHECK((source == dropalloc::pressure_source::cgroup_v1 || source == dropalloc::pressure_source::cgroup_v2));
}
