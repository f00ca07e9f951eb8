// dropalloc's environment options (DROPALLOC_*): the one table of them and
// their one parser. Lives in the OS layer because the OS layer and the core
// read options too, and lower layers never include upper ones.
//
// Everything here may run inside malloc (the LD_PRELOAD shim): no allocation,
// output with write(2) only, errno preserved.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dropalloc::os {

// Every variable dropalloc reads. README.md ("Options") documents each.
enum class option : std::uint8_t {
  verbose,
  stats,
  abort_on_misuse,
  force_fallback,
  decay_ms,
  decay_thread,
  droppable_range,
  test_droppable_errno,
};
inline constexpr std::size_t kOptionCount = 8;

const char* option_name(option o) noexcept;

// DROPALLOC_STATS: off, on, or on with one line per size class.
enum class stats_level : std::uint8_t { off = 0, on = 1, classes = 2 };

// Readers of the environment. Unset or empty gives the default; a value the
// option does not accept gives the default and one warning on stderr (once
// per option and process) naming the variable and the value. The first call
// of any of them also warns about unknown DROPALLOC_* names (check_names).
bool option_flag(option o) noexcept;            // verbose, abort_on_misuse, force_fallback, decay_thread
stats_level option_stats() noexcept;            // stats
std::uint64_t option_number(option o) noexcept; // decay_ms, test_droppable_errno
// droppable_range: false when unset or refused.
bool option_range(std::size_t* lo, std::size_t* hi) noexcept;

// Warns once per process about each DROPALLOC_* variable in the environment
// that is no option, suggesting the closest option name. DROPALLOC_TEST_* is
// left to test harnesses.
void check_names() noexcept;

// One line on stderr listing every option with the value in effect (once per
// process; for DROPALLOC_VERBOSE=1).
void print_options() noexcept;

// ---- the value parsers, exposed for tests ----------------------------------------
// Exactly 1/0, true/false, yes/no, on/off, in any case.
bool parse_bool(const char* s, bool* out) noexcept;
// Decimal digits only, the whole string, at most `max`.
bool parse_number(const char* s, std::uint64_t max, std::uint64_t* out) noexcept;
// A byte count with an optional k/M/G suffix (powers of 1024): "64k", "1M".
bool parse_size(const char* s, const char* end, std::size_t* out) noexcept;
// Edit distance of two short strings (at most 63 characters; longer ones are
// cut), for "did you mean".
std::size_t edit_distance(const char* a, const char* b) noexcept;

}  // namespace dropalloc::os
