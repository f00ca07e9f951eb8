// Regenerable values: stored as flat bytes in one droppable block, read by
// copying out and checking, rebuilt when any page of them is dropped.
#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;
using dropalloc::regenerable;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kCycles = 10000;
#else
constexpr int kCycles = 100000;
#endif

using words_t = std::pmr::vector<std::pmr::string>;
using index_t = std::pmr::map<std::pmr::string, std::pmr::vector<int>>;

std::string word(int seed, int i) {
  // Mixed lengths: some fit the small-string buffer, some need a heap block.
  return std::string(static_cast<std::size_t>(1 + (seed * 7 + i * 13) % 90),
                     static_cast<char>('a' + (seed + i) % 26));
}

words_t build_words(std::pmr::memory_resource* mr, int seed, int n) {
  words_t v(mr);
  for (int i = 0; i < n; ++i) v.emplace_back(word(seed, i));
  return v;
}

bool words_ok(const words_t& v, int seed, int n) {
  if (v.size() != static_cast<std::size_t>(n)) return false;
  for (int i = 0; i < n; ++i) {
    if (std::string_view(v[static_cast<std::size_t>(i)]) != word(seed, i)) return false;
  }
  return true;
}

index_t build_index(std::pmr::memory_resource* mr, int n) {
  index_t m(mr);
  for (int i = 0; i < n; ++i) {
    auto& v = m[std::pmr::string("key-" + std::to_string(i))];
    for (int k = 0; k <= i % 50; ++k) v.push_back(i * 1000 + k);
  }
  return m;
}

// Options whose test hook remembers where the value's block is once stored.
struct block_spy {
  std::byte* block = nullptr;
  std::size_t size = 0;
  dropalloc::regenerable_options options(int max_builds = 4) {
    dropalloc::regenerable_options o;
    o.max_builds = max_builds;
    o.on_step = [this](dropalloc::value_step s, std::byte* b, std::size_t n, std::size_t) {
      if (s == dropalloc::value_step::compared) block = b, size = n;
    };
    return o;
  }
};

}  // namespace

TEST_CASE("a regenerable object is built once and served while intact") {
  droppable_resource res;
  int builds = 0;
  regenerable<words_t> r(res, [&](std::pmr::memory_resource* mr) {
    ++builds;
    return build_words(mr, 1, 100);
  });
  for (int i = 0; i < 10; ++i) CHECK(r.visit([](const words_t& v) { return words_ok(v, 1, 100); }));
  CHECK(builds == 1);
  CHECK(r.intact());
  CHECK(r.bytes() > 0);
  // Everything it allocated came from the resource, in a few chunks.
  CHECK(res.stats().blocks_live >= 1);
}

TEST_CASE("dropping any single page of the stored value forces a rebuild") {
  droppable_resource res;
  int builds = 0;
  block_spy spy;
  regenerable<words_t> r(
      res,
      [&](std::pmr::memory_resource* mr) {
        ++builds;
        return build_words(mr, 2, 300);
      },
      spy.options());
  CHECK(r.visit([](const words_t& v) { return words_ok(v, 2, 300); }));
  REQUIRE(spy.size > 3 * 4096);  // several pages
  int expected_builds = 1;
  for (std::size_t page = 0; page < spy.size; page += 4096) {
    REQUIRE(res.drop_for_testing(spy.block + page, 1) == 0);
    CHECK_FALSE(r.intact());
    CHECK(r.visit([](const words_t& v) { return words_ok(v, 2, 300); }));
    ++expected_builds;
    CHECK(builds == expected_builds);
  }
  CHECK(r.stats().drops == static_cast<std::uint64_t>(expected_builds - 1));
}

TEST_CASE("nested pmr maps survive whole-resource drops by being rebuilt") {
  droppable_resource res;
  regenerable<index_t> r(res, [](std::pmr::memory_resource* mr) { return build_index(mr, 400); });
  auto check = [](const index_t& m) {
    if (m.size() != 400) return false;
    for (int i = 0; i < 400; i += 37) {
      auto it = m.find(std::pmr::string("key-" + std::to_string(i)));
      if (it == m.end() || it->second.size() != static_cast<std::size_t>(i % 50 + 1) ||
          it->second.front() != i * 1000) {
        return false;
      }
    }
    return true;
  };
  for (int round = 0; round < 20; ++round) {
    CHECK(r.visit(check));
    res.drop_all_for_testing();
  }
  CHECK(r.stats().builds == 20);
  CHECK(r.stats().drops == 19);
}

TEST_CASE("a page lost before the compare is caught, and the same bytes are copied again") {
  droppable_resource res;
  for (auto when : {dropalloc::value_step::written, dropalloc::value_step::sealed}) {
    dropalloc::regenerable_options opts;
    int dropped = 0;
    opts.on_step = [&](dropalloc::value_step s, std::byte* block, std::size_t, std::size_t) {
      // The whole page goes before the seal, or right after it.
      if (s == when && dropped++ == 0) res.drop_for_testing(block + 4096, 1);
    };
    int builds = 0;
    regenerable<words_t> r(
        res,
        [&](std::pmr::memory_resource* mr) {
          ++builds;
          return build_words(mr, 3, 200);
        },
        opts);
    CHECK(r.visit([](const words_t& v) { return words_ok(v, 3, 200); }));
    CHECK(builds == 1);
    CHECK(r.stats().drops == 1);
  }
}

TEST_CASE("a throwing builder leaves no object and no memory behind") {
  droppable_resource res;
  bool fail = true;
  regenerable<words_t> r(res, [&](std::pmr::memory_resource* mr) {
    words_t v = build_words(mr, 4, 500);
    if (fail) throw std::runtime_error("decoder failed");
    return v;
  });
  CHECK_THROWS_WITH_AS(r.visit([](const words_t& v) { return v.size(); }), "decoder failed",
                       std::runtime_error);
  CHECK_FALSE(r.intact());
  CHECK(r.bytes() == 0);
  CHECK(res.stats().blocks_live == 0);
  fail = false;
  CHECK(r.visit([](const words_t& v) { return words_ok(v, 4, 500); }));
}

TEST_CASE("a value lost on every build ends in a clear error, not a loop") {
  droppable_resource res;
  dropalloc::regenerable_options opts;
  opts.max_builds = 3;
  int builds = 0;
  // Every read loses the value between the copy and the check.
  bool lose = true;
  opts.on_step = [&](dropalloc::value_step s, std::byte* block, std::size_t, std::size_t) {
    if (lose && s == dropalloc::value_step::copied_out) res.drop_for_testing(block, 1);
  };
  regenerable<words_t> r(
      res,
      [&](std::pmr::memory_resource* mr) {
        ++builds;
        return build_words(mr, 5, 50);
      },
      opts);
  CHECK_THROWS_AS(r.visit([&](const words_t& v) { return v.size(); }), dropalloc::regenerate_error);
  lose = false;
  CHECK(builds == 3);
  CHECK(r.visit([](const words_t& v) { return words_ok(v, 5, 50); }));
}

TEST_CASE("the value is stored in the resource even if the builder ignores the resource it gets") {
  droppable_resource res;
  regenerable<words_t> r(res, [](std::pmr::memory_resource*) {
    words_t v;  // default resource: ordinary memory
    for (int i = 0; i < 100; ++i) v.emplace_back(word(6, i));
    return v;
  });
  CHECK(r.visit([&](const words_t& v) { return words_ok(v, 6, 100) && v.get_allocator().resource() != nullptr; }));
  CHECK(res.stats().blocks_live == 1);
  r.reset();
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("plain types work too, and void visitors") {
  droppable_resource res;
  struct point {
    double x, y;
  };
  regenerable<point> r(res, [](std::pmr::memory_resource*) { return point{1.5, -2.0}; });
  double sum = 0;
  r.visit([&](const point& p) { sum = p.x + p.y; });
  CHECK(sum == -0.5);
}

TEST_CASE("many drop/rebuild cycles leak nothing") {
  droppable_resource res;
  int seed = 0;
  block_spy spy;
  regenerable<words_t> r(res, [&](std::pmr::memory_resource* mr) { return build_words(mr, seed, 20); },
                         spy.options());
  auto warm = res.stats();
  (void)warm;
  std::uint64_t peak_live = 0, peak_mapped = 0;
  int wrong = 0;
  for (int i = 0; i < kCycles; ++i) {
    seed = i;
    r.visit([&](const words_t& v) {
      if (!words_ok(v, i, 20)) ++wrong;
    });
    std::byte* where = spy.block + (i % 2) * (spy.size / 2);
    // Alternate the ways an object gets lost: one page, everything, reset.
    if (i % 3 == 0) {
      res.drop_for_testing(where, 1);
    } else if (i % 3 == 1) {
      r.reset();
    } else {
      res.drop_all_for_testing();
    }
    if (i % 1000 == 0) {
      auto st = res.stats();
      peak_live = std::max(peak_live, st.blocks_live);
      peak_mapped = std::max(peak_mapped, st.bytes_mapped);
    }
  }
  CHECK(wrong == 0);
  CHECK(r.stats().builds == static_cast<std::uint64_t>(kCycles));
  // One value at a time: one block, a handful of arenas.
  CHECK(peak_live <= 8);
  CHECK(peak_mapped <= (64ull << 20));
  r.reset();
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("byte values: copied in, verified, rebuilt when dropped") {
  droppable_resource res;
  block_spy spy;
  dropalloc::regenerable_bytes r(res, spy.options());
  int builds = 0;
  auto build = [&] {
    ++builds;
    std::string s(20000, 'x');
    for (std::size_t i = 0; i < s.size(); i += 97) s[i] = static_cast<char>('a' + i % 26);
    return s;
  };
  std::string first = r.get(build);
  CHECK(first.size() == 20000);
  CHECK(r.get(build) == first);
  CHECK(builds == 1);
  res.drop_for_testing(spy.block + 8192, 1);
  CHECK_FALSE(r.intact());
  CHECK(r.get(build) == first);
  CHECK(builds == 2);
  // Empty values are values too.
  dropalloc::regenerable_bytes empty(res);
  CHECK(empty.get([] { return std::string(); }).empty());
  CHECK(empty.intact());
}
