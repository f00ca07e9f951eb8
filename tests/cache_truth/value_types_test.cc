// Value types the cache layer accepts: nothing they own may outlive a
// rebuild. An inner string with its own (non-pmr) allocator used to be copied
// into droppable memory whose destructor never ran, leaking its buffer on
// every rebuild.
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

std::atomic<long> g_live_bytes{0};

// std::allocator that counts the bytes it holds.
template <class T>
struct counting_allocator {
  using value_type = T;
  counting_allocator() = default;
  template <class U>
  counting_allocator(const counting_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    g_live_bytes.fetch_add(static_cast<long>(n * sizeof(T)));
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    g_live_bytes.fetch_sub(static_cast<long>(n * sizeof(T)));
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>&) const noexcept {
    return true;
  }
};

using counted_string = std::basic_string<char, std::char_traits<char>, counting_allocator<char>>;
using strings = std::pmr::vector<counted_string>;

}  // namespace

TEST_CASE("rebuilding a vector of non-pmr strings leaks nothing") {
  dropalloc::droppable_resource res;
  {
    dropalloc::regenerable<strings> r(res, [](std::pmr::memory_resource* mr) {
      strings v(mr);
      for (int i = 0; i < 50; ++i) v.emplace_back(100, static_cast<char>('a' + i % 26));  // heap buffers
      return v;
    });
    for (int i = 0; i < 200; ++i) {
      CHECK(r.visit([](const strings& v) { return v.size() == 50 && v[49] == counted_string(100, 'x'); }));
      if (i % 2 == 0) {
        r.reset();
      } else {
        res.drop_all_for_testing();
      }
    }
    MESSAGE("counting allocator bytes live after 200 rebuilds: " << g_live_bytes.load());
    CHECK(g_live_bytes.load() == 0);
  }
  CHECK(g_live_bytes.load() == 0);
}
