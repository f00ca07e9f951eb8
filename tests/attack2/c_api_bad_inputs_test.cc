// Regression: the C API with a valid resource and bad pointers, handles and
// frees: NULL, stack and static memory, interior pointers, another
// resource's blocks, double frees, stale handles, generation 0. Every call
// answers; nothing crashes; the resource keeps working.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <initializer_list>
#include <cstring>

#include "allocator/dropalloc_c.h"

TEST_CASE("C API: bad pointers and handles get answers, not crashes") {
  dropalloc_resource* r = dropalloc_create(0);
  dropalloc_resource* other = dropalloc_create(DROPALLOC_NO_THREAD_CACHE);
  REQUIRE(r != nullptr);
  REQUIRE(other != nullptr);
  CHECK(dropalloc_create(0x80u) == nullptr);

  char stack_bytes[128];
  static char static_bytes[128];
  const void* bad[] = {nullptr, stack_bytes, static_bytes, reinterpret_cast<void*>(std::uintptr_t{1} << 50),
                       reinterpret_cast<void*>(~std::uintptr_t{0} - 7)};
  for (const void* p : bad) {
    CHECK(dropalloc_check(r, p, 0) == DROPALLOC_FOREIGN);
    CHECK(dropalloc_generation(r, p) == 0);
    CHECK(dropalloc_usable_size(r, p) == 0);
    CHECK(dropalloc_seal(r, const_cast<void*>(p)) == DROPALLOC_FOREIGN);
    CHECK(dropalloc_seal_rewritten(r, const_cast<void*>(p)) == DROPALLOC_FOREIGN);
    CHECK(dropalloc_is_intact(r, dropalloc_block{const_cast<void*>(p), 1}) == 0);
  }
  CHECK(dropalloc_drop_for_testing(r, stack_bytes, sizeof stack_bytes) != 0);
  dropalloc_free(r, nullptr);

  for (std::size_t bytes : {std::size_t{24}, std::size_t{5000}, std::size_t{1} << 20}) {
    dropalloc_block b = dropalloc_alloc(r, bytes, 0);
    REQUIRE(b.ptr != nullptr);
    std::memset(b.ptr, 0x5a, bytes);
    CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_UNSEALED);
    CHECK(dropalloc_seal(r, b.ptr) == DROPALLOC_INTACT);
    CHECK(dropalloc_is_intact(r, b) == 1);
    // Another resource does not know it; interior pointers are not blocks.
    CHECK(dropalloc_check(other, b.ptr, b.generation) != DROPALLOC_INTACT);
    CHECK(dropalloc_seal(other, b.ptr) == DROPALLOC_FOREIGN);
    dropalloc_free(other, b.ptr);  // refused
    CHECK(dropalloc_is_intact(r, b) == 1);
    CHECK(dropalloc_check(r, static_cast<char*>(b.ptr) + 8, b.generation) == DROPALLOC_FOREIGN);
    dropalloc_free(r, static_cast<char*>(b.ptr) + 8);  // refused
    CHECK(dropalloc_is_intact(r, b) == 1);
    CHECK(dropalloc_check(r, b.ptr, b.generation + 1) == DROPALLOC_STALE);
    REQUIRE(dropalloc_drop_for_testing(r, b.ptr, bytes) == 0);
    CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_DROPPED);
    CHECK(dropalloc_seal(r, b.ptr) == DROPALLOC_DROPPED);  // stays dropped
    std::memset(b.ptr, 0x5b, bytes);
    CHECK(dropalloc_seal_rewritten(r, b.ptr) == DROPALLOC_INTACT);
    dropalloc_free(r, b.ptr);
    dropalloc_free(r, b.ptr);  // double: refused
    CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_STALE);
    CHECK(dropalloc_seal(r, b.ptr) == DROPALLOC_STALE);
    CHECK(dropalloc_generation(r, b.ptr) == 0);
    CHECK(dropalloc_usable_size(r, b.ptr) == 0);
  }
  dropalloc_stats st;
  REQUIRE(dropalloc_get_stats(r, &st) == 0);
  CHECK(st.misuse_refused >= 6);
  CHECK(dropalloc_get_stats(r, nullptr) == EINVAL);
  for (int s = -1; s < 7; ++s) CHECK(dropalloc_state_name(static_cast<dropalloc_state>(s)) != nullptr);
  dropalloc_trim(r);
  dropalloc_block again = dropalloc_alloc(r, 64, 0);
  REQUIRE(again.ptr != nullptr);
  dropalloc_block bad_align = dropalloc_alloc(r, 64, 3);
  CHECK(bad_align.ptr == nullptr);
  dropalloc_free(r, again.ptr);
  dropalloc_destroy(other);
  dropalloc_destroy(r);
  dropalloc_destroy(nullptr);
}
