// Random histories aimed at the `next_sealed` bits of 831f243 (advice_queue::
// add, heap::give_advice) and the out-of-order merging of seal_advice_runs.
// Two heaps over one recording OS layer (the fake one, MAP_DROPPABLE
// reported, arena addresses reused where possible); blocks allocated in
// groups of one class (consecutive indices), sealed in runs ascending,
// descending, shuffled, strided, or interleaved with another group (another
// class, or the other heap), with frees, reallocations, rewrites, re-seals,
// large blocks pushed out of the large cache (address reuse without a flush)
// and 11 ms pauses (an age flush between an entry and its bits).
//
// At every flush of one heap (decay(false)):
//   coverage: every block sealed and unchanged since has each of its pages
//             advised by a seal_pages() call numbered after its seal began;
//   over-advice: every page that flush advised touches a block of that heap
//             that is sealed at that moment (as the heap sees it);
//   every advised range lies within one arena mapped at that moment (the
//             fake OS's arena list is not exposed: checked against the
//             blocks of the model instead, via the pages of live slots).
// At the end (seal_all() of both heaps): coverage again; every block checks
// intact and holds its bytes.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

constexpr std::size_t kSizes[] = {16, 48, 64, 112, 1000, 2304, 3000, 4096, 9000, 40000, 300000};

struct slot {
  void* p = nullptr;
  std::size_t size = 0;
  bool sealed = false;       // sealed, contents unchanged since
  bool heap_sealed = false;  // sealed as the heap sees it
  std::uint64_t gen = 0;
  std::uint64_t since = 0;
  std::size_t seed = 0;
};

struct group {
  int heap = 0;
  std::size_t want = 0;
  std::vector<slot> slots;
};

struct world {
  os::fake_os fake;
  dropalloc::testing::recording_os rec{fake};
  core::heap h0{make(false)};
  core::heap h1{make(true)};
  std::vector<group> groups;
  dropalloc::testing::rng r;
  std::map<std::uintptr_t, std::uint64_t> last_advised;  // page -> highest seq
  std::size_t events_seen = 0;
  std::size_t uncovered = 0, over = 0, over_pages = 0, flushes = 0, seals = 0;

  core::heap_options make(bool second) {
    fake.reported_backing = dropalloc::backing::droppable;
    fake.reuse_unmapped_arena = true;
    core::heap_options o = dropalloc::testing::with_os_no_decay(&rec);
    o.thread_cache = !second;
    return o;
  }
  core::heap& heap(int k) { return k == 0 ? h0 : h1; }
  explicit world(std::uint64_t seed) : r{seed} {}

  static std::uintptr_t first_page(const slot& s) { return reinterpret_cast<std::uintptr_t>(s.p) / 4096; }
  static std::uintptr_t last_page(const slot& s) {
    return (reinterpret_cast<std::uintptr_t>(s.p) + s.size - 1) / 4096;
  }

  void absorb() {
    std::lock_guard<std::mutex> g(rec.lock);
    for (; events_seen < rec.events.size(); ++events_seen) {
      const auto& e = rec.events[events_seen];
      for (std::uintptr_t a = e.from; a < e.to; a += 4096) {
        auto& v = last_advised[a / 4096];
        if (e.seq > v) v = e.seq;
      }
    }
  }

  void seal(group& g, slot& s) {
    if (s.p == nullptr) return;
    s.since = rec.mark();
    std::uint64_t gen = 0;
    REQUIRE(heap(g.heap).seal(s.p, &gen) == block_state::intact);
    s.sealed = s.heap_sealed = true;
    s.gen = gen;
    ++seals;
  }

  void alloc(group& g, slot& s) {
    core::alloc_error err{};
    s.p = heap(g.heap).allocate(g.want, 16, &err);
    REQUIRE(s.p != nullptr);
    s.size = heap(g.heap).usable_size(s.p);
    s.seed = r.next() % 100000;
    fill(s.p, s.size, s.seed);
    s.sealed = s.heap_sealed = false;
  }

  void free_slot(group& g, slot& s) {
    if (s.p == nullptr) return;
    if (s.sealed) REQUIRE(heap(g.heap).check(s.p, s.gen) == block_state::intact);
    heap(g.heap).deallocate(s.p);
    s = slot{};
  }

  std::vector<std::size_t> order(std::size_t n) {
    std::vector<std::size_t> o(n);
    for (std::size_t i = 0; i < n; ++i) o[i] = i;
    switch (r.below(5)) {
      case 0: break;                                  // ascending
      case 1: std::reverse(o.begin(), o.end()); break;  // descending
      case 2:
        for (std::size_t i = n; i > 1; --i) std::swap(o[i - 1], o[r.below(i)]);
        break;
      case 3: {  // strided: evens then odds, or by 3
        std::vector<std::size_t> s;
        const std::size_t k = 2 + r.below(3);
        for (std::size_t m = 0; m < k; ++m)
          for (std::size_t i = m; i < n; i += k) s.push_back(i);
        o = s;
        break;
      }
      default: {  // descending pairs ascending within: 10,11, 8,9, ...
        std::vector<std::size_t> s;
        for (std::size_t i = n; i > 0;) {
          const std::size_t lo = i >= 2 ? i - 2 : 0;
          for (std::size_t j = lo; j < i; ++j) s.push_back(j);
          i = lo;
        }
        o = s;
      }
    }
    return o;
  }

  void step() {
    const unsigned op = static_cast<unsigned>(r.below(100));
    if (groups.size() < 3 || (op < 8 && groups.size() < 12)) {
      group g;
      g.heap = static_cast<int>(r.below(2));
      g.want = kSizes[r.below(std::size(kSizes))];
      const std::size_t n = g.want >= 40000 ? 1 + r.below(4) : 1 + r.below(g.want <= 64 ? 140 : 40);
      g.slots.resize(n);
      for (auto& s : g.slots) alloc(g, s);
      groups.push_back(std::move(g));
      return;
    }
    group& g = groups[r.below(groups.size())];
    if (op < 35) {  // seal a run of the group, maybe interleaved with another
      group& o = groups[r.below(groups.size())];
      auto a = order(g.slots.size());
      auto b = order(o.slots.size());
      const bool inter = &o != &g && r.chance(40);
      const bool reseal_only_live = r.chance(50);
      for (std::size_t i = 0; i < std::max(a.size(), inter ? b.size() : 0); ++i) {
        if (i < a.size()) {
          slot& s = g.slots[a[i]];
          if (!(reseal_only_live && s.heap_sealed)) seal(g, s);
        }
        if (inter && i < b.size()) {
          slot& s = o.slots[b[i]];
          if (!(reseal_only_live && s.heap_sealed)) seal(o, s);
        }
      }
    } else if (op < 50) {  // free some, reallocate some of them, maybe seal
      for (auto& s : g.slots) {
        if (r.chance(30)) free_slot(g, s);
      }
      for (auto& s : g.slots) {
        if (s.p == nullptr && r.chance(70)) {
          alloc(g, s);
          if (r.chance(50)) seal(g, s);
        }
      }
    } else if (op < 58) {  // rewrite some (the heap still sees them sealed), maybe seal again
      for (auto& s : g.slots) {
        if (s.p == nullptr || !r.chance(25)) continue;
        s.seed = r.next() % 100000;
        fill(s.p, s.size, s.seed);
        s.sealed = false;
        if (r.chance(50)) seal(g, s);
      }
    } else if (op < 66) {  // free the whole group (large ones: into the cache, pushing others out)
      for (auto& s : g.slots) free_slot(g, s);
      groups.erase(groups.begin() + (&g - groups.data()));
    } else if (op < 76) {
      flush(static_cast<int>(r.below(2)));
    } else if (op < 77) {
      std::this_thread::sleep_for(std::chrono::milliseconds(11));
    } else {
      for (auto& s : g.slots) {
        if (s.p != nullptr && s.sealed) {
          REQUIRE(heap(g.heap).check(s.p, s.gen) == block_state::intact);
          REQUIRE(holds(s.p, s.size, s.seed));
        }
      }
    }
  }

  bool sealed_touching(int k, std::uintptr_t page) const {
    for (const auto& g : groups) {
      if (g.heap != k) continue;
      for (const slot& s : g.slots) {
        if (s.p != nullptr && s.heap_sealed && first_page(s) <= page && page <= last_page(s)) return true;
      }
    }
    return false;
  }

  void verify_coverage() {
    absorb();
    for (const auto& g : groups) {
      for (const slot& s : g.slots) {
        if (s.p == nullptr || !s.sealed) continue;
        for (std::uintptr_t pg = first_page(s); pg <= last_page(s); ++pg) {
          auto it = last_advised.find(pg);
          if (it == last_advised.end() || it->second < s.since) {
            ++uncovered;
            MESSAGE("uncovered: heap " << g.heap << " block " << s.p << " size " << s.size << " page " << pg);
          }
        }
      }
    }
  }

  void flush(int k) {
    ++flushes;
    const std::uint64_t since = rec.mark();
    heap(k).decay(false);
    std::set<std::uintptr_t> bad;
    for (std::uintptr_t a : rec.pages_since(since)) {
      if (!sealed_touching(k, a / 4096)) bad.insert(a / 4096);
    }
    if (!bad.empty()) {
      ++over;
      MESSAGE("over-advice at flush " << flushes << ": " << bad.size() << " pages, first " << *bad.begin());
    }
    over_pages += bad.size();
    // Only the flushed heap's blocks are sure to be covered now.
    absorb();
    for (const auto& g : groups) {
      if (g.heap != k) continue;
      for (const slot& s : g.slots) {
        if (s.p == nullptr || !s.sealed) continue;
        for (std::uintptr_t pg = first_page(s); pg <= last_page(s); ++pg) {
          auto it = last_advised.find(pg);
          if (it == last_advised.end() || it->second < s.since) {
            ++uncovered;
            MESSAGE("uncovered at flush: heap " << k << " block " << s.p << " size " << s.size);
          }
        }
      }
    }
  }

  void finish() {
    for (auto& g : groups) {
      for (auto& s : g.slots) {
        if (s.p != nullptr && !s.heap_sealed) free_slot(g, s);
      }
    }
    // Rewritten-but-sealed blocks stay: seal_all leaves sealed blocks alone.
    h0.seal_all();
    h1.seal_all();
    verify_coverage();
    for (auto& g : groups) {
      for (auto& s : g.slots) {
        if (s.p == nullptr) continue;
        if (s.sealed) {
          CHECK(heap(g.heap).check(s.p, s.gen) == block_state::intact);
          CHECK(holds(s.p, s.size, s.seed));
        }
        heap(g.heap).deallocate(s.p);
        s = slot{};
      }
    }
  }
};

int rounds() {
  const char* e = std::getenv("ATTACK33_ROUNDS");
  return e != nullptr ? std::atoi(e) : 12;
}

}  // namespace

TEST_CASE("bits: coverage and over-advice at every flush, two heaps, runs in every order") {
  std::size_t uncovered = 0, over = 0, over_pages = 0, flushes = 0, seals = 0;
  for (int round = 0; round < rounds(); ++round) {
    world w(dropalloc::testing::derived_seed(33, round));
    for (int i = 0; i < 400; ++i) w.step();
    w.finish();
    uncovered += w.uncovered;
    over += w.over;
    over_pages += w.over_pages;
    flushes += w.flushes;
    seals += w.seals;
  }
  MESSAGE(seals << " seals, " << flushes << " flushes; uncovered pages " << uncovered << ", over-advising flushes "
                << over << " (" << over_pages << " pages)");
  CHECK(uncovered == 0);
  CHECK(over == 0);
}
