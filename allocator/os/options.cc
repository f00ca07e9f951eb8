// The DROPALLOC_* options: table, parsers, warnings. See options.h.
#include "allocator/os/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <initializer_list>

extern char** environ;

namespace dropalloc::os {
namespace {

enum class kind : std::uint8_t { flag, stats, number, range };

struct spec {
  const char* name;
  kind k;
  std::uint64_t fallback;  // the default (flags: 0/1; stats: a stats_level)
  std::uint64_t max;       // numbers only
  bool listed;             // in the verbose listing even when unset
};

// In the order of `option`.
constexpr spec kSpecs[kOptionCount] = {
    {"DROPALLOC_VERBOSE", kind::flag, 0, 0, true},
    {"DROPALLOC_STATS", kind::stats, 0, 0, true},
    {"DROPALLOC_ABORT_ON_MISUSE", kind::flag, 0, 0, true},
    {"DROPALLOC_FORCE_FALLBACK", kind::flag, 0, 0, true},
    {"DROPALLOC_DECAY_MS", kind::number, 100, 3600u * 1000, true},
    {"DROPALLOC_DECAY_THREAD", kind::flag, 1, 0, true},
    {"DROPALLOC_DROPPABLE_RANGE", kind::range, 0, 0, true},
    // A test hook (linux_os.cc): only worth listing when someone set it.
    {"DROPALLOC_TEST_DROPPABLE_ERRNO", kind::number, 0, 4095, false},
};

// One warning per option and process, however often it is read.
std::atomic<bool> g_warned[kOptionCount];
std::atomic<bool> g_names_checked{false};
std::atomic<bool> g_listed{false};

const spec& spec_of(option o) { return kSpecs[static_cast<std::size_t>(o)]; }

void say(const char* msg, int n) noexcept {
  if (n <= 0) return;
  int saved = errno;
  ssize_t ignored = write(STDERR_FILENO, msg, static_cast<std::size_t>(n));
  (void)ignored;
  errno = saved;
}

// snprintf's count may exceed the buffer: print what fits, newline kept.
void say_line(char* line, std::size_t size, int n) noexcept {
  if (n <= 0) return;
  if (static_cast<std::size_t>(n) >= size) {
    n = static_cast<int>(size - 1);
    line[n - 1] = '\n';
  }
  say(line, n);
}

const char* stats_text(std::uint64_t level) {
  return level == 2 ? "classes" : level == 1 ? "on" : "off";
}

// The default as a user would write it, for warnings and the listing.
void default_text(const spec& s, char* buf, std::size_t size) {
  switch (s.k) {
    case kind::flag: snprintf(buf, size, "%s", s.fallback != 0 ? "on" : "off"); return;
    case kind::stats: snprintf(buf, size, "%s", stats_text(s.fallback)); return;
    case kind::number: snprintf(buf, size, "%llu", static_cast<unsigned long long>(s.fallback)); return;
    case kind::range: snprintf(buf, size, "unset"); return;
  }
}

void warn_value(option o, const char* value, const char* expected) noexcept {
  const spec& s = spec_of(o);
  if (g_warned[static_cast<std::size_t>(o)].exchange(true, std::memory_order_relaxed)) return;
  char def[32];
  default_text(s, def, sizeof def);
  char line[320];
  int n = snprintf(line, sizeof line, "dropalloc: warning: %s=%.60s is not %s; using the default (%s)\n", s.name,
                   value, expected, def);
  say_line(line, sizeof line, n);
}

// The variable's value, or nullptr when unset or empty (both mean "default").
const char* value_of(option o) noexcept {
  check_names();
  const char* v = getenv(spec_of(o).name);
  return v != nullptr && v[0] != '\0' ? v : nullptr;
}

}  // namespace

const char* option_name(option o) noexcept { return spec_of(o).name; }

bool parse_bool(const char* s, bool* out) noexcept {
  for (const char* yes : {"1", "true", "yes", "on"}) {
    if (strcasecmp(s, yes) == 0) {
      *out = true;
      return true;
    }
  }
  for (const char* no : {"0", "false", "no", "off"}) {
    if (strcasecmp(s, no) == 0) {
      *out = false;
      return true;
    }
  }
  return false;
}

bool parse_number(const char* s, std::uint64_t max, std::uint64_t* out) noexcept {
  if (*s == '\0') return false;
  std::uint64_t v = 0;
  for (; *s != '\0'; ++s) {
    if (*s < '0' || *s > '9') return false;
    std::uint64_t digit = static_cast<std::uint64_t>(*s - '0');
    if (v > (max - digit) / 10) return false;
    v = v * 10 + digit;
  }
  *out = v;
  return true;
}

bool parse_size(const char* s, const char* end, std::size_t* out) noexcept {
  if (s == end || *s < '0' || *s > '9') return false;
  std::size_t v = 0;
  for (; s != end && *s >= '0' && *s <= '9'; ++s) {
    if (v > (SIZE_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<std::size_t>(*s - '0');
  }
  int shift = 0;
  if (s != end) {
    switch (*s++) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: return false;
    }
  }
  if (s != end || v > (SIZE_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

std::size_t edit_distance(const char* a, const char* b) noexcept {
  // Two rows of the Levenshtein table; names are short, so fixed arrays do.
  constexpr std::size_t kMax = 63;
  std::size_t la = strnlen(a, kMax), lb = strnlen(b, kMax);
  std::size_t prev[kMax + 1], cur[kMax + 1];
  for (std::size_t j = 0; j <= lb; ++j) prev[j] = j;
  for (std::size_t i = 1; i <= la; ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= lb; ++j) {
      std::size_t replace = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      std::size_t erase = prev[j] + 1, insert = cur[j - 1] + 1;
      cur[j] = replace < erase ? (replace < insert ? replace : insert) : (erase < insert ? erase : insert);
    }
    memcpy(prev, cur, (lb + 1) * sizeof(std::size_t));
  }
  return prev[lb];
}

bool option_flag(option o) noexcept {
  const spec& s = spec_of(o);
  const char* v = value_of(o);
  bool b = s.fallback != 0;
  if (v != nullptr && !parse_bool(v, &b)) {
    warn_value(o, v, "a boolean (1/0/true/false/yes/no/on/off)");
    b = s.fallback != 0;
  }
  return b;
}

stats_level option_stats() noexcept {
  const char* v = value_of(option::stats);
  if (v == nullptr) return static_cast<stats_level>(spec_of(option::stats).fallback);
  bool b = false;
  if (parse_bool(v, &b)) return b ? stats_level::on : stats_level::off;
  if (strcasecmp(v, "classes") == 0) return stats_level::classes;
  warn_value(option::stats, v, "a boolean (1/0/true/false/yes/no/on/off) or 'classes'");
  return static_cast<stats_level>(spec_of(option::stats).fallback);
}

std::uint64_t option_number(option o) noexcept {
  const spec& s = spec_of(o);
  const char* v = value_of(o);
  std::uint64_t n = s.fallback;
  if (v != nullptr && !parse_number(v, s.max, &n)) {
    char expected[64];
    snprintf(expected, sizeof expected, "a whole number from 0 to %llu", static_cast<unsigned long long>(s.max));
    warn_value(o, v, expected);
    n = s.fallback;
  }
  return n;
}

bool option_range(std::size_t* lo, std::size_t* hi) noexcept {
  const char* v = value_of(option::droppable_range);
  if (v == nullptr) return false;
  const char* dash = strchr(v, '-');
  std::size_t a = 0, b = 0;
  if (dash == nullptr || !parse_size(v, dash, &a) || !parse_size(dash + 1, dash + strlen(dash), &b) || a > b) {
    warn_value(option::droppable_range, v, "a size range such as 1024-65536 (k/M/G suffixes allowed)");
    return false;
  }
  *lo = a;
  *hi = b;
  return true;
}

void check_names() noexcept {
  // environ is not set yet in the earliest mallocs of a preloaded library:
  // try again on a later read then.
  if (environ == nullptr || g_names_checked.exchange(true, std::memory_order_relaxed)) return;
  constexpr char kPrefix[] = "DROPALLOC_";
  constexpr char kTestPrefix[] = "DROPALLOC_TEST_";
  for (char** e = environ; *e != nullptr; ++e) {
    const char* entry = *e;
    if (strncmp(entry, kPrefix, sizeof kPrefix - 1) != 0) continue;
    const char* eq = strchr(entry, '=');
    std::size_t len = eq != nullptr ? static_cast<std::size_t>(eq - entry) : strlen(entry);
    char name[64];
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, entry, len);
    name[len] = '\0';
    const spec* closest = nullptr;
    std::size_t best = SIZE_MAX;
    bool known = false;
    for (const spec& s : kSpecs) {
      if (strcmp(s.name, name) == 0) known = true;
      std::size_t d = edit_distance(s.name, name);
      if (d < best) {
        best = d;
        closest = &s;
      }
    }
    if (known || strncmp(name, kTestPrefix, sizeof kTestPrefix - 1) == 0) continue;
    char line[256];
    int n;
    // Up to a third of the name past the prefix may differ: a typo, not a
    // different word.
    if (closest != nullptr && best <= (len - (sizeof kPrefix - 1) + 2) / 3) {
      n = snprintf(line, sizeof line, "dropalloc: warning: %s is not a dropalloc option (did you mean %s?); ignored\n",
                   name, closest->name);
    } else {
      n = snprintf(line, sizeof line,
                   "dropalloc: warning: %s is not a dropalloc option (README.md lists them); ignored\n", name);
    }
    say_line(line, sizeof line, n);
  }
}

void print_options() noexcept {
  if (g_listed.exchange(true, std::memory_order_relaxed)) return;
  // One line, so that verbose output stays a line or two per process (a
  // program that starts many others prints it for each).
  char line[512];
  std::size_t used = static_cast<std::size_t>(snprintf(line, sizeof line, "dropalloc: options:"));
  for (std::size_t i = 0; i < kOptionCount; ++i) {
    const spec& s = kSpecs[i];
    auto o = static_cast<option>(i);
    if (!s.listed && value_of(o) == nullptr) continue;
    char value[64];
    switch (s.k) {
      case kind::flag: snprintf(value, sizeof value, "%s", option_flag(o) ? "on" : "off"); break;
      case kind::stats: snprintf(value, sizeof value, "%s", stats_text(static_cast<std::uint64_t>(option_stats()))); break;
      case kind::number:
        snprintf(value, sizeof value, "%llu", static_cast<unsigned long long>(option_number(o)));
        break;
      case kind::range: {
        std::size_t lo = 0, hi = 0;
        if (option_range(&lo, &hi)) {
          snprintf(value, sizeof value, "%zu-%zu", lo, hi);
        } else {
          snprintf(value, sizeof value, "unset");
        }
        break;
      }
    }
    if (used < sizeof line) used += static_cast<std::size_t>(snprintf(line + used, sizeof line - used, " %s=%s", s.name, value));
  }
  if (used < sizeof line) used += static_cast<std::size_t>(snprintf(line + used, sizeof line - used, "\n"));
  say_line(line, sizeof line, static_cast<int>(used));
}

}  // namespace dropalloc::os
