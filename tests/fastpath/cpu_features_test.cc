// The free fast path prefetches a state line for writing only where the CPU
// has prefetchw (allocator/core/cpu_features.cc). Its answer must agree with
// the kernel's: Linux lists the same CPUID bit as "3dnowprefetch" among the
// flags of /proc/cpuinfo. A wrong decoding would either lose the prefetch
// everywhere or, worse, run it on a CPU that lacks it.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "allocator/core/cpu_features.h"

namespace {

// Whether the first "flags" line of /proc/cpuinfo lists `flag`; *found says
// whether there was such a line at all.
bool kernel_lists_flag(const std::string& flag, bool* found) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    *found = true;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w) {
      if (w == flag) return true;
    }
    return false;
  }
  *found = false;
  return false;
}

}  // namespace

TEST_CASE("the prefetchw check agrees with the kernel's 3dnowprefetch flag") {
#if defined(__x86_64__)
  bool found = false;
  const bool listed = kernel_lists_flag("3dnowprefetch", &found);
  REQUIRE_MESSAGE(found, "no flags line in /proc/cpuinfo");
  CHECK(dropalloc::core::g_cpu_has_prefetchw == listed);
#else
  CHECK_FALSE(dropalloc::core::g_cpu_has_prefetchw);
#endif
}
