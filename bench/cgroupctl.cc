// The benchmark drivers' (bench/pressure.py, bench/rocksdb.py) handle on
// memory cgroups, so that finding the process's cgroup, making a limited
// child under it (v1 or v2) and removing it is done by one implementation,
// //allocator:cgroup, for the allocator, its tests and the benchmarks alike.
//
//   cgroupctl probe               prints `cgroup version=V dir=D` of our own
//   cgroupctl create NAME BYTES   makes child NAME with that limit and leaves
//                                 it; prints `cgroup version=V dir=D usage=F
//                                 events=F` (the files a driver samples)
//   cgroupctl remove DIR          kills what is left in DIR, then removes it
//
// Exit status 0 on success; otherwise 1, with the reason on stderr.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "allocator/os/cgroup.h"

namespace {

using dropalloc::os::child_cgroup;
using dropalloc::os::memory_cgroup;

int fail(const std::string& why) {
  std::fprintf(stderr, "cgroupctl: %s\n", why.c_str());
  return 1;
}

int usage() {
  return fail("usage: cgroupctl probe | create NAME LIMIT_BYTES | remove DIR");
}

int create_cgroup(const std::string& name, const char* limit_text) {
  char* end = nullptr;
  const unsigned long long limit = std::strtoull(limit_text, &end, 10);
  if (*limit_text < '0' || *limit_text > '9' || *end != '\0' || limit == 0) {
    return fail(std::string("bad limit: ") + limit_text);
  }
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return fail("bad name: " + name);
  }
  std::string why;
  auto cg = child_cgroup::create(name, limit, &why);
  if (!cg) return fail(why);
  cg->keep();  // for the caller's processes; `cgroupctl remove` takes it away
  const memory_cgroup& c = cg->cgroup();
  std::printf("cgroup version=%d dir=%s usage=%s/%s events=%s/%s\n", c.version, c.dir.c_str(), c.dir.c_str(),
              c.version == 1 ? "memory.usage_in_bytes" : "memory.current", c.dir.c_str(),
              c.version == 1 ? "memory.oom_control" : "memory.events");
  return 0;
}

int remove_cgroup(const std::string& dir) {
  std::string why;
  auto cg = child_cgroup::open_existing(dir, &why);
  if (!cg) return fail(why);
  // Killed processes leave the cgroup only once they have exited: about 3 s.
  if (cg->remove(300, true)) return 0;
  cg->keep();
  return fail("could not remove " + dir);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "probe" && argc == 2) {
    memory_cgroup own;
    std::string why;
    if (!dropalloc::os::find_memory_cgroup(&own, &why)) return fail(why);
    std::printf("cgroup version=%d dir=%s\n", own.version, own.dir.c_str());
    return 0;
  }
  if (cmd == "create" && argc == 4) return create_cgroup(argv[2], argv[3]);
  if (cmd == "remove" && argc == 3) return remove_cgroup(argv[2]);
  return usage();
}
