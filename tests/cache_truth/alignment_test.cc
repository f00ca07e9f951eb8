// Alignment: object_arena hands out memory aligned as asked (its chunks are
// only as aligned as their size class), and a regenerable over-aligned value
// is visited at an address aligned for its type.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include "allocator/cache/object_arena.h"
#include "allocator/dropalloc.h"

namespace {

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

}  // namespace

TEST_CASE("object_arena: allocate(100, 128) is 128-aligned every time") {
  dropalloc::droppable_resource res;
  dropalloc::object_arena arena(res, 64);
  int misaligned = 0;
  for (int i = 0; i < 8; ++i) {
    if (!aligned(arena.allocate(100, 128), 128)) ++misaligned;
  }
  MESSAGE("allocate(100, 128): " << misaligned << " of 8 misaligned");
  CHECK(misaligned == 0);
}

TEST_CASE("object_arena: every alignment up to a page, bumped and own chunks, small first chunk") {
  dropalloc::droppable_resource res;
  for (std::size_t first : {64, 72, 200, 512}) {
    dropalloc::object_arena arena(res, first);
    int misaligned = 0;
    for (int round = 0; round < 40; ++round) {
      for (std::size_t a = 1; a <= 4096; a *= 2) {
        std::size_t n = 1 + (round * 37 + a) % 300;
        if (round % 7 == 0) n += 3000;  // own chunks, canary and multi-page paths
        void* p = arena.allocate(n, a);
        if (!aligned(p, a)) ++misaligned;
      }
    }
    CAPTURE(first);
    CHECK(misaligned == 0);
    CHECK(arena.seal());
  }
}

namespace {
struct alignas(16) vec4 {
  float v[4];
};
struct alignas(64) line {
  std::uint64_t w[8];
};
struct state {
  vec4 a[3];
  line l;
};
}  // namespace

TEST_CASE("regenerable over-aligned values are visited aligned") {
  dropalloc::droppable_resource res;
  // Allocate odd sizes first so blocks do not start on friendly boundaries.
  for (int i = 0; i < 10; ++i) (void)res.allocate(24, 8);
  for (int round = 0; round < 20; ++round) {
    dropalloc::regenerable<state> r(res, [&](std::pmr::memory_resource*) {
      state s{};
      for (int i = 0; i < 3; ++i) s.a[i] = vec4{{1.0f * i, 2, 3, static_cast<float>(round)}};
      for (int i = 0; i < 8; ++i) s.l.w[i] = static_cast<std::uint64_t>(i + round);
      return s;
    });
    bool ok = r.visit([&](const state& s) {
      // Aligned SSE loads through a vec4 copy: the compiler may use movaps.
      vec4 x = s.a[2];
      return aligned(&s, alignof(state)) && aligned(&s.a[1], 16) && x.v[3] == static_cast<float>(round) &&
             s.l.w[7] == static_cast<std::uint64_t>(7 + round);
    });
    CHECK(ok);
    res.drop_all_for_testing();
    CHECK(r.visit([&](const state& s) { return aligned(&s, 64) && s.l.w[0] == static_cast<std::uint64_t>(round); }));
  }
}
