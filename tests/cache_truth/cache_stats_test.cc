// Cache statistics: a builder that throws is a failed build and a miss, never
// a hit; a visitor that throws is not a build failure.
#include <doctest/doctest.h>

#include <memory_resource>
#include <stdexcept>
#include <string>
#include <string_view>

#include "allocator/dropalloc.h"

TEST_CASE("throwing builders count as build failures and misses, not hits") {
  dropalloc::cache<int> c;
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(c.get(7, []() -> std::string { throw std::runtime_error("decoder failed"); }),
                    std::runtime_error);
  }
  auto st = c.stats();
  MESSAGE("after 3 throwing builds: hits=" << st.hits << " misses=" << st.misses << " builds=" << st.builds
                                           << " build_failures=" << st.build_failures);
  CHECK(st.hits == 0);
  CHECK(st.misses == 3);
  CHECK(st.builds == 0);
  CHECK(st.build_failures == 3);
  CHECK(st.entries == 0);

  CHECK(c.get(7, [] { return std::string("ok"); }) == "ok");
  CHECK(c.get(7, [] { return std::string("never built"); }) == "ok");
  st = c.stats();
  CHECK(st.hits == 1);
  CHECK(st.misses == 4);
  CHECK(st.builds == 1);
  CHECK(st.build_failures == 3);
}

TEST_CASE("object values: a throwing builder is a failure; a throwing visitor is not") {
  using row = std::pmr::vector<std::pmr::string>;
  dropalloc::cache<int, row> c;
  auto fail = [](std::pmr::memory_resource*) -> row { throw std::runtime_error("no"); };
  auto good = [](std::pmr::memory_resource* mr) {
    row r(mr);
    r.emplace_back("x");
    return r;
  };
  CHECK_THROWS_AS(c.get_or_build(1, fail, [](const row& r) { return r.size(); }), std::runtime_error);
  CHECK(c.stats().build_failures == 1);
  CHECK(c.stats().hits == 0);
  CHECK(c.get_or_build(1, good, [](const row& r) { return r.size(); }) == 1);
  CHECK_THROWS_AS(c.get_or_build(1, good, [](const row&) -> int { throw std::logic_error("visitor"); }),
                  std::logic_error);
  auto st = c.stats();
  CHECK(st.build_failures == 1);
  CHECK(st.builds == 1);
  CHECK(st.hits == 1);  // the visitor's access found the value: no builder ran
  CHECK(st.misses == 2);
}
