// A directory that looks like a cgroup v1 memory controller to
// dropalloc::os::read_cgroup_state: the test writes usage and limit, and a
// pressure_monitor built on it reads them, so a keeper's shedding can be
// driven deterministically (no real cgroup, no root).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "allocator/os/cgroup.h"

namespace dropalloc_test {

class fake_cgroup {
 public:
  fake_cgroup(std::uint64_t usage, std::uint64_t limit) {
    const char* base = getenv("TEST_TMPDIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/fakecg.XXXXXX";
    dir_ = mkdtemp(templ.data());
    set(usage, limit);
  }
  ~fake_cgroup() { remove(); }
  void set(std::uint64_t usage, std::uint64_t limit) {
    write("memory.limit_in_bytes", limit);
    write("memory.usage_in_bytes", usage);
  }
  void set_usage(std::uint64_t usage) { write("memory.usage_in_bytes", usage); }
  void remove() {
    unlink((dir_ + "/memory.usage_in_bytes").c_str());
    unlink((dir_ + "/memory.limit_in_bytes").c_str());
    rmdir(dir_.c_str());
  }
  dropalloc::os::memory_cgroup cgroup() const { return {1, dir_, {}}; }

 private:
  void write(const char* name, std::uint64_t v) {
    // Written to a new file and renamed over the old one, so a concurrent
    // reader never sees a half-written number.
    std::string tmp = dir_ + "/." + name;
    { std::ofstream(tmp) << v << "\n"; }
    rename(tmp.c_str(), (dir_ + "/" + name).c_str());
  }
  std::string dir_;
};

}  // namespace dropalloc_test
