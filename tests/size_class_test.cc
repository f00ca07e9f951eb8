// Exhaustive checks of the size-class table and class_for().
#include <doctest/doctest.h>

#include "allocator/core/size_class.h"

using namespace dropalloc::core;

TEST_CASE("class_for returns the smallest fitting class for every size and alignment") {
  for (std::size_t align = 1; align <= kMaxCacheableAlign; align *= 2) {
    for (std::size_t size = 0; size <= kMaxClassSize + 1; ++size) {
      std::size_t cls = class_for(size, align);
      if (size > kMaxClassSize) {
        REQUIRE(cls == kNoClass);
        continue;
      }
      REQUIRE(cls < kNumClasses);
      std::size_t csize = kSizeClasses[cls].size;
      REQUIRE(csize >= (size == 0 ? 1 : size));
      REQUIRE(class_alignment(cls) % align == 0);
      // No smaller class would do.
      for (std::size_t smaller = 0; smaller < cls; ++smaller) {
        bool fits = kSizeClasses[smaller].size >= size && class_alignment(smaller) % align == 0;
        REQUIRE_FALSE(fits);
      }
      if (size > 4096 && size % 128 == 1) size += 126;  // classes above 4 KiB: one size per 128 B suffices
    }
  }
  CHECK(class_for(1, kMaxCacheableAlign * 2) == kNoClass);
}

TEST_CASE("stated waste bounds hold for every class") {
  std::size_t prev = 0;
  for (std::size_t cls = 0; cls < kNumClasses; ++cls) {
    std::size_t s = kSizeClasses[cls].size;
    std::size_t worst = s - (prev + 1);
    CAPTURE(s);
    if (s <= 64) {
      CHECK(worst <= 7);
    } else {
      CHECK(worst * 8 <= s);  // <= 12.5%
    }
    prev = s;
  }
}

TEST_CASE("every class is 8-byte granular and its alignment divides it") {
  for (std::size_t cls = 0; cls < kNumClasses; ++cls) {
    std::size_t s = kSizeClasses[cls].size;
    CAPTURE(s);
    CHECK(s % 8 == 0);
    CHECK(s % class_alignment(cls) == 0);
    CHECK(is_small_class(cls) == (s <= kMaxSmallSize));
  }
}

TEST_CASE("the fast paths' lookups agree with class_for for every size they serve") {
  // Every alignment, power of two or not, up to twice the largest they serve.
  for (std::size_t align = 0; align <= 32; ++align) {
    const bool served_align = align != 0 && (align & (align - 1)) == 0 && align <= 16;
    for (std::size_t size = 0; size <= kMaxCachedSize + 2 * kPage; ++size) {
      const bool served = served_align && size >= 1 && size <= kMaxCachedSize;
      CAPTURE(size);
      CAPTURE(align);
      REQUIRE(small_class_for(size, align) == (served ? class_for(size, align) : kNoClass));
    }
  }
  for (std::size_t size = 0; size <= kMaxCachedSize + 2 * kPage; ++size) {
    CAPTURE(size);
    REQUIRE(malloc_class_for(size) == small_class_for(size, size <= 8 ? 8 : 16));
  }
  for (std::size_t size : {kMaxClassSize, kMaxClassSize + 1, std::size_t{1} << 40, ~std::size_t{0}}) {
    CHECK(small_class_for(size, 8) == kNoClass);
    CHECK(malloc_class_for(size) == kNoClass);
  }
}
