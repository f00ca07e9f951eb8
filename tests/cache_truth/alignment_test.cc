// Alignment: a regenerable over-aligned value is visited at an address
// aligned for its type.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include "allocator/dropalloc.h"

namespace {

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

}  // namespace

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
