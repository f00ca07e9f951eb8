// The human-readable statistics report: one implementation behind the C API
// (dropalloc_stats_print), the C++ API (print_stats) and the malloc shim's
// DROPALLOC_STATS at exit.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dropalloc::core {

class heap;

// Receives the report piece by piece (n bytes, no terminating NUL). Returns
// false to stop the report early (a failed write).
using stats_sink = bool (*)(void* ctx, const char* text, std::size_t n) noexcept;

// Flags: also one line per size class that has arenas.
inline constexpr unsigned kStatsPerClass = 1u;

// Writes the report for one heap, or for every heap of the process when h is
// nullptr. Allocates nothing (the malloc shim calls it, also at exit).
void write_stats_report(const heap* h, unsigned flags, stats_sink sink, void* ctx) noexcept;

// In a forked child: a report that another thread was writing at the fork
// ends there, so the child's own reports (its exit report too) may run.
void stats_report_after_fork() noexcept;

// A sink for a file descriptor (write(2)); ctx is an fd_sink.
struct fd_sink {
  int fd;
  int error = 0;  // errno of the first failed write
};
bool write_to_fd(void* ctx, const char* text, std::size_t n) noexcept;

// free/realloc calls the malloc shim ignored because the pointer was in no
// heap: a process-wide figure, reported by the process-wide report.
extern std::atomic<std::uint64_t> g_foreign_frees;

}  // namespace dropalloc::core
