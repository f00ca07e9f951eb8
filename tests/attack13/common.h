// Helpers for the thirteenth round: fake cgroup trees (v1 or v2 file names)
// that a pressure_monitor reads as the process's cgroup and its ancestors.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "allocator/os/cgroup.h"
#include "tests/fake_cgroup.h"

namespace attack13 {

using namespace std::chrono_literals;

using dropalloc_test::put;
inline std::string make_tmpdir() { return dropalloc_test::make_tmpdir("a13"); }

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
