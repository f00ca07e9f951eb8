// The cache under real kernel drops: a child memory cgroup (made under this
// test's own cgroup) with a 64 MiB limit, and four times that in cached
// values. Every value served must be what its builder produced, and nobody
// may be OOM-killed. Where no cgroup is writable, the test says why and skips.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <memory_resource>
#include <string>
#include <string_view>

#include "allocator/dropalloc.h"
#include "allocator/os/cgroup.h"
#include "tests/cgroup_child.h"

namespace {

constexpr std::uint64_t kLimit = 64ull << 20;

std::string value_for(std::uint64_t key) {
  std::uint64_t x = key * 0x9e3779b97f4a7c15ull + 1;
  std::size_t n = 1024 + x % (63 * 1024);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (std::size_t b = 0; b < 8 && i + b < n; ++b) s[i + b] = static_cast<char>(x >> (8 * b));
  }
  return s;
}

using row_t = std::pmr::vector<std::pmr::string>;

struct outcome {
  std::uint64_t keys = 0, bytes = 0, served = 0, wrong = 0, hits = 0, builds = 0, drops = 0;
};

outcome fill_and_read() {
  outcome r;
  dropalloc::cache<std::uint64_t> values;
  dropalloc::cache<std::uint64_t, row_t> rows;
  auto row_build = [](std::uint64_t k) {
    return [k](std::pmr::memory_resource* mr) {
      row_t v(mr);
      for (int i = 0; i < 16; ++i) v.emplace_back(value_for(k * 16 + static_cast<std::uint64_t>(i)).substr(0, 200));
      return v;
    };
  };
  auto row_ok = [](std::uint64_t k) {
    return [k](const row_t& v) {
      if (v.size() != 16) return false;
      for (int i = 0; i < 16; ++i) {
        if (std::string_view(v[static_cast<std::size_t>(i)]) !=
            std::string_view(value_for(k * 16 + static_cast<std::uint64_t>(i))).substr(0, 200)) {
          return false;
        }
      }
      return true;
    };
  };
  // Fill with 4x the limit, then read everything back twice.
  while (r.bytes < 4 * kLimit) {
    std::uint64_t k = r.keys++;
    r.bytes += values.get_or_build(k, [k] { return value_for(k); }, [](std::string_view v) { return v.size(); });
    if (k % 8 == 0) rows.get_or_build(k, row_build(k), row_ok(k));
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint64_t k = 0; k < r.keys; ++k) {
      bool ok = values.get_or_build(k, [k] { return value_for(k); },
                                    [k](std::string_view v) { return v == value_for(k); });
      if (k % 8 == 0 && !rows.get_or_build(k, row_build(k), row_ok(k))) ok = false;
      ++r.served;
      if (!ok) ++r.wrong;
    }
  }
  auto a = values.stats(), b = rows.stats();
  r.hits = a.hits + b.hits;
  r.builds = a.builds + b.builds;
  r.drops = a.drops_detected + b.drops_detected;
  return r;
}

}  // namespace

TEST_CASE("a cache four times the cgroup limit serves only right values and kills nobody") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Their shadow memory (and ASan's quarantine of freed builder output) is
  // ordinary memory charged to the cgroup, several times what the values use:
  // an OOM kill there would say nothing about the cache.
  MESSAGE("SKIPPED: under ASan/TSan the sanitizer's own memory would exceed the cgroup limit");
  return;
#endif
  auto run = dropalloc::testing::run_in_child_cgroup<outcome>("dropalloc-cache-test", kLimit, fill_and_read);
  if (!dropalloc::testing::child_ran_cleanly(run)) return;
  const outcome& r = run.result;
  const auto& state = run.state;
  MESSAGE("cgroup v" << run.cgroup_version << ", limit " << (kLimit >> 20) << " MiB: " << r.keys << " keys, "
                     << (r.bytes >> 20) << " MiB of values; served " << r.served << ", wrong " << r.wrong
                     << ", hits " << r.hits << ", builds " << r.builds << ", drops detected " << r.drops
                     << ", OOM kills " << state.oom_kills);
  CHECK(r.wrong == 0);
  CHECK(state.oom_kills == 0);
  CHECK(r.drops > 0);  // 4x the limit cannot all stay resident
}
