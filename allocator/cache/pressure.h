// Memory pressure as the cache layer sees it: the process's memory cgroup
// (v1 memory.usage_in_bytes / memory.limit_in_bytes, v2 memory.current /
// memory.max / memory.high / memory.events) or, without a limited cgroup, the
// kernel's pressure stall information (/proc/pressure/memory).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "allocator/os/cgroup.h"

namespace dropalloc {

enum class pressure_source : std::uint8_t { none, cgroup_v1, cgroup_v2, psi };
const char* to_string(pressure_source s) noexcept;

// One limit that applies to the process, and the usage it is judged against.
struct cgroup_usage {
  std::uint64_t usage = 0;             // bytes charged
  std::uint64_t limit = UINT64_MAX;    // the lower of memory.max and memory.high
};

struct pressure_reading {
  pressure_source source = pressure_source::none;
  // Every limited cgroup, the process's own and its ancestors', in the same
  // order at every read of one monitor (a keeper compares them poll to poll).
  // Empty: the single limit below is all there is (readings made by hand).
  std::vector<cgroup_usage> limits;
  // Of the limit nearest to being reached:
  std::uint64_t usage = 0;             // bytes charged
  std::uint64_t limit = UINT64_MAX;    // the lower of memory.max and memory.high
  std::uint64_t throttle_events = 0;   // v2 memory.events "high" + "max", cumulative, all limited cgroups
  double psi_some_avg10 = 0;           // % of the last 10 s some task stalled on memory
  // % of the time since the previous read that some task stalled on memory;
  // negative when unknown (the first read, or no "total" in the PSI file).
  double psi_stall_percent = -1;
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
  double psi_avg10 = 10.0;     // % of time some task stalled on memory that counts as pressure
  double psi_fraction = 0.05;  // share of the cache shed per poll under PSI pressure
};

// Empty if the thresholds make sense (0 < low <= high <= 1, psi_avg10 > 0,
// 0 <= psi_fraction <= 1); otherwise what is wrong, for an error message.
std::string invalid_thresholds(const pressure_thresholds& t);

class pressure_monitor {
 public:
  // Finds the calling process's memory cgroup; where neither it nor an
  // ancestor has a limit, uses PSI. The cgroups to watch are chosen here: a
  // limit set later on a cgroup that had none is not seen.
  pressure_monitor();
  // Reads a given cgroup and its ancestors up to cg.root (tests, benchmarks).
  explicit pressure_monitor(os::memory_cgroup cg);

  bool read(pressure_reading* out);
  // Turns a reading into what to shed. Under cgroup limits, enough to bring
  // every limit above its high watermark down to its low one. Under PSI, a stall over the time since
  // the previous read; without the stall total, the 10 s average, at most
  // once per 10 s (it stays high that long after a shed has helped).
  shed_request assess(const pressure_reading& r, const pressure_thresholds& t);
  pressure_source source() const noexcept { return source_; }
  const std::string& description() const noexcept { return description_; }

 private:
  void choose_source();

  os::memory_cgroup cg_;
  std::vector<os::memory_cgroup> limited_;  // cg_ and ancestors with a limit, nearest first
  pressure_source source_ = pressure_source::none;
  std::string description_;
  std::uint64_t last_events_ = 0;
  bool have_events_ = false;
  std::uint64_t last_psi_total_us_ = 0;
  std::chrono::steady_clock::time_point last_psi_read_{};
  std::chrono::steady_clock::time_point last_avg10_shed_{};
  bool have_psi_total_ = false, have_avg10_shed_ = false;
};

// Parses the "some" line of /proc/pressure/memory (or a cgroup's
// memory.pressure); false if the text has none.
using os::parse_psi_some_avg10;  // the parser lives with the reader in the OS layer

}  // namespace dropalloc
