// cache::evict_locked() walks each cost list from its cold end and stops the
// list at the entry just built ("only the entry just built is left in this
// list"). That is true only if nothing was used since that entry was put at
// the front: a value read by another thread (here: by the builder itself)
// while the new value was being built sits in front of it, is never reached,
// and the eviction moves on to the next list. So an expensive value is
// evicted while a normal one stays, and with no other list the cache stays
// over its budget (or a keeper's pressure cap) until the next build.
// Fixed: eviction passes over the entry just built and goes on down the list.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/cache.h"
#include "allocator/dropalloc.h"

TEST_CASE("a value read during another's build is passed over; an expensive value goes instead") {
  dropalloc::cache_options o;
  o.byte_budget = 10000;
  dropalloc::cache<int> c(o);
  int x_builds = 0;
  auto x = [&] {
    ++x_builds;
    return std::string(4000, 'x');
  };
  c.get(1, x, dropalloc::rebuild_cost::expensive);
  c.get(2, [] { return std::string(4000, 'j'); });
  // Key 3's builder reads key 2 (any thread could): 2 is now in front of 3.
  c.get(3, [&] {
    c.get(2, [] { return std::string(4000, 'j'); });
    return std::string(4000, 'k');
  });
  const std::uint64_t live = c.bytes_live();
  c.get(1, x, dropalloc::rebuild_cost::expensive);
  MESSAGE("budget 10000; after building key 3: bytes_live " << live << "; the expensive key 1 was built "
                                                            << x_builds << " times");
  CHECK(x_builds == 1);  // the normal value 2 should have gone before the expensive one
}

TEST_CASE("with one cost list, the cache stays over its budget after the build") {
  dropalloc::cache_options o;
  o.byte_budget = 10000;
  dropalloc::cache<int> c(o);
  c.get(2, [] { return std::string(8000, 'j'); });
  c.get(3, [&] {
    c.get(2, [] { return std::string(8000, 'j'); });
    return std::string(8000, 'k');
  });
  MESSAGE("budget 10000, bytes_live after the build " << c.bytes_live());
  CHECK(c.bytes_live() <= 10000);
}
