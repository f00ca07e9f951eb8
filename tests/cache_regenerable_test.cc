// Regenerable objects: built in a private arena, visited under the safe read
// protocol, abandoned and rebuilt when any page of them is dropped.
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

std::uintptr_t page_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{4095}; }

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

TEST_CASE("dropping any single page of the object or its nested allocations forces a rebuild") {
  droppable_resource res;
  int builds = 0;
  regenerable<words_t> r(res, [&](std::pmr::memory_resource* mr) {
    ++builds;
    return build_words(mr, 2, 300);
  });
  // Collect every page the object touches: its element array and string buffers.
  auto pages = r.visit([](const words_t& v) {
    std::vector<std::uintptr_t> out{page_of(&v), page_of(v.data())};
    for (const auto& s : v) out.push_back(page_of(s.data()));
    return out;
  });
  int expected_builds = 1;
  for (std::size_t i = 0; i < pages.size(); i += 7) {
    REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(pages[i]), 1) == 0);
    CHECK_FALSE(r.intact());
    CHECK(r.visit([](const words_t& v) { return words_ok(v, 2, 300); }));
    ++expected_builds;
    CHECK(builds == expected_builds);
    pages = r.visit([](const words_t& v) {
      std::vector<std::uintptr_t> out{page_of(&v), page_of(v.data())};
      for (const auto& s : v) out.push_back(page_of(s.data()));
      return out;
    });
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

// A pmr-aware type whose copy into the arena runs a hook: the one moment
// between writing droppable memory and sealing it that a test can reach.
struct hooked {
  using allocator_type = std::pmr::polymorphic_allocator<>;
  static inline std::function<void(const words_t&)> on_copy;
  words_t words;
  explicit hooked(allocator_type a = {}) : words(a) {}
  hooked(const hooked& o, allocator_type a) : words(o.words, a) {
    if (on_copy) on_copy(words);
  }
  hooked(hooked&& o) noexcept = default;
};

TEST_CASE("a page lost before sealing is caught: canary pages and big allocations alike") {
  droppable_resource res;
  for (int where = 0; where < 2; ++where) {
    CAPTURE(where);
    int copies = 0;
    hooked::on_copy = [&](const words_t& w) {
      if (copies++ != 0) return;
      // The whole page goes before seal() reads it: no witness could see that.
      if (where == 0) res.drop_for_testing(const_cast<char*>(w[150].data()), 1);  // a bumped page
      if (where == 1) res.drop_for_testing(const_cast<std::pmr::string*>(w.data()) + 100, 1);  // 6 KiB array
    };
    regenerable<hooked> r(res, [](std::pmr::memory_resource* mr) {
      hooked h(mr);
      h.words = build_words(mr, 3, 200);
      return h;
    });
    CHECK(r.visit([](const hooked& h) { return words_ok(h.words, 3, 200); }));
    CHECK(copies == 2);
    CHECK(r.stats().drops == 1);
  }
  hooked::on_copy = nullptr;
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
  regenerable<words_t> r(
      res,
      [&](std::pmr::memory_resource* mr) {
        ++builds;
        return build_words(mr, 5, 50);
      },
      opts);
  // The visitor itself loses the object every time (as if memory were scarce).
  CHECK_THROWS_AS(r.visit([&](const words_t& v) {
    res.drop_all_for_testing();
    return v.size();
  }),
                  dropalloc::regenerate_error);
  CHECK(builds == 3);
  CHECK(r.visit([](const words_t& v) { return words_ok(v, 5, 50); }));
}

TEST_CASE("the object ends up wholly in the arena even if the builder ignores the resource") {
  droppable_resource res;
  regenerable<words_t> r(res, [](std::pmr::memory_resource*) {
    words_t v;  // default resource: ordinary memory
    for (int i = 0; i < 100; ++i) v.emplace_back(word(6, i));
    return v;
  });
  CHECK(r.visit([&](const words_t& v) { return words_ok(v, 6, 100) && v.get_allocator().resource() != nullptr; }));
  CHECK(res.stats().blocks_live > 0);
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
  regenerable<words_t> r(res, [&](std::pmr::memory_resource* mr) { return build_words(mr, seed, 20); });
  auto warm = res.stats();
  (void)warm;
  std::uint64_t peak_live = 0, peak_mapped = 0;
  int wrong = 0;
  for (int i = 0; i < kCycles; ++i) {
    seed = i;
    auto where = r.visit([&](const words_t& v) {
      if (!words_ok(v, i, 20)) ++wrong;
      return page_of(v[static_cast<std::size_t>(i % 20)].data());
    });
    // Alternate the ways an object gets lost: one page, everything, reset.
    if (i % 3 == 0) {
      res.drop_for_testing(reinterpret_cast<void*>(where), 1);
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
  // One object at a time: a handful of chunks, a handful of arenas.
  CHECK(peak_live <= 8);
  CHECK(peak_mapped <= (64ull << 20));
  r.reset();
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("byte values: copied in, verified, rebuilt when dropped") {
  droppable_resource res;
  dropalloc::regenerable_bytes r(res);
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
  auto addr = r.visit_with(build, [](std::string_view v) { return reinterpret_cast<std::uintptr_t>(v.data()); });
  res.drop_for_testing(reinterpret_cast<void*>(addr + 8192), 1);
  CHECK_FALSE(r.intact());
  CHECK(r.get(build) == first);
  CHECK(builds == 2);
  // Empty values are values too.
  dropalloc::regenerable_bytes empty(res);
  CHECK(empty.get([] { return std::string(); }).empty());
  CHECK(empty.intact());
}
