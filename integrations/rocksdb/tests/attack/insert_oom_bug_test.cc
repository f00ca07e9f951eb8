// Insert is not exception-safe. Its index insertion
//   s.lru.push_front(std::move(e));
//   s.index.emplace(...);          // may throw std::bad_alloc
//   s.bytes += n;
// (secondary_cache.cc, Insert) leaves, when the emplace throws, an entry in
// the LRU list that the index does not know and whose bytes were never
// added. Evicting it later subtracts its size: the shard's byte count wraps
// below zero (to about 2^64), and from then on every insert into the shard
// evicts everything (s.bytes > limit is always true). The bad_alloc also
// escapes Insert into RocksDB.
//
// Ordinary operator new is made to fail on the k-th call after a point, for
// k = 1, 2, ..., so every allocation Insert makes is failed once.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

// The resource is private; its statistics (blocks_live) show the leak. What
// secondary_cache.h includes is included first, unchanged.
#include <chrono>
#include <iosfwd>
#include <list>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <rocksdb/secondary_cache.h>

#include "allocator/cache/pressure.h"
#include "allocator/pmr/droppable_resource.h"
#include "integrations/rocksdb/uri_options.h"
#define private public
#include "integrations/rocksdb/secondary_cache.h"
#undef private
#include "integrations/rocksdb/tests/string_item.h"

namespace {
std::atomic<long> g_countdown{-1};  // -1: never fail
}  // namespace

void* operator new(std::size_t n) {
  long c = g_countdown.load(std::memory_order_relaxed);
  if (c >= 0) {
    if (c == 0) {
      g_countdown.store(-1);
      throw std::bad_alloc();
    }
    g_countdown.store(c - 1);
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {
using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;
}  // namespace

TEST_CASE("a bad_alloc inside Insert never leaves the byte count wrong") {
  constexpr std::size_t kN = 5000;
  const std::string key = "a key longer than the small-string buffer";
  bool threw_somewhere = false;
  for (long k = 0; k < 40; ++k) {
    CAPTURE(k);
    secondary_cache_options o;
    o.budget = budget_mode::fixed;
    o.capacity = 1 << 20;
    o.shards = 1;
    secondary_cache c(o);
    std::string warm = value_for("warm", kN);
    REQUIRE(c.Insert("warm up the scratch buffer", &warm, &kHelper).ok());
    std::string v = value_for(key, kN);
    bool threw = false;
    g_countdown.store(k);
    try {
      (void)c.Insert(key, &v, &kHelper);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    g_countdown.store(-1);
    threw_somewhere |= threw;
    auto st = c.stats();
    CHECK_MESSAGE(st.bytes == st.entries * kN, "after a failed allocation: entries ", st.entries, ", bytes ",
                  st.bytes, std::string(threw ? " (Insert threw bad_alloc)" : ""));
    // Then: a small block, and evict everything. The count must come back
    // to 0, not wrap, and the cache must still store blocks.
    std::string small = value_for("small", 10);
    REQUIRE(c.Insert("small", &small, &kHelper).ok());
    REQUIRE(c.SetCapacity(1).ok());
    st = c.stats();
    CHECK_MESSAGE(st.bytes == 0, "after evicting everything: entries ", st.entries, ", bytes ", st.bytes);
    REQUIRE(c.SetCapacity(1 << 20).ok());
    REQUIRE(c.Insert("small", &small, &kHelper).ok());
    bool in = false;
    auto h = c.Lookup("small", create_string(), true, false, in);
    if (h) delete static_cast<std::string*>(h->Value());
    CHECK_MESSAGE(h != nullptr, "a 10-byte block in an empty 1 MiB cache is not kept; bytes ", c.stats().bytes);
    CHECK_FALSE(threw);  // Insert should swallow it (not storing a block is always allowed)
  }
  MESSAGE("some allocation inside Insert threw: ", threw_somewhere);
}

TEST_CASE("a bad_alloc inside Insert never leaks a droppable block") {
  constexpr std::size_t kN = 5000;
  const std::string key = "a key longer than the small-string buffer";
  for (long k = 0; k < 40; ++k) {
    CAPTURE(k);
    secondary_cache_options o;
    o.budget = budget_mode::pressure;  // no per-thread cache: a freed block is not live
    o.capacity = 1 << 20;
    o.shards = 1;
    secondary_cache c(o);
    std::string warm = value_for("warm", kN);
    REQUIRE(c.Insert("warm up the scratch buffer", &warm, &kHelper).ok());
    std::string v = value_for(key, kN);
    g_countdown.store(k);
    try {
      (void)c.Insert(key, &v, &kHelper);
    } catch (const std::bad_alloc&) {
    }
    g_countdown.store(-1);
    c.Erase(key);
    c.Erase("warm up the scratch buffer");
    auto st = c.stats();
    auto rs = c.res_.stats();
    CHECK_MESSAGE(rs.blocks_live == st.entries, "entries ", st.entries, ", droppable blocks live ", rs.blocks_live);
  }
}
