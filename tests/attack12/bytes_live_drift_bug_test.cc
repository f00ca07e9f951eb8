// cache::account() reads the slot's size (e->slot.bytes()) before it takes
// the cache's lock, then stores it as the entry's size under the lock. Two
// threads that rebuild the same lost value one after the other can store
// their sizes in the opposite order: the entry then records the size of a
// value it no longer holds, and bytes_live() (what headroom_keeper sheds a
// fraction of, and what the budget and the keeper's cap compare against)
// drifts from what the values hold.
//
// Sequence: builders alternate between a 16-byte and a 64 KiB value; every
// value is dropped right after it is checked, so each access rebuilds. Once
// all threads stop, every key is read once more (a hit, or a build that is
// accounted alone), and bytes_live() is compared with the sum of the sizes
// the entries hold.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

TEST_CASE("bytes_live() matches what the entries hold after racing rebuilds of different sizes") {
  constexpr int kKeys = 1;
  dropalloc::cache_options opts;
  dropalloc::cache<int>* self = nullptr;
  opts.value.on_step = [&](dropalloc::value_step s, std::byte* block, std::size_t n, std::size_t) {
    if (s == dropalloc::value_step::compared && self != nullptr) self->resource().drop_for_testing(block, n);
  };
  dropalloc::cache<int> c(opts);
  std::atomic<std::uint64_t> flip{0}, wrong{0};
  auto build = [&](int k) {
    std::size_t n = flip.fetch_add(1) % 2 == 0 ? 16 : 65536;
    return std::string(n, static_cast<char>('a' + k));
  };
  auto ok = [](int k, std::string_view v) {
    if (v.size() != 16 && v.size() != 65536) return false;
    for (char ch : v)
      if (ch != static_cast<char>('a' + k)) return false;
    return true;
  };
  self = &c;
  // Holds the cache's lock often, so that an accessor that has read its
  // slot's size waits before storing it while another rebuilds and stores.
  std::atomic<bool> stop{false};
  std::thread hammer([&] {
    while (!stop.load(std::memory_order_relaxed)) (void)c.bytes_live();
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 4000; ++i) {
        int k = (i + t) % kKeys;
        try {
          if (!c.get_or_build(k, [&, k] { return build(k); }, [&, k](std::string_view v) { return ok(k, v); }))
            wrong.fetch_add(1);
        } catch (const dropalloc::regenerate_error&) {
        }
      }
    });
  for (auto& t : ts) t.join();
  stop = true;
  hammer.join();
  self = nullptr;  // no more drops
  std::uint64_t held = 0;
  for (int k = 0; k < kKeys; ++k)
    held += c.get_or_build(k, [&, k] { return build(k); }, [](std::string_view v) { return v.size(); });
  // Sizes as the resource rounds them.
  std::uint64_t rounded = 0;
  {
    dropalloc::cache<int> probe;
    for (int k = 0; k < kKeys; ++k) {
      std::size_t n = c.get_or_build(k, [&, k] { return build(k); }, [](std::string_view v) { return v.size(); });
      probe.get(k, [n] { return std::string(n, 'x'); });
    }
    rounded = probe.bytes_live();
  }
  MESSAGE("bytes_live " << c.bytes_live() << ", the entries hold " << rounded << " (unrounded " << held << ")");
  CHECK(wrong.load() == 0);
  CHECK(c.bytes_live() == rounded);
}
