// A defect a review found; this test failed while it existed and guards the fix.
//
// flat_codec<std::basic_string<C>> encodes the string's length in
// characters (put_size(s.size())) followed by size() * sizeof(C) bytes, but
// decode() reads that length back as a byte count: it resizes to
// length / sizeof(C) characters and copies only `length` bytes. For any
// character type wider than one byte (char16_t, char32_t, wchar_t, the
// std::pmr variants) the visitor gets a truncated string, and every value
// encoded after it inside a container is read from the wrong offset: garbage
// or a std::length_error instead of the stored value.
//
// No page is dropped here: the bytes were stored, sealed, compared and
// checked intact, and the decode of those verified bytes is what goes wrong.
//
// Contract relied on: regenerable.h, "An access hands the visitor a private
// copy of the value, known to be exactly what was stored"; std::basic_string
// of a trivially copyable character type is an accepted value type.
#include <doctest/doctest.h>

#include <map>
#include <memory_resource>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"

TEST_CASE("regenerable<std::u32string> hands the visitor the value it stored [KNOWN BUG]") {
  dropalloc::droppable_resource res;
  const std::u32string stored = U"droppable";
  dropalloc::regenerable<std::u32string> value(res, [&](std::pmr::memory_resource*) { return stored; });
  std::u32string seen = value.visit([](const std::u32string& v) { return v; });
  MESSAGE("stored " << stored.size() << " chars, visitor saw " << seen.size() << " chars");
  CHECK(seen == stored);
}

TEST_CASE("regenerable<std::pmr::u16string> hands the visitor the value it stored [KNOWN BUG]") {
  dropalloc::droppable_resource res;
  dropalloc::regenerable<std::pmr::u16string> value(
      res, [](std::pmr::memory_resource* mr) { return std::pmr::u16string(u"wide characters", mr); });
  std::u16string seen = value.visit([](const std::pmr::u16string& v) { return std::u16string(v.begin(), v.end()); });
  CHECK(seen == u"wide characters");
}

TEST_CASE("a cache of std::map<int, std::wstring> serves the values it stored [KNOWN BUG]") {
  dropalloc::cache<int, std::map<int, std::wstring>> c;
  const std::map<int, std::wstring> stored = {{1, L"one"}, {2, L"two"}, {3, L"three"}};
  bool threw = false;
  std::map<int, std::wstring> seen;
  try {
    seen = c.get_or_build(
        7, [&](std::pmr::memory_resource*) { return stored; },
        [](const std::map<int, std::wstring>& m) { return m; });
  } catch (const std::exception& e) {
    threw = true;
    MESSAGE("visit threw: " << std::string(e.what()));
  }
  CHECK_FALSE(threw);
  CHECK(seen == stored);
}
