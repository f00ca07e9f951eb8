// Drops forced at every step of storing and reading a value: while it is
// copied in (a page torn: zeros, then bytes written after the drop), after it
// is written and before it is sealed, between seal and compare, between
// compare and check, while it is copied out, after it is copied out and
// before it is checked, and while the visitor runs. Whatever the moment, the
// visitor sees exactly what the builder produced, and a loss is counted.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory_resource>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::value_step;

namespace {

constexpr std::size_t kPage = 4096;

using words_t = std::pmr::vector<std::pmr::string>;
using big_t = std::array<std::uint64_t, 3000>;  // 24,000 bytes: six pages

std::string word(int i) { return std::string(static_cast<std::size_t>(1 + (i * 13) % 90), static_cast<char>('a' + i % 26)); }

words_t build_words(std::pmr::memory_resource* mr) {
  words_t v(mr);
  for (int i = 0; i < 300; ++i) v.emplace_back(word(i));
  return v;
}
bool words_ok(const words_t& v) {
  if (v.size() != 300) return false;
  for (int i = 0; i < 300; ++i) {
    if (std::string_view(v[static_cast<std::size_t>(i)]) != word(i)) return false;
  }
  return true;
}
big_t build_big() {
  big_t b;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = i * 0x9e3779b97f4a7c15ull + 1;
  return b;
}
bool big_ok(const big_t& b) { return b == build_big(); }

std::string build_bytes() {
  std::string s(20000, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('A' + i % 53);
  return s;
}

// Drops the page holding byte `at` of the block (the block's own pages only:
// a small block shares its page, and a page is what the kernel drops).
void drop_at(dropalloc::droppable_resource& res, std::byte* block, std::size_t at) {
  REQUIRE(res.drop_for_testing(block + at, 1) == 0);
}

struct moment {
  value_step step;
  std::size_t offset;  // for copying_in/out: drop when this many bytes are done
  const char* name;
};

// Each moment of interest; for the copies, mid-page (the page is then torn:
// its first half dropped and re-faulted by the second half's writes) and at a
// page end.
const moment kMoments[] = {
    {value_step::copying_in, 2048, "copy in, torn first page"},
    {value_step::copying_in, 6144, "copy in, torn second page"},
    {value_step::copying_in, 8192, "copy in, whole page before the rest"},
    {value_step::written, 0, "written, before seal"},
    {value_step::sealed, 0, "sealed, before compare"},
    {value_step::compared, 0, "compared, before check"},
    {value_step::copying_out, 2048, "copy out, mid-page"},
    {value_step::copying_out, 8192, "copy out, after a page"},
    {value_step::copied_out, 0, "copied out, before check"},
};

// A hook that drops, once, the page at the moment's position (for copies, the
// page the last piece ended in; otherwise page 1, or page 0 of a small block).
dropalloc::regenerable_options drop_once(dropalloc::droppable_resource& res, const moment& m, int* fired) {
  dropalloc::regenerable_options o;
  o.on_step = [&res, m, fired](value_step s, std::byte* block, std::size_t n, std::size_t off) {
    if (*fired != 0 || s != m.step) return;
    bool copy = s == value_step::copying_in || s == value_step::copying_out;
    if (copy && off != std::min(m.offset, n)) return;
    ++*fired;
    std::size_t at = copy ? off - 1 : (n > kPage ? kPage : 0);
    drop_at(res, block, at);
  };
  return o;
}

}  // namespace

TEST_CASE("a drop at any step of storing or reading an object value is never served") {
  for (const moment& m : kMoments) {
    CAPTURE(m.name);
    dropalloc::droppable_resource res;
    int fired = 0;
    int builds = 0;
    dropalloc::regenerable<words_t> r(
        res,
        [&](std::pmr::memory_resource* mr) {
          ++builds;
          return build_words(mr);
        },
        drop_once(res, m, &fired));
    CHECK(r.visit([](const words_t& v) { return words_ok(v); }));
    CHECK(fired == 1);
    CHECK(r.stats().drops == 1);
    CHECK(r.intact());
    CHECK(r.visit([](const words_t& v) { return words_ok(v); }));
  }
}

TEST_CASE("a drop at any step: trivially copyable multi-page values and byte values") {
  for (const moment& m : kMoments) {
    CAPTURE(m.name);
    dropalloc::droppable_resource res;
    int fired = 0;
    dropalloc::regenerable<big_t> r(res, [](std::pmr::memory_resource*) { return build_big(); },
                                    drop_once(res, m, &fired));
    CHECK(r.visit([](const big_t& b) { return big_ok(b); }));
    CHECK(fired == 1);
    CHECK(r.stats().drops == 1);

    int fired_b = 0;
    dropalloc::regenerable_bytes rb(res, drop_once(res, m, &fired_b));
    CHECK(rb.get([] { return build_bytes(); }) == build_bytes());
    CHECK(fired_b == 1);
    CHECK(rb.visit_with([] { return build_bytes(); }, [](std::string_view v) { return v == build_bytes(); }));
  }
}

TEST_CASE("an element's page dropped while it is copied in: element 301 of 1024") {
  // What an element type whose copy dropped its own page did to the old
  // copy-into-the-arena path: the sum came out wrong with intact() true.
  using vec = std::pmr::vector<std::uint64_t>;
  dropalloc::droppable_resource res;
  int fired = 0;
  dropalloc::regenerable_options o;
  // The encoding is an 8-byte count, then the elements.
  const std::size_t at = 8 + 301 * sizeof(std::uint64_t);
  o.on_step = [&](value_step s, std::byte* block, std::size_t, std::size_t off) {
    if (s == value_step::copying_in && fired == 0 && off > at) {
      ++fired;
      drop_at(res, block, at);
    }
  };
  dropalloc::regenerable<vec> r(
      res,
      [](std::pmr::memory_resource* mr) {
        vec v(mr);
        for (std::uint64_t i = 1; i <= 1024; ++i) v.push_back(i);
        return v;
      },
      o);
  auto sum = r.visit([](const vec& v) { return std::accumulate(v.begin(), v.end(), std::uint64_t{0}); });
  CHECK(fired == 1);
  CHECK(sum == 1024ull * 1025 / 2);
  CHECK(r.intact());
}

TEST_CASE("drops during the visit do not reach the visitor, which sees a private copy") {
  dropalloc::droppable_resource res;
  dropalloc::regenerable<std::pmr::map<std::pmr::string, std::pmr::vector<int>>> r(
      res, [](std::pmr::memory_resource* mr) {
        std::pmr::map<std::pmr::string, std::pmr::vector<int>> m(mr);
        for (int i = 0; i < 400; ++i) {
          auto& v = m[std::pmr::string("key-" + std::to_string(i))];
          for (int k = 0; k <= i % 50; ++k) v.push_back(i * 1000 + k);
        }
        return m;
      });
  for (int round = 0; round < 20; ++round) {
    // The visitor walks the whole map with everything dropped under it.
    long sum = r.visit([&](const auto& m) {
      res.drop_all_for_testing();
      long s = 0;
      for (const auto& [k, v] : m) {
        for (int x : v) s += x;
      }
      return s;
    });
    long want = 0;
    for (int i = 0; i < 400; ++i) {
      for (int k = 0; k <= i % 50; ++k) want += i * 1000 + k;
    }
    CHECK(sum == want);
    CHECK_FALSE(r.intact());
  }
  CHECK(r.stats().builds == 20);
}

TEST_CASE("a value lost at every read ends in regenerate_error, never a wrong value") {
  dropalloc::droppable_resource res;
  dropalloc::regenerable_options o;
  o.max_builds = 3;
  o.on_step = [&](value_step s, std::byte* block, std::size_t, std::size_t) {
    if (s == value_step::copied_out) drop_at(res, block, 0);
  };
  int builds = 0;
  dropalloc::regenerable<big_t> r(
      res,
      [&](std::pmr::memory_resource*) {
        ++builds;
        return build_big();
      },
      o);
  CHECK_THROWS_AS(r.visit([](const big_t& b) { return b[0]; }), dropalloc::regenerate_error);
  CHECK(builds == 3);
}

TEST_CASE("a copy lost while stored is copied again from the same build") {
  dropalloc::droppable_resource res;
  dropalloc::regenerable_options o;
  int drops = 0;
  o.on_step = [&](value_step s, std::byte* block, std::size_t, std::size_t) {
    if (s == value_step::sealed && drops < 2) {
      ++drops;
      drop_at(res, block, 0);
    }
  };
  int builds = 0;
  dropalloc::regenerable_bytes r(res, o);
  CHECK(r.get([&] {
    ++builds;
    return build_bytes();
  }) == build_bytes());
  CHECK(builds == 1);
  CHECK(drops == 2);
}

// Compile-time: pointer-based types that would need a live object in
// droppable memory are refused; flat ones are accepted.
static_assert(dropalloc::flat_value<big_t>);
static_assert(dropalloc::flat_value<words_t>);
static_assert(dropalloc::flat_value<std::pmr::vector<std::string>>);
static_assert(dropalloc::flat_value<std::pmr::map<std::pmr::string, std::pmr::vector<int>>>);
static_assert(!dropalloc::flat_value<std::list<int>>);
static_assert(!dropalloc::flat_value<const char*>);
static_assert(!dropalloc::flat_value<std::string_view>);
static_assert(!dropalloc::flat_value<std::vector<std::list<int>>>);
