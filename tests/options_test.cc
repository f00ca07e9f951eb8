// The DROPALLOC_* option parsers (allocator/os/options.h). What a process
// prints for each value is tested in tests/shim/options_test.sh.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "allocator/os/options.h"

using namespace dropalloc::os;

TEST_CASE("booleans: exactly 1/0, true/false, yes/no, on/off, in any case") {
  struct row {
    const char* text;
    bool want;
  } accepted[] = {{"1", true},     {"true", true},   {"TRUE", true}, {"yes", true}, {"Yes", true}, {"on", true},
                  {"ON", true},    {"0", false},     {"false", false}, {"False", false}, {"no", false}, {"NO", false},
                  {"off", false},  {"oFF", false}};
  for (const row& r : accepted) {
    CAPTURE(r.text);
    bool b = !r.want;
    CHECK(parse_bool(r.text, &b));
    CHECK(b == r.want);
  }
  for (const char* bad : {"", "2", "maybe", "y", "n", "t", "f", "yes ", " 1", "01", "enable", "truee", "-1"}) {
    CAPTURE(bad);
    bool b = true;
    CHECK_FALSE(parse_bool(bad, &b));
  }
}

TEST_CASE("numbers parse fully, up to the maximum") {
  std::uint64_t n = 7;
  CHECK(parse_number("0", 10, &n));
  CHECK(n == 0);
  CHECK(parse_number("3600000", 3600000, &n));
  CHECK(n == 3600000);
  CHECK(parse_number("18446744073709551615", UINT64_MAX, &n));
  CHECK(n == UINT64_MAX);
  n = 7;
  for (const char* bad : {"", "3600001", "1k", "12x", " 5", "5 ", "-1", "+1", "1.5", "0x10", "99999999999999999999"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_number(bad, 3600000, &n));
  }
  CHECK(n == 7);  // untouched on failure
}

TEST_CASE("sizes: digits with an optional k/M/G suffix") {
  auto parse = [](const char* s, std::size_t* out) { return parse_size(s, s + std::strlen(s), out); };
  std::size_t v = 0;
  CHECK(parse("1024", &v));
  CHECK(v == 1024);
  CHECK(parse("64k", &v));
  CHECK(v == 64 * 1024);
  CHECK(parse("1M", &v));
  CHECK(v == 1024 * 1024);
  CHECK(parse("2g", &v));
  CHECK(v == std::size_t{2} << 30);
  for (const char* bad : {"", "k", "1kb", "1T", "-1", "1 k"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse(bad, &v));
  }
}

TEST_CASE("edit distance, for suggesting the option meant") {
  CHECK(edit_distance("DROPALLOC_STATS", "DROPALLOC_STATS") == 0);
  CHECK(edit_distance("DROPALLOC_STATS", "DROPALLOC_STAT") == 1);
  CHECK(edit_distance("DROPALLOC_VERBOSE", "DROPALLOC_VERBSOE") == 2);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("every option has its DROPALLOC_ name") {
  for (std::size_t i = 0; i < kOptionCount; ++i) {
    const char* name = option_name(static_cast<option>(i));
    CAPTURE(name);
    CHECK(std::strncmp(name, "DROPALLOC_", 10) == 0);
  }
}
