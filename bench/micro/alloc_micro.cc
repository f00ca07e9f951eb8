// alloc_micro: allocator micro-benchmarks (Google Benchmark), one binary for
// every contender. Benchmarks are named <workload>/<source>, where <source> is
//   malloc       std::malloc/std::free, or for containers
//                std::pmr::new_delete_resource() (operator new -> malloc): the
//                allocator under test is whatever malloc the process has, so
//                bench/compare.py runs these under each LD_PRELOAD contender;
//   droppable    dropalloc::droppable_resource (default options);
//   sync_pool    std::pmr::synchronized_pool_resource (default options);
//   unsync_pool  std::pmr::unsynchronized_pool_resource (default options;
//                single-threaded, so it has no producer/consumer row).
// The pmr sources are called through std::pmr::memory_resource* (a virtual
// call, as containers make) with alignment 16; their upstream is the process's
// malloc. Select one source with --benchmark_filter='/malloc$' etc.
//
// Workloads (all sizes fixed or from fixed seeds):
//   lifo/<n>B      allocate then free at once, n bytes; 64 pairs per iteration
//   batch/<n>B     allocate L blocks of n bytes, then free them in order
//   batch_mixed    the same with 16-512 B mixed sizes (L = 65536)
//   vector_growth  pmr::vector<int64_t>::push_back from empty (reallocations)
//   map            pmr::map<int, int>: insert random keys, erase them all
//   unordered_map  the same with pmr::unordered_map
//   strings        pmr::vector<pmr::string> of 20-200 character strings
//   prodcons       2 threads: one allocates 64 B blocks, the other frees them
// items_per_second counts allocate+free pairs (container rows: elements).
// Sizes are powers of two, exact size classes in glibc, jemalloc, mimalloc and
// dropalloc, so no row measures a class boundary by accident.
// --quick shrinks L and the container sizes (CI smoke).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <memory_resource>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "allocator/dropalloc.h"
#include "bench/macro/workload.h"

namespace {

enum class kind { malloc_, droppable, sync_pool, unsync_pool };
constexpr std::size_t kAlign = 16;
bool g_quick = false;

// One allocation source per benchmark run, built outside the timed loop.
class source {
 public:
  explicit source(kind k) : k_(k) {
    switch (k) {
      case kind::malloc_: r_ = std::pmr::new_delete_resource(); break;
      case kind::droppable: owned_ = std::make_unique<dropalloc::droppable_resource>(); break;
      case kind::sync_pool: owned_ = std::make_unique<std::pmr::synchronized_pool_resource>(); break;
      case kind::unsync_pool: owned_ = std::make_unique<std::pmr::unsynchronized_pool_resource>(); break;
    }
    if (owned_) r_ = owned_.get();
    benchmark::DoNotOptimize(r_);  // keep the calls virtual
  }
  std::pmr::memory_resource* pmr() const { return r_; }
  void* alloc(std::size_t n) {
    if (k_ == kind::malloc_) {
      void* p = std::malloc(n);
      if (p == nullptr) throw std::bad_alloc();
      return p;
    }
    return r_->allocate(n, kAlign);
  }
  void free(void* p, std::size_t n) {
    if (k_ == kind::malloc_) std::free(p);
    else r_->deallocate(p, n, kAlign);
  }

 private:
  kind k_;
  std::unique_ptr<std::pmr::memory_resource> owned_;
  std::pmr::memory_resource* r_ = nullptr;
};

std::vector<std::uint32_t> sizes_between(std::size_t n, std::uint32_t lo, std::uint32_t hi, std::uint64_t seed) {
  bench::rng r(seed);
  std::vector<std::uint32_t> v(n);
  for (auto& s : v) s = static_cast<std::uint32_t>(r.range(lo, hi));
  return v;
}

void bm_lifo(benchmark::State& state, kind k, std::size_t n) {
  source s(k);
  constexpr int kPairs = 64;
  for (auto _ : state) {
    for (int i = 0; i < kPairs; ++i) {
      void* p = s.alloc(n);
      *static_cast<char*>(p) = static_cast<char>(i);
      bench::escape(p);
      s.free(p, n);
    }
  }
  state.SetItemsProcessed(state.iterations() * kPairs);
}

void batch_loop(benchmark::State& state, source& s, const std::vector<std::uint32_t>& sizes) {
  std::vector<void*> ptrs(sizes.size());
  auto round = [&] {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      void* p = s.alloc(sizes[i]);
      *static_cast<char*>(p) = static_cast<char>(i);
      bench::escape(p);
      ptrs[i] = p;
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) s.free(ptrs[i], sizes[i]);
  };
  round();  // untimed warm-up: measure the steady state, not first touch
  for (auto _ : state) round();
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(sizes.size()));
}

void bm_batch(benchmark::State& state, kind k, std::size_t n) {
  source s(k);
  // At most 64 MiB live, so large sizes stay comparable in footprint.
  std::size_t live = g_quick ? 256 : 4096;
  if (live * n > (std::size_t{64} << 20)) live = (std::size_t{64} << 20) / n;
  batch_loop(state, s, std::vector<std::uint32_t>(live, static_cast<std::uint32_t>(n)));
}

void bm_batch_mixed(benchmark::State& state, kind k) {
  source s(k);
  batch_loop(state, s, sizes_between(g_quick ? 1024 : 65536, 16, 512, 0x5eed0001));
}

std::size_t container_n() { return g_quick ? 1000 : 20000; }

void bm_vector_growth(benchmark::State& state, kind k) {
  source s(k);
  const std::size_t n = container_n() * 5;
  for (auto _ : state) {
    std::pmr::vector<std::int64_t> v(s.pmr());
    for (std::size_t i = 0; i < n; ++i) v.push_back(static_cast<std::int64_t>(i));
    benchmark::DoNotOptimize(v.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

template <class Map>
void map_loop(benchmark::State& state, kind k) {
  source s(k);
  const std::size_t n = container_n();
  std::vector<std::uint32_t> keys = sizes_between(n, 0, 1u << 30, 42);
  for (auto _ : state) {
    Map m(s.pmr());
    for (std::uint32_t key : keys) m.emplace(static_cast<int>(key), 1);
    for (std::uint32_t key : keys) m.erase(static_cast<int>(key));
    benchmark::DoNotOptimize(m.size());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void bm_map(benchmark::State& state, kind k) { map_loop<std::pmr::map<int, int>>(state, k); }
void bm_unordered_map(benchmark::State& state, kind k) {
  map_loop<std::pmr::unordered_map<int, int>>(state, k);
}

void bm_strings(benchmark::State& state, kind k) {
  source s(k);
  const std::size_t n = container_n();
  const std::vector<std::uint32_t> lens = sizes_between(n, 20, 200, 7);  // past the SSO buffer
  for (auto _ : state) {
    std::pmr::vector<std::pmr::string> v(s.pmr());
    for (std::uint32_t len : lens) v.emplace_back(len, 'x');
    benchmark::DoNotOptimize(v.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

// Single-producer single-consumer ring of pointers.
class ring {
 public:
  bool push(void* p) {
    const std::size_t h = head_.load(std::memory_order_relaxed);
    if (h - tail_.load(std::memory_order_acquire) == kCap) return false;
    slots_[h % kCap] = p;
    head_.store(h + 1, std::memory_order_release);
    return true;
  }
  void* pop() {
    const std::size_t t = tail_.load(std::memory_order_relaxed);
    if (t == head_.load(std::memory_order_acquire)) return nullptr;
    void* p = slots_[t % kCap];
    tail_.store(t + 1, std::memory_order_release);
    return p;
  }
  bool empty() const { return head_.load() == tail_.load(); }

 private:
  static constexpr std::size_t kCap = 1024;
  void* slots_[kCap] = {};
  alignas(64) std::atomic<std::size_t> head_{0};
  alignas(64) std::atomic<std::size_t> tail_{0};
};

void bm_prodcons(benchmark::State& state, kind k) {
  source s(k);
  constexpr std::size_t kSize = 64;
  const std::size_t per_iter = 4096;
  auto q = std::make_unique<ring>();
  std::atomic<bool> done{false};
  std::thread consumer([&] {
    for (;;) {
      void* p = q->pop();
      if (p != nullptr) {
        s.free(p, kSize);
      } else if (done.load(std::memory_order_acquire)) {
        if (q->empty()) return;
      } else {
        std::this_thread::yield();  // 2 cores: do not starve the producer
      }
    }
  });
  for (auto _ : state) {
    for (std::size_t i = 0; i < per_iter; ++i) {
      void* p = s.alloc(kSize);
      *static_cast<char*>(p) = 1;
      while (!q->push(p)) std::this_thread::yield();
    }
  }
  done.store(true, std::memory_order_release);
  consumer.join();
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(per_iter));
}

struct source_name {
  const char* name;
  kind k;
};
constexpr source_name kSources[] = {
    {"malloc", kind::malloc_},
    {"droppable", kind::droppable},
    {"sync_pool", kind::sync_pool},
    {"unsync_pool", kind::unsync_pool},
};

template <class F, class... A>
void reg(const std::string& name, F f, A... a) {
  benchmark::RegisterBenchmark(name.c_str(), f, a...)->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  g_quick = bench::take_flag(&argc, argv, "--quick");

  const std::string lib = bench::malloc_provider();
  benchmark::AddCustomContext("alloc", bench::allocator_name(lib));
  benchmark::AddCustomContext("malloc_from", lib);
  benchmark::AddCustomContext("mapped", bench::mapped_allocators());

  for (const auto& src : kSources) {
    const std::string suffix = std::string("/") + src.name;
    for (std::size_t n : {16u, 64u, 256u, 1024u, 4096u, 16384u}) {
      reg("lifo_" + std::to_string(n) + "B" + suffix, bm_lifo, src.k, n);
    }
    for (std::size_t n : {16u, 64u, 256u, 1024u, 4096u, 16384u}) {
      reg("batch_" + std::to_string(n) + "B" + suffix, bm_batch, src.k, n);
    }
    reg("batch_mixed_16-512B" + suffix, bm_batch_mixed, src.k);
    reg("vector_growth" + suffix, bm_vector_growth, src.k);
    reg("map" + suffix, bm_map, src.k);
    reg("unordered_map" + suffix, bm_unordered_map, src.k);
    reg("strings" + suffix, bm_strings, src.k);
    if (src.k != kind::unsync_pool) reg("prodcons_64B" + suffix, bm_prodcons, src.k);
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
