// Helpers for the thirteenth round: fake cgroup trees (v1 or v2 file names)
// that a pressure_monitor reads as the process's cgroup and its ancestors.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>

#include "allocator/os/cgroup.h"

namespace attack13 {

using namespace std::chrono_literals;

inline std::string make_tmpdir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/a13.XXXXXX";
  return mkdtemp(templ.data());
}

// Writes a file by rename, so a concurrent reader never sees half a number.
inline void put(const std::string& dir, const std::string& name, const std::string& text) {
  std::string tmp = dir + "/." + name;
  { std::ofstream(tmp) << text; }
  rename(tmp.c_str(), (dir + "/" + name).c_str());
}
inline void put(const std::string& dir, const std::string& name, std::uint64_t v) {
  put(dir, name, std::to_string(v) + "\n");
}

// A v1-style cgroup directory: usage and limit.
inline void v1(const std::string& dir, std::uint64_t usage, std::uint64_t limit) {
  mkdir(dir.c_str(), 0755);
  put(dir, "memory.limit_in_bytes", limit);
  put(dir, "memory.usage_in_bytes", usage);
}

template <class F>
bool wait_until(F done, std::chrono::milliseconds max = 10s) {
  auto end = std::chrono::steady_clock::now() + max;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace attack13
