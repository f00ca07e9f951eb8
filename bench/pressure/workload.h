// The cache workload shared by every contender of the cgroup pressure
// benchmark (bench/pressure.py): keys, values, the Zipf key stream, checksums,
// latency percentiles and the report lines the driver reads.
//
// Plain C++ and malloc only, so that the LRU baselines measure whichever
// malloc the driver preloads.
//
// Protocol with the driver (one line each, stdout, line-buffered):
//   READY pid=<p> alloc=<name> malloc_from=<lib> mapped=<libs> backing=<b> keys=<n> key_bytes=<b>
//   then waits for one byte on stdin (the driver moves the process into the
//   child cgroup first, so nothing big is allocated outside it), then
//   S t=<monotonic s> ops= hits= p50_ns= p99_ns= cached= live= drops= wrong=   every interval
//   END ops= hits= misses= p50_ns= p99_ns= wrong= drops= build_ns=              at the end
// The S lines come from a sampling thread, never from a serving thread, so
// the cost of sampling (reading smaps, say) is charged to no contender's gets.
#pragma once

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bench/macro/workload.h"

namespace pressure {

inline double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the driver's time.monotonic() uses the same clock
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() { return mix(s += 0x9e3779b97f4a7c15ULL); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// Value sizes: uniform in [value_min, value_max] (default 1-64 KiB), a
// function of the key only. Set once from the options before any key is used.
inline std::size_t value_min = 1024, value_max = 64 * 1024;
inline std::size_t value_size(std::uint32_t key) {
  return value_min + mix(key * 0x2545f4914f6cdd1dULL + 7) % (value_max - value_min + 1);
}

// The value of a key: deterministic CPU work standing for decompression.
// `rounds` mixing steps per 8-byte word set the cost (calibrated by the
// driver to a cost per KiB, the same for every contender of a run).
inline std::string build_value(std::uint32_t key, int rounds) {
  std::size_t n = value_size(key);
  std::string s(n, '\0');
  std::uint64_t x = mix(key + 0x51ed2701ULL);
  for (std::size_t i = 0; i < n; i += 8) {
    for (int r = 0; r < rounds; ++r) x = mix(x + static_cast<std::uint64_t>(r));
    x |= 1;  // no all-zero word: a dropped page can never look like data
    std::memcpy(s.data() + i, &x, std::min<std::size_t>(8, n - i));
  }
  return s;
}

// What a consumer computes from a served value; never 0.
inline std::uint64_t checksum(const char* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ n;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ULL;
  return h | 1;
}
inline std::uint64_t checksum(std::string_view v) { return checksum(v.data(), v.size()); }

// Keys 0..n-1 whose values total at least `total` bytes.
inline std::uint32_t key_count(std::uint64_t total, std::uint64_t* bytes) {
  std::uint64_t sum = 0;
  std::uint32_t k = 0;
  while (sum < total) sum += value_size(k++);
  *bytes = sum;
  return k;
}

// Zipf(s) over ranks 1..n by inverse CDF; rank r maps to key r-1 (sizes are
// hashed from the key, so popularity and size are independent). s = 0 is the
// uniform distribution.
class zipf {
 public:
  zipf(std::uint32_t n, double s, std::uint64_t seed) : cdf_(n), rng_(seed) {
    double sum = 0;
    for (std::uint32_t i = 0; i < n; ++i) cdf_[i] = (sum += 1.0 / std::pow(i + 1.0, s));
    for (auto& c : cdf_) c /= sum;
  }
  std::uint32_t next() {
    double u = rng_.unit();
    auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return static_cast<std::uint32_t>(std::min<std::size_t>(it - cdf_.begin(), cdf_.size() - 1));
  }

 private:
  std::vector<double> cdf_;
  rng rng_;
};

// Latency histogram: 16 sub-buckets per power of two of nanoseconds (≤ 6% error).
class histogram {
 public:
  void add(std::uint64_t ns) {
    ++count_;
    max_ = std::max(max_, ns);
    ++b_[bucket(ns)];
  }
  std::uint64_t percentile(double p) const {
    if (count_ == 0) return 0;
    std::uint64_t want = static_cast<std::uint64_t>(p * static_cast<double>(count_ - 1)) + 1, seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += b_[i];
      if (seen >= want) return lower(i);
    }
    return lower(kBuckets - 1);
  }
  void clear() {
    std::fill(std::begin(b_), std::end(b_), 0);
    count_ = max_ = 0;
  }
  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t max() const noexcept { return max_; }
  void merge(const histogram& o) {
    max_ = std::max(max_, o.max_);
    for (std::size_t i = 0; i < kBuckets; ++i) b_[i] += o.b_[i];
    count_ += o.count_;
  }

 private:
  static constexpr std::size_t kBuckets = 64 * 16;
  static std::size_t bucket(std::uint64_t ns) {
    if (ns < 16) return static_cast<std::size_t>(ns);
    int e = 63 - __builtin_clzll(ns);  // ≥ 4
    return static_cast<std::size_t>(e - 3) * 16 + static_cast<std::size_t>((ns >> (e - 4)) & 15);
  }
  static std::uint64_t lower(std::size_t i) {
    if (i < 16) return i;
    std::size_t e = i / 16 + 3;
    return (1ull << e) | (static_cast<std::uint64_t>(i % 16) << (e - 4));
  }
  std::uint64_t b_[kBuckets] = {};
  std::uint64_t count_ = 0, max_ = 0;
};

struct options {
  std::string kind;              // contender kind (binary-specific)
  int threads = 1;               // serving threads
  int adapt_ms = 0;              // adaptive budget: poll period (0: fixed budget)
  double seconds = 20;           // serving time after the go byte
  std::uint64_t limit = 256ull << 20;
  std::uint64_t budget = 0;      // bytes (0: none)
  double zipf_s = 0.99;
  int rounds = 8;
  double interval = 0.1;
  std::uint64_t seed = 42;
  int calibrate_ns_per_kib = 0;  // --calibrate=N: print the rounds for N ns/KiB and exit
};

inline std::uint64_t parse_u64(const char* s) { return std::strtoull(s, nullptr, 10); }

inline options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&](std::string_view name) -> const char* {
      return a.substr(0, name.size()) == name ? argv[i] + name.size() : nullptr;
    };
    if (const char* v = val("--kind=")) o.kind = v;
    else if (const char* v = val("--seconds=")) o.seconds = std::atof(v);
    else if (const char* v = val("--limit=")) o.limit = parse_u64(v);
    else if (const char* v = val("--budget=")) o.budget = parse_u64(v);
    else if (const char* v = val("--zipf=")) o.zipf_s = std::atof(v);
    else if (const char* v = val("--rounds=")) o.rounds = std::atoi(v);
    else if (const char* v = val("--interval=")) o.interval = std::atof(v);
    else if (const char* v = val("--seed=")) o.seed = parse_u64(v);
    else if (const char* v = val("--calibrate=")) o.calibrate_ns_per_kib = std::atoi(v);
    else if (const char* v = val("--threads=")) o.threads = std::max(1, std::atoi(v));
    else if (const char* v = val("--adapt-ms=")) o.adapt_ms = std::atoi(v);
    else if (const char* v = val("--value-min=")) value_min = parse_u64(v);
    else if (const char* v = val("--value-max=")) value_max = parse_u64(v);
    else {
      std::fprintf(stderr, "%s: unknown argument %s\n", argv[0], argv[i]);
      std::exit(2);
    }
  }
  if (value_min < 16 || value_max < value_min) {
    std::fprintf(stderr, "%s: need 16 <= --value-min <= --value-max\n", argv[0]);
    std::exit(2);
  }
  return o;
}

// Rounds of build_value that cost about ns_per_kib per KiB here, now.
inline int calibrate(int ns_per_kib) {
  auto cost = [](int rounds) {
    std::uint64_t best = UINT64_MAX, bytes = 0;
    for (int rep = 0; rep < 5; ++rep) {
      std::uint64_t t0 = now_ns(), n = 0;
      for (std::uint32_t k = 0; k < 64; ++k) n += build_value(k, rounds).size();
      best = std::min(best, now_ns() - t0);
      bytes = n;
    }
    return static_cast<double>(best) / (static_cast<double>(bytes) / 1024.0);
  };
  double base = cost(0), per_round = (cost(16) - base) / 16;
  if (per_round <= 0) return 1;
  return std::max(0, static_cast<int>(std::lround((ns_per_kib - base) / per_round)));
}

// Which library provides malloc and which allocators are mapped: the same
// detection as the macro workloads (an LD_PRELOAD that did not take shows up
// as libc).
using bench::allocator_name;
using bench::malloc_provider;
using bench::mapped_allocators;

inline long rss_kib() { return bench::status_kib("VmRSS:"); }

inline void wait_for_go() {
  char go;
  if (read(0, &go, 1) != 1) std::_Exit(3);  // the driver went away: do nothing
}

// What a contender's cache must offer the serving loop.
//   std::uint64_t get(key, bool* hit): the checksum of the value served
//     (called from o.threads threads at once);
//   sample(&cached, &live, &drops): bytes resident, bytes held, drops so far
//     (called from the sampling thread, concurrently with get).
// `expected` holds each key's checksum, recorded from the first build (in
// ordinary memory); a served value whose checksum differs is wrong data.
using checksums = std::vector<std::atomic<std::uint64_t>>;

// Records the checksum of a key's first build; returns it.
inline std::uint64_t remember(checksums& expected, std::uint32_t key, std::uint64_t sum) {
  std::uint64_t zero = 0;
  expected[key].compare_exchange_strong(zero, sum, std::memory_order_relaxed);
  return sum;
}

// One serving thread's counts. The sampler takes the window under the mutex,
// which only the two of them ever take.
struct thread_counts {
  std::mutex mu;
  histogram all, window;
  std::uint64_t ops = 0, hits = 0, wrong = 0, w_ops = 0, w_hits = 0, w_wrong = 0;
};

template <class Cache>
int serve(Cache& c, const options& o, std::uint32_t keys, checksums& expected) {
  std::vector<thread_counts> counts(static_cast<std::size_t>(o.threads));
  std::atomic<bool> stop{false};
  double start = now_s(), end = start + o.seconds;
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      zipf z(keys, o.zipf_s, o.seed + static_cast<std::uint64_t>(t) * 7919);
      thread_counts& n = counts[static_cast<std::size_t>(t)];
      while (!stop.load(std::memory_order_relaxed)) {
        std::uint32_t k = z.next();
        bool hit = false;
        std::uint64_t t0 = now_ns();
        std::uint64_t sum = c.get(k, &hit);
        std::uint64_t dt = now_ns() - t0;
        bool bad = sum != expected[k].load(std::memory_order_relaxed);
        std::lock_guard lock(n.mu);
        n.all.add(dt);
        n.window.add(dt);
        ++n.ops, ++n.w_ops;
        if (hit) ++n.hits, ++n.w_hits;
        if (bad) ++n.wrong, ++n.w_wrong;
      }
    });
  }
  std::uint64_t drops = 0;
  for (double next = start + o.interval;; next += o.interval) {
    double wait = std::min(next, end) - now_s();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    double t = now_s();
    bool last = t >= end;
    if (last) stop = true;
    histogram window;
    std::uint64_t w_ops = 0, w_hits = 0, w_wrong = 0;
    for (auto& n : counts) {
      std::lock_guard lock(n.mu);
      window.merge(n.window);
      n.window.clear();
      w_ops += n.w_ops, w_hits += n.w_hits, w_wrong += n.w_wrong;
      n.w_ops = n.w_hits = n.w_wrong = 0;
    }
    std::uint64_t cached = 0, live = 0;
    c.sample(&cached, &live, &drops);
    std::printf("S t=%.4f ops=%llu hits=%llu p50_ns=%llu p99_ns=%llu cached=%llu live=%llu drops=%llu wrong=%llu\n",
                t, (unsigned long long)w_ops, (unsigned long long)w_hits,
                (unsigned long long)window.percentile(0.5), (unsigned long long)window.percentile(0.99),
                (unsigned long long)cached, (unsigned long long)live, (unsigned long long)drops,
                (unsigned long long)w_wrong);
    if (last) break;
    if (next < t) next = t;
  }
  for (auto& th : threads) th.join();
  histogram all;
  std::uint64_t ops = 0, hits = 0, wrong = 0;
  for (auto& n : counts) {
    all.merge(n.all);
    ops += n.ops, hits += n.hits, wrong += n.wrong;
  }
  std::printf("END ops=%llu hits=%llu misses=%llu p50_ns=%llu p99_ns=%llu wrong=%llu drops=%llu\n",
              (unsigned long long)ops, (unsigned long long)hits, (unsigned long long)(ops - hits),
              (unsigned long long)all.percentile(0.5), (unsigned long long)all.percentile(0.99),
              (unsigned long long)wrong, (unsigned long long)drops);
  return 0;
}

inline void line_buffered() { std::setvbuf(stdout, nullptr, _IOLBF, 0); }

}  // namespace pressure
