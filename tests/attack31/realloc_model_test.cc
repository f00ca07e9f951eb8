// tests/attack31: a randomized multi-threaded model of realloc (the shim's
// rule: grow_large_in_place first for large -> large, then keep it if it
// fits, else copy) composed with allocate / calloc / free / generation /
// seal / re-seal / check / forced drops (drop_for_testing) / trim / decay,
// against a shadow model of every block's contents (one seed per page).
// Blocks are large (257 KiB - 3 MiB) and big mappings are freed now and then
// so that most blocks sit in reused mappings up to 4x their request: the
// growth within the mapping (commit 2c00465) is taken often.
//
// Oracles:
//  - contents: every byte below the size a block holds is what the model
//    says (realloc keeps min(old, new); calloc zero; a dropped page zero);
//  - a block observed (generation() or seal()) in this life never grows in
//    place;
//  - check(p, g) of a handle: `intact` only if the contents are the sealed
//    ones (compared page by page); a page with data dropped after the seal
//    is never `intact`; a handle of an ended life (freed, re-sealed, copied
//    away by realloc) reads `stale` or `foreign` (its arena unmapped), from
//    the owner and from a checker thread;
//  - at the end: stats blocks_live / bytes_live of the heap back to 0, no
//    refused free (the model frees each block once).
// MODEL_SECONDS (default 5) per backing; MODEL_SEED.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack31/words.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::uint32_t kUnknown = 0xffffffffu;  // bytes the model does not know (never checked)
constexpr int kOwners = 3;
constexpr int kSlots = 4;

struct locked_os : dropalloc::testing::forwarding_os {
  std::mutex m;
  explicit locked_os(os::fake_os& f) : forwarding_os(f) {}
  void unmap_arena(void* p, std::size_t b) noexcept override {
    std::lock_guard<std::mutex> g(m);
    real.unmap_arena(p, b);
  }
};

void fill_page(unsigned char* page, std::size_t bytes, std::uint32_t seed) {
  if (seed == 0) {
    std::memset(page, 0, bytes);
  } else {
    attack31::wfill(page, bytes, seed);
  }
}

bool page_holds(const unsigned char* page, std::size_t bytes, std::uint32_t seed) {
  if (seed == kUnknown) return true;
  if (seed == 0) {
    for (std::size_t i = 0; i < bytes; ++i) {
      if (page[i] != 0) return false;
    }
    return true;
  }
  return attack31::wholds(page, bytes, seed);
}

struct handle {
  void* p;
  std::uint64_t gen;
};

struct slot {
  std::mutex m;  // the owner holds it while it changes the block; the checker while it reads
  unsigned char* p = nullptr;
  std::size_t n = 0;
  std::vector<std::uint32_t> pages;  // seed of each page of [0, n)
  bool observed = false;             // generation handed out in this life
  bool sealed = false;               // sealed at gen, pages_at_seal as then
  std::uint64_t gen = 0;
  std::vector<std::uint32_t> pages_at_seal;
  bool lost_since_seal = false;  // a page with data dropped since the seal
  bool maybe_lost = false;       // a page the model did not know dropped since the seal
};

struct failures {
  std::mutex m;
  std::vector<std::string> lines;
  void add(const std::string& s) {
    std::lock_guard<std::mutex> g(m);
    if (lines.size() < 30) lines.push_back(s);
  }
};

struct world {
  core::heap& h;
  failures& fail;
  slot slots[kOwners][kSlots];
  std::mutex ended_m;
  std::vector<handle> ended;
  std::atomic<std::uint64_t> grew_within{0}, grew_past{0}, copied{0}, kept{0}, checks{0}, drops{0};
  std::atomic<bool> stop{false};

  world(core::heap& heap, failures& f) : h(heap), fail(f) {}
  void end_handle(void* p, std::uint64_t gen) {
    if (gen == 0) return;
    std::lock_guard<std::mutex> g(ended_m);
    if (ended.size() < 4096) ended.push_back({p, gen});
    else ended[gen % ended.size()] = {p, gen};
  }
};

// Whether the block's contents match `pages` over [0, n); first bad page in *bad.
bool matches(const unsigned char* p, std::size_t n, const std::vector<std::uint32_t>& pages, std::size_t* bad) {
  for (std::size_t k = 0; k < pages.size() && k * kPage < n; ++k) {
    std::size_t bytes = (k + 1) * kPage <= n ? kPage : n - k * kPage;
    if (!page_holds(p + k * kPage, bytes, pages[k])) {
      *bad = k;
      return false;
    }
  }
  return true;
}

std::string where(const char* what, const void* p, std::size_t n, std::size_t page) {
  char buf[200];
  snprintf(buf, sizeof buf, "%s: block %p of %zu bytes, page %zu", what, p, n, page);
  return buf;
}

void owner(world& w, int id, std::uint64_t seed, std::chrono::steady_clock::time_point until) {
  core::heap& h = w.h;
  std::mt19937_64 rng(seed);
  std::uint32_t next_seed = static_cast<std::uint32_t>(id + 1) << 24;
  auto fresh_seed = [&] { return ++next_seed; };
  auto verify = [&](slot& s, const char* when) {
    std::size_t bad = 0;
    if (!matches(s.p, s.n, s.pages, &bad)) w.fail.add(where(when, s.p, s.n, bad));
  };
  for (long op = 0; std::chrono::steady_clock::now() < until; ++op) {
    slot& s = w.slots[id][rng() % kSlots];
    std::lock_guard<std::mutex> guard(s.m);
    const unsigned r = static_cast<unsigned>(rng() % 100);
    if (s.p == nullptr) {
      if (r < 30) {  // a big mapping into the cache, for the next requests to reuse
        core::alloc_error err = core::alloc_error::none;
        std::size_t big = 4 * kMiB + rng() % (8 * kMiB);
        void* b = h.allocate(big, 16, &err);
        if (b != nullptr) {
          std::memset(b, 0xab, big);
          h.deallocate(b);
        }
      }
      std::size_t n = (257 * 1024 + rng() % (3 * kMiB) + kPage - 1) / kPage * kPage;  // pages: the model is per page
      core::alloc_error err = core::alloc_error::none;
      const bool zeroed = r % 3 == 0;
      s.p = static_cast<unsigned char*>(zeroed ? h.allocate_zeroed(n, 16, &err) : h.allocate(n, 16, &err));
      if (s.p == nullptr) {
        w.fail.add("allocation failed");
        continue;
      }
      s.n = n;
      s.pages.assign((n + kPage - 1) / kPage, 0);
      s.observed = s.sealed = s.lost_since_seal = s.maybe_lost = false;
      s.gen = 0;
      if (zeroed) {
        verify(s, "calloc not zero");
      } else {
        for (std::size_t k = 0; k < s.pages.size(); ++k) {
          s.pages[k] = fresh_seed();
          fill_page(s.p + k * kPage, kPage < n - k * kPage ? kPage : n - k * kPage, s.pages[k]);
        }
      }
      continue;
    }
    if (r < 30) {  // realloc, the shim's way
      verify(s, "before realloc");
      const std::size_t have = h.usable_size(s.p);
      if (have < s.n) w.fail.add(where("usable size below the request", s.p, s.n, have));
      std::size_t m;
      if (r < 15 && have > s.n) m = s.n + 1 + rng() % (have - s.n);  // within the mapping
      else if (r < 22) m = s.n + 1 + rng() % (2 * s.n);                 // past it, maybe
      else m = core::kMaxClassSize + 1 + rng() % s.n;                   // shrink (or not)
      if (m > 12 * kMiB) m = 12 * kMiB;
      m = (m + kPage - 1) / kPage * kPage;
      void* q = nullptr;
      bool in_place = false;
      if (m > core::kMaxClassSize && have > core::kMaxClassSize && h.grow_large_in_place(s.p, m)) {
        in_place = true;
        q = s.p;
        if (s.observed) w.fail.add(where("an observed block grew in place", s.p, s.n, m));
        (m <= have ? w.grew_within : w.grew_past).fetch_add(1);
      } else if (m <= have && m >= have / 2) {
        q = s.p;
        w.kept.fetch_add(1);
      } else {
        core::alloc_error err = core::alloc_error::none;
        q = h.allocate(m, 16, &err);
        if (q == nullptr) {
          w.fail.add("realloc's allocation failed");
          continue;
        }
        std::memcpy(q, s.p, m < have ? m : have);
        w.copied.fetch_add(1);
      }
      (void)in_place;
      const std::size_t keep = m < s.n ? m : s.n;
      if (q != s.p) {
        h.deallocate(s.p);
        w.end_handle(s.p, s.gen);  // after the free: only then has the life ended
        s.p = static_cast<unsigned char*>(q);
        s.observed = s.sealed = s.lost_since_seal = s.maybe_lost = false;
        s.gen = 0;
      }
      s.pages.resize((keep + kPage - 1) / kPage);
      s.n = keep;
      verify(s, "after realloc");
      // The new bytes: written unless the block is sealed (a write would
      // need a re-seal); then unknown.
      const std::size_t from = keep / kPage;
      s.pages.resize((m + kPage - 1) / kPage, kUnknown);
      if (!s.sealed) {
        for (std::size_t k = from; k < s.pages.size(); ++k) {
          s.pages[k] = fresh_seed();
          fill_page(s.p + k * kPage, kPage < m - k * kPage ? kPage : m - k * kPage, s.pages[k]);
        }
      }
      s.n = m;
    } else if (r < 40) {  // write a page: re-seal if sealed
      std::size_t k = rng() % s.pages.size();
      s.pages[k] = fresh_seed();
      fill_page(s.p + k * kPage, kPage < s.n - k * kPage ? kPage : s.n - k * kPage, s.pages[k]);
      if (s.sealed) {
        std::uint64_t g = 0;
        const std::uint64_t old_gen = s.gen;
        block_state b = h.seal(s.p, &g);
        if (b == block_state::intact) {
          s.gen = g;
          s.pages_at_seal = s.pages;
          s.lost_since_seal = s.maybe_lost = false;
        } else if (b == block_state::dropped) {
          if (!s.lost_since_seal && !s.maybe_lost) w.fail.add(where("re-seal says dropped with no page lost", s.p, s.n, 0));
          // Stays dropped: only a full rewrite takes it back.
          for (std::size_t j = 0; j < s.pages.size(); ++j) {
            s.pages[j] = fresh_seed();
            fill_page(s.p + j * kPage, kPage < s.n - j * kPage ? kPage : s.n - j * kPage, s.pages[j]);
          }
          // Bytes past n up to the usable size may hold witness words of the
          // seal: rewrite them as zeros is not ours to do; seal_rewritten
          // takes the block as it is now.
          g = 0;
          if (h.seal_rewritten(s.p, &g) != block_state::intact) w.fail.add(where("seal_rewritten", s.p, s.n, 0));
          s.gen = g;
          s.pages_at_seal = s.pages;
          s.lost_since_seal = s.maybe_lost = false;
        } else {
          w.fail.add(where("re-seal answer", s.p, s.n, static_cast<std::size_t>(b)));
        }
        // Ended only now: a re-seal that found a loss leaves the block
        // dropped at the same generation until seal_rewritten.
        if (s.gen != old_gen) w.end_handle(s.p, old_gen);
      }
    } else if (r < 47) {  // observe
      std::uint64_t g = h.generation(s.p);
      if (g == 0) w.fail.add(where("generation 0 for a live block", s.p, s.n, 0));
      if (s.observed && g != s.gen) w.fail.add(where("generation moved", s.p, s.n, 0));
      s.observed = true;
      if (!s.sealed) s.gen = g;
    } else if (r < 57) {  // seal
      if (s.sealed) continue;
      std::uint64_t g = 0;
      block_state b = h.seal(s.p, &g);
      if (b != block_state::intact) {
        w.fail.add(where("first seal not intact", s.p, s.n, static_cast<std::size_t>(b)));
        continue;
      }
      if (s.observed && g != s.gen) w.end_handle(s.p, s.gen);
      s.observed = s.sealed = true;
      s.gen = g;
      s.pages_at_seal = s.pages;
      s.lost_since_seal = s.maybe_lost = false;
    } else if (r < 70) {  // check own handle
      if (!s.sealed) {
        if (s.observed) {
          block_state b = h.check(s.p, s.gen);
          if (b != block_state::unsealed) w.fail.add(where("check of an observed unsealed block", s.p, s.n, static_cast<std::size_t>(b)));
        }
        continue;
      }
      w.checks.fetch_add(1);
      block_state b = h.check(s.p, s.gen);
      if (b == block_state::intact) {
        std::size_t bad = 0;
        if (s.lost_since_seal) w.fail.add(where("intact after a page with data was dropped", s.p, s.n, 0));
        if (!matches(s.p, s.n < s.pages_at_seal.size() * kPage ? s.n : s.pages_at_seal.size() * kPage,
                     s.pages_at_seal, &bad)) {
          w.fail.add(where("intact but not the sealed contents", s.p, s.n, bad));
        }
      } else if (b == block_state::dropped) {
        if (!s.lost_since_seal && !s.maybe_lost) w.fail.add(where("dropped with no page lost", s.p, s.n, 0));
      } else {
        w.fail.add(where("check of own sealed block", s.p, s.n, static_cast<std::size_t>(b)));
      }
    } else if (r < 78) {  // forced drop of one page wholly inside the block
      if (s.n < kPage) continue;
      std::size_t k = rng() % (s.n / kPage);
      if (h.drop_for_testing(s.p + k * kPage, kPage) != 0) {
        w.fail.add(where("drop_for_testing refused", s.p, s.n, k));
        continue;
      }
      w.drops.fetch_add(1);
      if (s.sealed && k < s.pages_at_seal.size() && s.pages_at_seal[k] != 0 && s.pages_at_seal[k] != kUnknown) {
        s.lost_since_seal = true;
      } else if (s.sealed) {
        s.maybe_lost = true;
      }
      s.pages[k] = 0;
    } else if (r < 88) {  // free
      verify(s, "before free");
      const std::uint64_t g = s.gen;
      void* p = s.p;
      h.deallocate(s.p);
      w.end_handle(p, g);
      s.p = nullptr;
      if (g != 0) {
        block_state b = h.check(p, g);
        if (b != block_state::stale && b != block_state::foreign) w.fail.add(where("freed handle", p, 0, static_cast<std::size_t>(b)));
      }
    } else if (r < 91) {
      h.trim();
    } else if (r < 93) {
      h.decay(r % 2 == 0);
    } else {  // ended handles: all stale
      std::vector<handle> copy;
      {
        std::lock_guard<std::mutex> g(w.ended_m);
        for (int i = 0; i < 16 && !w.ended.empty(); ++i) copy.push_back(w.ended[rng() % w.ended.size()]);
      }
      for (handle e : copy) {
        block_state b = h.check(e.p, e.gen);
        if (b != block_state::stale && b != block_state::foreign) w.fail.add(where("ended handle not stale", e.p, 0, static_cast<std::size_t>(b)));
      }
    }
  }
}

void checker(world& w, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  while (!w.stop.load()) {
    slot& s = w.slots[rng() % kOwners][rng() % kSlots];
    {
      std::lock_guard<std::mutex> guard(s.m);
      if (s.p != nullptr && s.sealed) {
        block_state b = w.h.check(s.p, s.gen);
        if (b == block_state::intact) {
          std::size_t bad = 0;
          std::size_t n = s.n < s.pages_at_seal.size() * kPage ? s.n : s.pages_at_seal.size() * kPage;
          if (s.lost_since_seal || !matches(s.p, n, s.pages_at_seal, &bad)) w.fail.add(where("checker: intact but wrong", s.p, s.n, bad));
        } else if (b != block_state::dropped) {
          w.fail.add(where("checker: sealed block answer", s.p, s.n, static_cast<std::size_t>(b)));
        }
      }
    }
    std::vector<handle> copy;
    {
      std::lock_guard<std::mutex> g(w.ended_m);
      for (int i = 0; i < 8 && !w.ended.empty(); ++i) copy.push_back(w.ended[rng() % w.ended.size()]);
    }
    for (handle e : copy) {
      block_state b = w.h.check(e.p, e.gen);
      if (b != block_state::stale && b != block_state::foreign) w.fail.add(where("checker: ended handle not stale", e.p, 0, static_cast<std::size_t>(b)));
    }
  }
}

void run(dropalloc::backing memory) {
  const char* sec = std::getenv("MODEL_SECONDS");
  const char* sd = std::getenv("MODEL_SEED");
  const double seconds = sec != nullptr ? std::atof(sec) : 5.0;
  const std::uint64_t seed = sd != nullptr ? std::strtoull(sd, nullptr, 10) : 31;
  os::fake_os fake;
  fake.reported_backing = memory;
  locked_os los(fake);
  core::heap h(dropalloc::testing::with_os_no_decay(&los));
  failures fail;
  {
    world w(h, fail);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    std::thread check_thread(checker, std::ref(w), seed * 7 + 1);
    std::vector<std::thread> th;
    for (int i = 0; i < kOwners; ++i) th.emplace_back(owner, std::ref(w), i, seed * 131 + static_cast<std::uint64_t>(i), until);
    for (auto& t : th) t.join();
    w.stop.store(true);
    check_thread.join();
    MESSAGE("grew within ", w.grew_within.load(), ", grew past ", w.grew_past.load(), ", kept ", w.kept.load(),
            ", copied ", w.copied.load(), ", checks ", w.checks.load(), ", drops ", w.drops.load());
    for (auto& row : w.slots) {
      for (auto& s : row) {
        if (s.p != nullptr) h.deallocate(s.p);
      }
    }
  }
  for (auto& line : fail.lines) MESSAGE(line);
  CHECK(fail.lines.empty());
  auto st = h.stats();
  CHECK(st.blocks_live == 0);
  CHECK(st.bytes_live == 0);
  CHECK(st.misuse_refused == 0);
}

}  // namespace

TEST_CASE("realloc model: droppable memory (fake), forced drops") { run(dropalloc::backing::droppable); }
TEST_CASE("realloc model: ordinary memory (fake): reused mappings keep their tails") { run(dropalloc::backing::ordinary); }
