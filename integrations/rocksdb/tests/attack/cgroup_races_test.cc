// Real drops and budget=pressure shedding (evict + trim) racing lookups:
// four threads insert, re-insert, look up and erase 4-16 KiB blocks of a key
// space three times the 64 MiB limit of a child memory cgroup. Nothing served
// may be wrong, the child must not be OOM-killed or hang, and the byte count
// must agree with the entries at the end.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"
#include "tests/cgroup_child.h"

namespace {

using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;

constexpr std::uint64_t kLimit = 64ull << 20;
constexpr int kKeys = 12000;  // ~120 MiB of blocks

std::size_t len_of(int k) { return 4096 + (k % 4) * 4096; }

struct outcome {
  std::uint64_t hits, wrong, drops, evictions, inserts, bytes_ok;
};

outcome hammer(secondary_cache_options o) {
  secondary_cache c(o);
  std::atomic<std::uint64_t> hits{0}, wrong{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      for (int i = 0; i < 12000; ++i) {
        int k = (t < 2) ? (i * 2 + t) % kKeys : static_cast<int>(rng() % kKeys);
        std::string key = "block" + std::to_string(k);
        unsigned op = rng() % 16;
        if (t < 2 || op < 3) {
          std::string v = value_for(key, len_of(k));
          if (!c.Insert(key, &v, &kHelper).ok()) wrong++;
        }
        if (op == 15) {
          c.Erase(key);
          continue;
        }
        bool in = false;
        auto h = c.Lookup(key, create_string(), true, false, in);
        if (!h) continue;
        std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
        hits++;
        if (*got != value_for(key, len_of(k))) wrong++;
      }
    });
  }
  for (auto& t : ts) t.join();
  outcome r{};
  auto st = c.stats();
  r.hits = hits;
  r.wrong = wrong;
  r.drops = st.drops_detected;
  r.evictions = st.evictions;
  r.inserts = st.inserts;
  // A lookup of every key (frees lost blocks); then the byte count must lie
  // within what the entries can hold.
  for (int k = 0; k < kKeys; ++k) {
    bool in = false;
    auto h = c.Lookup("block" + std::to_string(k), create_string(), true, false, in);
    if (h) delete static_cast<std::string*>(h->Value());
  }
  auto end = c.stats();
  r.bytes_ok = end.bytes <= end.entries * 16384 && end.bytes >= end.entries * 4096;
  return r;
}

void check(const char* name, secondary_cache_options o) {
  auto run = dropalloc::testing::run_in_child_cgroup<outcome>(name, kLimit, [o] { return hammer(o); });
  if (!dropalloc::testing::child_ran_cleanly(run)) return;
  const outcome& r = run.result;
  MESSAGE(std::string(name) << ": " << r.inserts << " inserts, " << r.hits << " hits, " << r.evictions << " evicted, "
               << r.drops << " drops detected");
  CHECK(r.wrong == 0);
  CHECK(r.bytes_ok);
  CHECK(r.hits > 0);
}

}  // namespace

TEST_CASE("pressure, sealed") {
  secondary_cache_options o;
  o.budget = budget_mode::pressure;
  check("att11-pressure-seal", o);
}

TEST_CASE("pressure, unsealed (checksums)") {
  secondary_cache_options o;
  o.budget = budget_mode::pressure;
  o.seal = false;
  check("att11-pressure-noseal", o);
}

TEST_CASE("kernel, unsealed (checksums)") {
  secondary_cache_options o;
  o.seal = false;
  check("att11-kernel-noseal", o);
}

TEST_CASE("kernel, sealed, one shard") {
  secondary_cache_options o;
  o.shards = 1;
  check("att11-kernel-seal", o);
}
