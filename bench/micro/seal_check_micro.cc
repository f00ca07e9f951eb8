// seal_check_micro: what the drop check and the seal cost, per block and per
// page, for blocks of one size class page (64 B, 4 KiB) and multi-page blocks
// (64 KiB, 256 KiB, the largest class). In-process with
// dropalloc::droppable_resource only (no other allocator has these calls).
//   seal/<n>B    write one word per page (re-dirtying it, as a writer would),
//                then seal(): records the witnesses and MADV_FREEs the pages
//   seal_many/<n>B  as seal/<n>B, but 64 blocks written, then sealed by one
//                seal_many() (one translation barrier for the 64)
//   seal_all/<n>B  every block freshly written, then one seal_all() for all
//   first_write/<n>B, first_read/<n>B  one store (load) per page of blocks
//                sealed by seal_all() just before (untimed), whose pages were
//                therefore just given to the kernel: what a writer (reader)
//                pays the first time it touches such a page. The seal and
//                seal_many rows include a first write.
//   rewrite/<n>B  the control for first_write: the same stores to blocks
//                freshly written and not sealed (their pages never advised)
//   check/<n>B   check(ptr, generation) on sealed, intact blocks (16 MiB of
//                them: metadata and witness words mostly come from memory)
//   check_hot/<n>B  the same over 16 blocks checked again and again: the
//                cost with metadata and witness words in cache
// Counters blocks and pages give the work per iteration; bench/compare.py
// divides the time by them.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "allocator/dropalloc.h"
#include "bench/macro/workload.h"

namespace {

bool g_quick = false;

struct blocks {
  dropalloc::droppable_resource res;
  std::vector<dropalloc::block_ref> refs;
  std::size_t bytes;

  explicit blocks(std::size_t n, bool hot = false) : bytes(n) {
    const std::size_t total = g_quick ? (std::size_t{1} << 20) : (std::size_t{16} << 20);
    const std::size_t count = hot || total / n < 16 ? 16 : total / n;
    for (std::size_t i = 0; i < count; ++i) {
      dropalloc::block_ref b = res.allocate_block(n);
      std::memset(b.ptr, 0x5a, n);
      refs.push_back(b);
    }
  }
  ~blocks() {
    for (auto& b : refs) res.deallocate(b.ptr, bytes);
  }
  std::size_t pages_per_block() const { return (bytes + 4095) / 4096; }
};

void set_counters(benchmark::State& state, const blocks& b) {
  state.counters["blocks"] = static_cast<double>(b.refs.size());
  state.counters["pages"] = static_cast<double>(b.refs.size() * b.pages_per_block());
}

void bm_seal(benchmark::State& state, std::size_t n) {
  blocks b(n);
  for (auto _ : state) {
    for (auto& r : b.refs) {
      auto* p = static_cast<char*>(r.ptr);
      for (std::size_t off = 0; off < n; off += 4096) p[off] = 0x5a;
      benchmark::DoNotOptimize(b.res.seal(r.ptr));
    }
  }
  set_counters(state, b);
}

// As bm_seal, 64 blocks at a time: write them, then one seal_many().
void bm_seal_many(benchmark::State& state, std::size_t n) {
  blocks b(n);
  constexpr std::size_t kBatch = 64;
  std::vector<void*> ptrs;
  for (auto& r : b.refs) ptrs.push_back(r.ptr);
  dropalloc::block_state answers[kBatch];
  std::size_t intact = 0;
  for (auto _ : state) {
    for (std::size_t from = 0; from < ptrs.size(); from += kBatch) {
      const std::size_t k = std::min(kBatch, ptrs.size() - from);
      for (std::size_t i = from; i < from + k; ++i) {
        auto* p = static_cast<char*>(ptrs[i]);
        for (std::size_t off = 0; off < n; off += 4096) p[off] = 0x5a;
      }
      intact += b.res.seal_many(std::span<void* const>(ptrs.data() + from, k), std::span(answers, k));
    }
  }
  if (intact != ptrs.size() * state.iterations()) state.SkipWithError("seal_many() left a block not intact");
  set_counters(state, b);
}

// Frees every block and allocates it again (live, unsealed), one store per page.
void renew_and_write(blocks& b) {
  for (auto& r : b.refs) {
    b.res.deallocate(r.ptr, b.bytes);
    r = b.res.allocate_block(b.bytes);
    auto* p = static_cast<char*>(r.ptr);
    for (std::size_t off = 0; off < b.bytes; off += 4096) p[off] = 0x5a;
  }
}

// Every block freshly allocated and written (one store per page, untimed),
// then all sealed by one seal_all() (timed): one translation barrier for all
// of them, one madvise per run of adjacent blocks.
void bm_seal_all(benchmark::State& state, std::size_t n) {
  blocks b(n);
  for (auto _ : state) {
    state.PauseTiming();
    renew_and_write(b);
    state.ResumeTiming();
    if (b.res.seal_all() != b.refs.size()) state.SkipWithError("seal_all() did not seal every block");
  }
  set_counters(state, b);
}

enum class touch { write, read, rewrite };

// Every block freshly allocated, written and sealed by seal_all() (untimed),
// then one store (write) or load per page of it (timed). rewrite: the same
// stores, the blocks not sealed (no page advised), as the control.
void bm_first_touch(benchmark::State& state, std::size_t n, touch how) {
  blocks b(n);
  std::size_t sum = 0;
  const bool write = how != touch::read;
  for (auto _ : state) {
    state.PauseTiming();
    renew_and_write(b);
    if (how != touch::rewrite && b.res.seal_all() != b.refs.size()) {
      state.SkipWithError("seal_all() did not seal every block");
    }
    state.ResumeTiming();
    for (auto& r : b.refs) {
      auto* p = static_cast<volatile char*>(r.ptr);
      for (std::size_t off = 0; off < n; off += 4096) {
        if (write) {
          p[off] = 0x5b;
        } else {
          sum += static_cast<unsigned char>(p[off]);
        }
      }
    }
  }
  benchmark::DoNotOptimize(sum);
  set_counters(state, b);
}

void bm_check(benchmark::State& state, std::size_t n, bool hot) {
  blocks b(n, hot);
  for (auto& r : b.refs) b.res.seal(r.ptr);
  std::size_t intact = 0;
  for (auto _ : state) {
    for (auto& r : b.refs) intact += b.res.check(r.ptr, r.generation) == dropalloc::block_state::intact;
    benchmark::DoNotOptimize(intact);
  }
  if (intact != b.refs.size() * state.iterations()) state.SkipWithError("a block was not intact");
  set_counters(state, b);
}

}  // namespace

int main(int argc, char** argv) {
  g_quick = bench::take_flag(&argc, argv, "--quick");
  for (std::size_t n : {64u, 4096u, 65536u, 262144u}) {
    benchmark::RegisterBenchmark(("seal/" + std::to_string(n) + "B").c_str(), bm_seal, n)->UseRealTime();
    benchmark::RegisterBenchmark(("seal_many/" + std::to_string(n) + "B").c_str(), bm_seal_many, n)->UseRealTime();
    benchmark::RegisterBenchmark(("seal_all/" + std::to_string(n) + "B").c_str(), bm_seal_all, n)->UseRealTime();
    benchmark::RegisterBenchmark(("first_write/" + std::to_string(n) + "B").c_str(), bm_first_touch, n, touch::write)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("first_read/" + std::to_string(n) + "B").c_str(), bm_first_touch, n, touch::read)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("rewrite/" + std::to_string(n) + "B").c_str(), bm_first_touch, n, touch::rewrite)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("check/" + std::to_string(n) + "B").c_str(), bm_check, n, false)->UseRealTime();
    benchmark::RegisterBenchmark(("check_hot/" + std::to_string(n) + "B").c_str(), bm_check, n, true)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
