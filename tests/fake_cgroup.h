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

// A fresh directory under the test's temporary directory.
inline std::string make_tmpdir(const char* prefix = "fakecg") {
  const char* base = getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/" + prefix + ".XXXXXX";
  return mkdtemp(templ.data());
}

// Writes dir/name by writing a new file and renaming it over the old one, so
// a concurrent reader never sees a half-written number.
inline void put(const std::string& dir, const std::string& name, const std::string& text) {
  std::string tmp = dir + "/." + name;
  { std::ofstream(tmp) << text; }
  rename(tmp.c_str(), (dir + "/" + name).c_str());
}
inline void put(const std::string& dir, const std::string& name, std::uint64_t v) {
  put(dir, name, std::to_string(v) + "\n");
}

class fake_cgroup {
 public:
  fake_cgroup(std::uint64_t usage, std::uint64_t limit) : dir_(make_tmpdir()) { set(usage, limit); }
  ~fake_cgroup() { remove(); }
  void set(std::uint64_t usage, std::uint64_t limit) {
    put(dir_, "memory.limit_in_bytes", limit);
    put(dir_, "memory.usage_in_bytes", usage);
  }
  void set_usage(std::uint64_t usage) { put(dir_, "memory.usage_in_bytes", usage); }
  void remove() {
    unlink((dir_ + "/memory.usage_in_bytes").c_str());
    unlink((dir_ + "/memory.limit_in_bytes").c_str());
    rmdir(dir_.c_str());
  }
  dropalloc::os::memory_cgroup cgroup() const { return {1, dir_, {}}; }

 private:
  std::string dir_;
};

}  // namespace dropalloc_test
