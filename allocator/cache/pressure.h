// Memory pressure as the cache layer sees it: the process's memory cgroup
// (v1 memory.usage_in_bytes / memory.limit_in_bytes, v2 memory.current /
// memory.max / memory.high / memory.events) or, without a limited cgroup, the
// kernel's pressure stall information (/proc/pressure/memory).
#pragma once

#include <cstdint>
#include <string>

#include "allocator/os/cgroup.h"

namespace dropalloc {

enum class pressure_source : std::uint8_t { none, cgroup_v1, cgroup_v2, psi };
const char* to_string(pressure_source s) noexcept;

struct pressure_reading {
  pressure_source source = pressure_source::none;
  std::uint64_t usage = 0;             // cgroup bytes charged
  std::uint64_t limit = UINT64_MAX;    // the lower of memory.max and memory.high
  std::uint64_t throttle_events = 0;   // v2 memory.events "high" + "max", cumulative
  double psi_some_avg10 = 0;           // % of the last 10 s some task stalled on memory
};

// What to shed: bytes to get back under the low watermark, or (when only a
// stall signal is available) a fraction of what the cache holds.
struct shed_request {
  std::uint64_t bytes = 0;
  double fraction = 0;
};

struct pressure_thresholds {
  double high = 0.90;          // shed when usage exceeds this share of the limit...
  double low = 0.80;           // ...down to this share
  double psi_avg10 = 10.0;     // PSI "some avg10" (%) that counts as pressure
  double psi_fraction = 0.05;  // share of the cache shed per poll under PSI pressure
};

class pressure_monitor {
 public:
  // Finds the calling process's memory cgroup; where it has no limit, uses PSI.
  pressure_monitor();
  // Reads a given cgroup (tests).
  explicit pressure_monitor(os::memory_cgroup cg);

  bool read(pressure_reading* out);
  shed_request assess(const pressure_reading& r, const pressure_thresholds& t);
  pressure_source source() const noexcept { return source_; }
  const std::string& description() const noexcept { return description_; }

 private:
  void choose_source();

  os::memory_cgroup cg_;
  pressure_source source_ = pressure_source::none;
  std::string description_;
  std::uint64_t last_events_ = 0;
  bool have_events_ = false;
};

// Parses the "some" line of /proc/pressure/memory (or a cgroup's
// memory.pressure); false if the text has none.
using os::parse_psi_some_avg10;  // the parser lives with the reader in the OS layer

}  // namespace dropalloc
