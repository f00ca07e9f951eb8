// pmr_bench: allocate+deallocate cost of small blocks (16-512 B), one process,
// five contenders:
//   dropalloc      dropalloc::droppable_resource (default options)
//   sync_pool      std::pmr::synchronized_pool_resource (default options)
//   unsync_pool    std::pmr::unsynchronized_pool_resource (default options)
//   mimalloc       mi_malloc/mi_free from libmimalloc.so.2, loaded with
//                  dlopen(RTLD_LOCAL) so it does NOT replace the process's malloc
//   glibc          malloc/free
// The three pmr resources are called through a std::pmr::memory_resource*
// (a virtual call, as containers make) with alignment 16. Each benchmark run
// builds its own fresh resource outside the timed loop.
//
// Workloads (sizes precomputed from a fixed-seed PRNG before timing):
//   batch/<c>/live:N  N live blocks of 16-512 B: allocate all, then free all in
//                     allocation order. One iteration = N pairs; one untimed
//                     warm-up round first, so pages are already faulted in.
//   lifo/<c>          allocate then free at once, 16-143 B cycling through a
//                     precomputed array. One iteration = 256 pairs.
// The console's "Time" column is per iteration; the ns_per_pair column (and the
// summary table printed at the end) is wall-clock nanoseconds per
// allocate+deallocate pair. minflt/iter counts minor page faults per iteration;
// the label gives the RSS growth (and dropalloc's own stats) with all N blocks
// live, measured in one extra untimed batch round.
//
//   bazel build -c opt //bench:pmr_bench
//   bazel-bin/bench/pmr_bench --benchmark_min_time=0.2 [--live=N]

#include <dlfcn.h>
#include <sys/resource.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <memory_resource>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

constexpr std::size_t kAlign = 16;
constexpr std::int64_t kDefaultLive = 65536;
constexpr std::size_t kLifoSizes = 4096;  // a power of two
constexpr int kLifoPairsPerIter = 256;

enum class kind { dropalloc, sync_pool, unsync_pool, mimalloc, glibc };

struct contender_info {
  const char* name;
  kind k;
};
constexpr contender_info kContenders[] = {
    {"dropalloc", kind::dropalloc},     {"sync_pool", kind::sync_pool},
    {"unsync_pool", kind::unsync_pool}, {"mimalloc", kind::mimalloc},
    {"glibc", kind::glibc},
};

// Sizes in [lo, hi], uniform, from a fixed seed (rng() % n is the same on every
// standard library, unlike std::uniform_int_distribution).
std::vector<std::uint32_t> make_sizes(std::size_t n, std::uint32_t lo, std::uint32_t hi,
                                      std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> v(n);
  for (auto& s : v) s = lo + static_cast<std::uint32_t>(rng() % (hi - lo + 1));
  return v;
}

double rss_mib() {
  long pages_total = 0, pages_resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  const int got = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  if (got != 2) return -1;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// ---- mimalloc, loaded privately ------------------------------------------------

struct mimalloc_api {
  void* (*malloc)(std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  std::string error;  // non-empty: unusable
};

const mimalloc_api& mimalloc() {
  static const mimalloc_api api = [] {
    mimalloc_api a;
    // RTLD_LOCAL: mimalloc's malloc/free symbols stay out of the global scope,
    // so the process keeps glibc's malloc. Never dlclose'd (mimalloc keeps
    // thread-local state and cannot be unloaded safely).
    void* h = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      a.error = std::string("dlopen(\"libmimalloc.so.2\") failed: ") + (e ? e : "?") +
                " (Debian package libmimalloc2.0 / libmimalloc-dev)";
      return a;
    }
    void* m = dlsym(h, "mi_malloc");
    void* fr = dlsym(h, "mi_free");
    void* in_heap = dlsym(h, "mi_is_in_heap_region");
    if (m == nullptr || fr == nullptr || in_heap == nullptr) {
      a.error = "libmimalloc.so.2 lacks mi_malloc, mi_free or mi_is_in_heap_region";
      return a;
    }
    std::memcpy(&a.malloc, &m, sizeof m);
    std::memcpy(&a.free, &fr, sizeof fr);
    // Sanity check: malloc must still be glibc's, not mimalloc's.
    bool (*is_in_heap)(const void*) = nullptr;
    std::memcpy(&is_in_heap, &in_heap, sizeof in_heap);
    void* probe = std::malloc(64);
    benchmark::DoNotOptimize(probe);
    const bool replaced = is_in_heap(probe);
    std::free(probe);
    if (replaced) {
      a.error = "mimalloc has replaced the process's malloc: results would be wrong";
      a.malloc = nullptr;
      a.free = nullptr;
    }
    return a;
  }();
  return api;
}

// ---- contenders ---------------------------------------------------------------
// Each has error() (nullptr: usable), allocate(n), deallocate(p, n), label().

class pmr_contender {
 public:
  explicit pmr_contender(kind k) {
    switch (k) {
      case kind::dropalloc: {
        auto d = std::make_unique<dropalloc::droppable_resource>();
        drop_ = d.get();
        owned_ = std::move(d);
        break;
      }
      case kind::sync_pool:
        owned_ = std::make_unique<std::pmr::synchronized_pool_resource>();
        break;
      default:
        owned_ = std::make_unique<std::pmr::unsynchronized_pool_resource>();
        break;
    }
    r_ = owned_.get();
    // Hide the dynamic type from the optimiser: calls stay virtual.
    benchmark::DoNotOptimize(r_);
  }
  const char* error() const { return nullptr; }
  void* allocate(std::size_t n) { return r_->allocate(n, kAlign); }
  void deallocate(void* p, std::size_t n) { r_->deallocate(p, n, kAlign); }
  std::string label() const {
    if (drop_ == nullptr) return {};
    const dropalloc::resource_stats s = drop_->stats();
    return fmt(" mapped=%.1fMiB resident=%.1fMiB", static_cast<double>(s.bytes_mapped) / 1048576.0,
               static_cast<double>(s.bytes_resident) / 1048576.0) +
           (s.droppable ? " droppable" : " FALLBACK(private)") +
           (s.misuse_refused != 0
                ? fmt(" MISUSE_REFUSED=%.0f", static_cast<double>(s.misuse_refused))
                : std::string());
  }

 private:
  std::unique_ptr<std::pmr::memory_resource> owned_;
  std::pmr::memory_resource* r_ = nullptr;
  dropalloc::droppable_resource* drop_ = nullptr;
};

class mimalloc_contender {
 public:
  explicit mimalloc_contender(kind) : api_(mimalloc()) {}
  const char* error() const { return api_.error.empty() ? nullptr : api_.error.c_str(); }
  void* allocate(std::size_t n) {
    void* p = api_.malloc(n);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, std::size_t) { api_.free(p); }
  std::string label() const { return {}; }

 private:
  const mimalloc_api& api_;
};

class glibc_contender {
 public:
  explicit glibc_contender(kind) {}
  const char* error() const { return nullptr; }
  void* allocate(std::size_t n) {
    void* p = std::malloc(n);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, std::size_t) { std::free(p); }
  std::string label() const { return {}; }
};

// ---- workloads ----------------------------------------------------------------

template <class C>
void batch_round(C& c, const std::vector<std::uint32_t>& sizes, std::vector<void*>& ptrs) {
  const std::size_t n = sizes.size();
  for (std::size_t i = 0; i < n; ++i) {
    void* p = c.allocate(sizes[i]);
    *static_cast<char*>(p) = static_cast<char>(i);
    benchmark::DoNotOptimize(p);
    ptrs[i] = p;
  }
}

template <class C>
void bm_batch(benchmark::State& state, kind k) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<std::uint32_t> sizes = make_sizes(n, 16, 512, 0x5eed0001);
  std::vector<void*> ptrs(n);
  const double rss0 = rss_mib();
  C c(k);
  if (const char* e = c.error()) {
    state.SkipWithError(e);
    return;
  }
  long faults0 = 0;
  try {
    // One untimed warm-up round: measure the steady state, not first touch
    // (glibc and mimalloc keep memory from earlier runs in this process).
    batch_round(c, sizes, ptrs);
    for (std::size_t i = 0; i < n; ++i) c.deallocate(ptrs[i], sizes[i]);
    faults0 = minor_faults();
    for (auto _ : state) {
      batch_round(c, sizes, ptrs);
      for (std::size_t i = 0; i < n; ++i) c.deallocate(ptrs[i], sizes[i]);
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const long faults = minor_faults() - faults0;
  // One untimed round to see the footprint with all n blocks live.
  batch_round(c, sizes, ptrs);
  const double rss_peak = rss_mib();
  std::string label = fmt("rss+%.1fMiB", rss_peak - rss0) + c.label();
  for (std::size_t i = 0; i < n; ++i) c.deallocate(ptrs[i], sizes[i]);

  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
  state.counters["minflt/iter"] =
      benchmark::Counter(static_cast<double>(faults), benchmark::Counter::kAvgIterations);
  state.SetLabel(label);
}

template <class C>
void bm_lifo(benchmark::State& state, kind k) {
  const std::vector<std::uint32_t> sizes = make_sizes(kLifoSizes, 16, 143, 0x5eed0002);
  C c(k);
  if (const char* e = c.error()) {
    state.SkipWithError(e);
    return;
  }
  const long faults0 = minor_faults();
  std::size_t j = 0;
  try {
    for (auto _ : state) {
      for (int i = 0; i < kLifoPairsPerIter; ++i) {
        const std::size_t s = sizes[j];
        j = (j + 1) & (kLifoSizes - 1);
        void* p = c.allocate(s);
        *static_cast<char*>(p) = static_cast<char>(s);
        benchmark::DoNotOptimize(p);
        c.deallocate(p, s);
      }
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const long faults = minor_faults() - faults0;
  state.SetItemsProcessed(state.iterations() * kLifoPairsPerIter);
  state.counters["minflt/iter"] =
      benchmark::Counter(static_cast<double>(faults), benchmark::Counter::kAvgIterations);
  std::string label = c.label();
  if (!label.empty() && label[0] == ' ') label.erase(0, 1);
  state.SetLabel(label);
}

// ---- reporting ----------------------------------------------------------------

// row ("batch live:65536", "lifo") -> contender -> ns per pair
std::map<std::string, std::map<std::string, double>> g_ns;
std::map<std::string, std::map<std::string, std::string>> g_err;
std::vector<std::string> g_rows;  // in first-seen order

// Adds an ns_per_pair column (1e9 / items_per_second, i.e. wall-clock ns per
// allocate+deallocate pair) to every run and records it for the summary.
class summary_reporter : public benchmark::ConsoleReporter {
 public:
  summary_reporter() : ConsoleReporter(OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> out = runs;
    for (Run& r : out) {
      const std::string& fn = r.run_name.function_name;  // "<workload>/<contender>"
      const auto slash = fn.find('/');
      if (slash == std::string::npos) continue;
      std::string row = fn.substr(0, slash);
      if (!r.run_name.args.empty()) row += " " + r.run_name.args;
      const std::string contender = fn.substr(slash + 1);
      if (g_ns.find(row) == g_ns.end() && g_err.find(row) == g_err.end()) g_rows.push_back(row);
      if (r.error_occurred) {
        g_err[row][contender] = r.error_message;
        continue;
      }
      const bool aggregate = r.run_type == Run::RT_Aggregate;
      if (aggregate && r.aggregate_name != "mean" && r.aggregate_name != "median") continue;
      const auto it = r.counters.find("items_per_second");
      if (it == r.counters.end() || it->second.value <= 0) continue;
      const double ns = 1e9 / it->second.value;
      r.counters["ns_per_pair"] = benchmark::Counter(ns);
      // Summary: the median if repetitions were asked for, else the last run.
      if (!aggregate || r.aggregate_name == "median") {
        if (!aggregate && median_seen_[row + "|" + contender]) continue;
        if (aggregate) median_seen_[row + "|" + contender] = true;
        g_ns[row][contender] = ns;
      }
    }
    ConsoleReporter::ReportRuns(out);
  }

 private:
  std::map<std::string, bool> median_seen_;
};

void print_summary() {
  std::printf("\n## ns per allocate+deallocate pair (wall clock; lower is better)\n\n");
  std::printf("| workload |");
  for (const auto& c : kContenders) std::printf(" %s |", c.name);
  std::printf(" dropalloc / mimalloc | dropalloc / sync_pool |\n|---|");
  for (std::size_t i = 0; i < std::size(kContenders) + 2; ++i) std::printf("---:|");
  std::printf("\n");
  for (const std::string& row : g_rows) {
    const auto& ns = g_ns[row];
    auto get = [&](const char* c) -> double {
      const auto it = ns.find(c);
      return it == ns.end() ? -1 : it->second;
    };
    std::printf("| %s |", row.c_str());
    for (const auto& c : kContenders) {
      const double v = get(c.name);
      if (v >= 0) std::printf(" %.1f |", v);
      else std::printf(" %s |", g_err[row].count(c.name) ? "error" : "–");
    }
    const double d = get("dropalloc");
    for (const char* other : {"mimalloc", "sync_pool"}) {
      const double o = get(other);
      if (d > 0 && o > 0) std::printf(" %.2f |", d / o);
      else std::printf(" – |");
    }
    std::printf("\n");
  }
  std::printf("\nratio > 1: dropalloc is slower. Baselines at their default options.\n");
  for (const auto& [row, errs] : g_err)
    for (const auto& [c, msg] : errs)
      std::printf("error: %s/%s: %s\n", row.c_str(), c.c_str(), msg.c_str());
}

template <class C>
void register_contender(const contender_info& c, const std::vector<std::int64_t>& lives) {
  auto* b = benchmark::RegisterBenchmark((std::string("batch/") + c.name).c_str(), bm_batch<C>, c.k);
  b->ArgName("live")->UseRealTime()->Unit(benchmark::kMicrosecond);
  for (std::int64_t n : lives) b->Arg(n);
}

template <class C>
void register_lifo(const contender_info& c) {
  benchmark::RegisterBenchmark((std::string("lifo/") + c.name).c_str(), bm_lifo<C>, c.k)
      ->UseRealTime();
}

template <class F>
void for_each_contender(F&& f) {
  for (const auto& c : kContenders) f(c);
}

}  // namespace

int main(int argc, char** argv) {
  // Own flag: --live=N (repeatable) replaces the default 65,536 live blocks.
  std::vector<std::int64_t> lives;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--live=", 7) == 0) {
      const long long v = std::atoll(argv[i] + 7);
      if (v <= 0) {
        std::fprintf(stderr, "pmr_bench: bad %s\n", argv[i]);
        return 2;
      }
      lives.push_back(v);
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  if (lives.empty()) lives.push_back(kDefaultLive);

  for_each_contender([&](const contender_info& c) {
    switch (c.k) {
      case kind::mimalloc: register_contender<mimalloc_contender>(c, lives); break;
      case kind::glibc: register_contender<glibc_contender>(c, lives); break;
      default: register_contender<pmr_contender>(c, lives); break;
    }
  });
  for_each_contender([&](const contender_info& c) {
    switch (c.k) {
      case kind::mimalloc: register_lifo<mimalloc_contender>(c); break;
      case kind::glibc: register_lifo<glibc_contender>(c); break;
      default: register_lifo<pmr_contender>(c); break;
    }
  });

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  summary_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_summary();
  std::fflush(stdout);
  benchmark::Shutdown();
  return 0;
}
