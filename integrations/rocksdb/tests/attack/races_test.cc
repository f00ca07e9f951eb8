// Many threads Insert, Lookup, Erase and re-insert (with other bytes of the
// same length) the same few keys while others drop pages (the testing hooks),
// shrink and grow the capacity (to 0 and back where the budget allows). Every
// hit must be exactly one of the values inserted for that key; at the end the
// statistics must agree with a walk of the contents.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"

namespace {

using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;

constexpr int kKeys = 24;
constexpr int kVersions = 4;
constexpr std::size_t kLen = 6000;  // spans two or three pages

std::string key_of(int k) { return "key" + std::to_string(k); }
// Same length for every version, so keep_if_same compares bytes, not sizes.
std::string version_of(int k, int v) {
  std::string s = value_for(key_of(k) + "#" + std::to_string(v), kLen);
  s[kLen - 1] = static_cast<char>(v + 1);  // versions differ in the last byte too
  return s;
}

struct result {
  std::atomic<long> hits{0}, wrong{0}, ops{0};
};

void run(secondary_cache_options o, bool shrink_to_zero, double seconds) {
  secondary_cache c(o);
  std::vector<std::vector<std::string>> versions(kKeys);
  for (int k = 0; k < kKeys; ++k)
    for (int v = 0; v < kVersions; ++v) versions[k].push_back(version_of(k, v));
  result r;
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(t * 7919 + 1);
      while (!stop.load(std::memory_order_relaxed)) {
        int k = rng() % kKeys;
        std::string key = key_of(k);
        unsigned op = rng() % 10;
        if (op < 4) {
          std::string v = versions[k][rng() % kVersions];
          if (!c.Insert(key, &v, &kHelper).ok()) r.wrong++;
        } else if (op < 9) {
          bool in = false;
          auto h = c.Lookup(key, create_string(), true, false, in);
          if (h) {
            std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
            bool ok = false;
            for (auto& v : versions[k]) ok |= *got == v;
            if (!ok) {
              r.wrong++;
              std::fprintf(stderr, "wrong block for %s (%zu bytes)\n", key.c_str(), got->size());
            }
            r.hits++;
          }
        } else {
          c.Erase(key);
        }
        r.ops++;
      }
    });
  }
  ts.emplace_back([&] {  // drops
    std::mt19937 rng(99);
    while (!stop.load(std::memory_order_relaxed)) {
      if (rng() % 8 == 0) c.drop_all_for_testing();
      else c.drop_for_testing(key_of(rng() % kKeys));
      std::this_thread::yield();
    }
  });
  ts.emplace_back([&] {  // capacity
    std::mt19937 rng(5);
    while (!stop.load(std::memory_order_relaxed)) {
      std::size_t cap = (rng() % 5) * kLen * 4;
      if (cap == 0 && !shrink_to_zero) cap = 1;
      rocksdb::Status st = c.SetCapacity(cap);
      if (!st.ok() && !(cap == 0 && o.budget == budget_mode::fixed)) r.wrong++;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  MESSAGE("ops ", r.ops.load(), " hits ", r.hits.load());
  CHECK(r.wrong == 0);
  CHECK(r.hits > 0);
  // Accounting: every key left is served right or is a (lost) miss; the byte
  // count is never negative (it is unsigned: a wrap shows as a huge number).
  auto st = c.stats();
  CHECK(st.entries <= static_cast<std::uint64_t>(kKeys));
  CHECK(st.bytes == st.entries * kLen);
  CHECK(st.hits + st.misses == st.lookups);
}

}  // namespace

TEST_CASE("seal=1, budget=kernel: racing insert/lookup/erase/drop/capacity") {
  secondary_cache_options o;
  run(o, true, 3);
}

TEST_CASE("seal=0, budget=kernel") {
  secondary_cache_options o;
  o.seal = false;
  run(o, true, 3);
}

TEST_CASE("seal=1, budget=fixed, one shard") {
  secondary_cache_options o;
  o.budget = budget_mode::fixed;
  o.capacity = kLen * 8;
  o.shards = 1;
  run(o, false, 3);
}

TEST_CASE("seal=1, budget=pressure (no thread cache), two shards") {
  secondary_cache_options o;
  o.budget = budget_mode::pressure;
  o.shards = 2;
  run(o, true, 3);
}

TEST_CASE("re-insert with bytes differing only in the last byte replaces the block") {
  for (bool seal : {true, false}) {
    CAPTURE(seal);
    secondary_cache_options o;
    o.seal = seal;
    secondary_cache c(o);
    std::string a = version_of(0, 0), b = a;
    b.back() ^= 1;
    REQUIRE(c.Insert("k", &a, &kHelper).ok());
    REQUIRE(c.Insert("k", &b, &kHelper).ok());
    CHECK(c.stats().reinserts_kept == 0);
    bool in = false;
    auto h = c.Lookup("k", create_string(), true, false, in);
    REQUIRE(h);
    std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
    CHECK(*got == b);
  }
}
