// Attack round 34 (81d5a07), change 1: random histories of racing threads
// against a shadow model. Each life of a block (allocation to free) gets an
// id L and fixed contents fill(p, n, L), written before anyone else can know
// the block; every later write (write_and_seal) puts back the same bytes.
// The model records, per address, the generation at which each life became
// known: a generation g at p belongs to the life with the largest start <= g.
//
// Threads seal (seal, seal_many in and out of address order, write_and_seal,
// each with the expected generation they last saw), check, free, drop pages
// of blocks sealed at least once (sizes whose blocks own their pages only,
// so no page of a block not yet sealed is ever dropped), and trim()/decay()
// on another thread, while stale handles and interior pointers are sealed and
// checked too. After every answer with a generation g:
//   - g belongs to the life asked about (expected generation was that life's);
//   - a copy taken (inside a read section, only if p is still a live block),
//     then check(p, g): if intact, the copy holds fill(p, n, L(g)).
// Answers `intact` with a zero generation, or for stale handles, are errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "allocator/os/os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::fill;
using dropalloc::testing::rng;

namespace {

// Blocks of 4096 B and more own their pages (class arenas are page-aligned):
// only those are dropped.
constexpr std::size_t kSizes[] = {48, 64, 64, 1000, 3000, 4096, 4096, 8192, 20480, 200000};
constexpr std::size_t kDropMin = 4096;

double seconds() {
  const char* e = std::getenv("ATTACK34_SECONDS");
  return e != nullptr ? std::atof(e) : 3.0;
}

struct life_rec {
  std::uintptr_t p;
  std::size_t n;
  std::atomic<bool> drop_ok{false};
};

struct model {
  std::mutex lock;
  std::map<std::uintptr_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>> at;  // p -> (start gen, L)
  std::vector<life_rec*> lives;  // by L - 1
  ~model() {
    for (auto* l : lives) delete l;
  }
  std::uint64_t add(void* p, std::size_t n) {
    std::lock_guard<std::mutex> g(lock);
    auto* l = new life_rec;
    l->p = reinterpret_cast<std::uintptr_t>(p);
    l->n = n;
    lives.push_back(l);
    return lives.size();
  }
  void started(std::uint64_t L, std::uint64_t gen) {
    std::lock_guard<std::mutex> g(lock);
    auto& v = at[lives[L - 1]->p];
    CHECK_MESSAGE((v.empty() || v.back().first < gen), "generation went back at an address: " << gen);
    v.emplace_back(gen, L);
  }
  std::uint64_t life_of(void* p, std::uint64_t gen) {
    std::lock_guard<std::mutex> g(lock);
    auto it = at.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == at.end()) return 0;
    std::uint64_t L = 0;
    for (auto& e : it->second) {
      if (e.first <= gen) L = e.second;
    }
    return L;
  }
  life_rec* rec(std::uint64_t L) {
    std::lock_guard<std::mutex> g(lock);
    return lives[L - 1];
  }
};

struct slot {
  std::mutex m;  // held to publish, free and drop; not to seal or check
  void* p = nullptr;
  std::uint64_t L = 0;
  std::size_t n = 0;
  std::atomic<std::uint64_t> gen{0};  // the last generation seen for this life
};

struct stats_t {
  std::atomic<std::uint64_t> seals{0}, intact{0}, stale{0}, dropped{0}, verified_intact{0}, drops{0}, trims{0},
      frees{0}, lives{0}, stale_handles{0}, errors{0};
};

struct run {
  core::heap& h;
  model md;
  std::vector<slot> slots;
  stats_t st;
  explicit run(core::heap& heap, int n) : h(heap), slots(n) {}

  // The checks made of every answer with a generation.
  void verify(void* p, std::size_t n, std::uint64_t L, block_state ans, std::uint64_t g, const char* what) {
    st.seals.fetch_add(1, std::memory_order_relaxed);
    if (ans == block_state::intact) st.intact.fetch_add(1, std::memory_order_relaxed);
    if (ans == block_state::stale) st.stale.fetch_add(1, std::memory_order_relaxed);
    if (ans == block_state::dropped) st.dropped.fetch_add(1, std::memory_order_relaxed);
    if (ans == block_state::intact && g == 0) {
      st.errors.fetch_add(1);
      FAIL_CHECK(what << ": intact with no generation");
    }
    if (g == 0) return;
    const std::uint64_t owner = md.life_of(p, g);
    if (owner != L) {
      st.errors.fetch_add(1);
      FAIL_CHECK(what << ": generation " << g << " answered for life " << L << " belongs to life " << owner
                      << " (answer " << std::string(dropalloc::to_string(ans)) << ")");
    }
    check_copy(p, n, g, what);
  }
  void check_copy(void* p, std::size_t n, std::uint64_t g, const char* what) {
    std::vector<unsigned char> copy(n);
    block_state c;
    {
      core::read_section rs;
      if (h.usable_size(p) < n) return;
      std::memcpy(copy.data(), p, n);
      c = h.check(p, g);
    }
    if (c != block_state::intact) return;
    st.verified_intact.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t L = md.life_of(p, g);
    std::vector<unsigned char> want(n);
    fill(want.data(), n, L);
    if (L == 0 || std::memcmp(copy.data(), want.data(), n) != 0) {
      st.errors.fetch_add(1);
      std::size_t i = 0;
      while (i < n && copy[i] == want[i]) ++i;
      FAIL_CHECK(what << ": check(p, " << g << ") intact over other contents (life " << L << ", first differing byte "
                      << i << " of " << n << ", reads " << int(copy[i]) << ")");
    }
  }

  // A new life in slot k (empty). Sealed before it is published, or
  // published first (then its drops wait for a seal that answered intact).
  void create(int k, rng& r) {
    slot& s = slots[k];
    std::lock_guard<std::mutex> g(s.m);
    if (s.p != nullptr) return;
    const std::size_t size = kSizes[r.below(std::size(kSizes))];
    core::alloc_error err{};
    void* p = h.allocate(size, 16, &err);
    REQUIRE(p != nullptr);
    const std::size_t n = h.usable_size(p);
    const std::uint64_t L = md.add(p, n);
    fill(p, n, L);
    std::uint64_t gen = 0;
    if (r.chance(50)) {
      const block_state a = h.seal(p, &gen);
      CHECK(a == block_state::intact);
      md.started(L, gen);
      if (a == block_state::intact) md.rec(L)->drop_ok.store(true);
    } else {
      gen = h.generation(p);  // observed: its free moves the generation
      md.started(L, gen);
    }
    s.p = p;
    s.L = L;
    s.n = n;
    s.gen.store(gen);
    st.lives.fetch_add(1, std::memory_order_relaxed);
  }

  struct snap {
    void* p;
    std::uint64_t L;
    std::size_t n;
    std::uint64_t gen;
  };
  bool take(int k, snap* out) {
    slot& s = slots[k];
    std::lock_guard<std::mutex> g(s.m);
    if (s.p == nullptr) return false;
    *out = snap{s.p, s.L, s.n, s.gen.load()};
    return true;
  }
  void saw(int k, const snap& sn, block_state a, std::uint64_t g) {
    if (g == 0) return;
    if (a == block_state::intact) md.rec(sn.L)->drop_ok.store(true);
    slot& s = slots[k];
    std::lock_guard<std::mutex> lk(s.m);
    if (s.L == sn.L && s.gen.load() < g) s.gen.store(g);
  }

  void free_slot(int k, std::vector<std::pair<void*, std::uint64_t>>& graves) {
    slot& s = slots[k];
    std::lock_guard<std::mutex> g(s.m);
    if (s.p == nullptr) return;
    graves.emplace_back(s.p, s.gen.load());
    h.deallocate(s.p);
    s.p = nullptr;
    s.L = 0;
    st.frees.fetch_add(1, std::memory_order_relaxed);
  }

  void drop(int k, rng& r) {
    slot& s = slots[k];
    std::lock_guard<std::mutex> g(s.m);
    if (s.p == nullptr || s.n < kDropMin || s.n % 4096 != 0 || reinterpret_cast<std::uintptr_t>(s.p) % 4096 != 0 ||
        !md.rec(s.L)->drop_ok.load()) {
      return;
    }
    const std::size_t pages = s.n / 4096;
    auto* page = static_cast<unsigned char*>(s.p) + 4096 * r.below(pages);
    CHECK(h.drop_for_testing(page, 4096) == 0);
    st.drops.fetch_add(1, std::memory_order_relaxed);
  }

  void worker(std::uint64_t seed, std::chrono::steady_clock::time_point end) {
    rng r{seed};
    std::vector<std::pair<void*, std::uint64_t>> graves;
    std::vector<unsigned char> buf;
    const int n = static_cast<int>(slots.size());
    while (std::chrono::steady_clock::now() < end) {
      for (int step = 0; step < 64; ++step) {
        const int k = static_cast<int>(r.below(n));
        const unsigned op = static_cast<unsigned>(r.below(100));
        snap sn{};
        if (op < 10) {
          create(k, r);
        } else if (op < 16) {
          free_slot(k, graves);
        } else if (op < 22) {
          drop(k, r);
        } else if (op < 42) {
          if (!take(k, &sn)) {
            create(k, r);
            continue;
          }
          std::uint64_t g = 0;
          const std::uint64_t exp = r.chance(80) ? sn.gen : 0;
          if (exp == 0) {
            // Sealing with no expected generation: only while we hold the
            // slot (the block cannot be freed and handed to a life being
            // filled meanwhile).
            std::lock_guard<std::mutex> lk(slots[k].m);
            if (slots[k].L != sn.L) continue;
            const block_state a = h.seal(sn.p, &g);
            verify(sn.p, sn.n, sn.L, a, g, "seal");
            if (g != 0 && a == block_state::intact) md.rec(sn.L)->drop_ok.store(true);
            if (g != 0 && slots[k].gen.load() < g) slots[k].gen.store(g);
            continue;
          }
          const block_state a = h.seal(sn.p, &g, exp);
          verify(sn.p, sn.n, sn.L, a, g, "seal");
          saw(k, sn, a, g);
        } else if (op < 54) {
          if (!take(k, &sn)) continue;
          buf.resize(sn.n);
          fill(buf.data(), sn.n, sn.L);
          std::uint64_t g = 0;
          const block_state a = h.write_and_seal(sn.p, buf.data(), sn.n, &g, sn.gen);
          verify(sn.p, sn.n, sn.L, a, g, "write_and_seal");
          saw(k, sn, a, g);
        } else if (op < 70) {
          // seal_many over a few slots, in address order or not.
          const int m = 2 + static_cast<int>(r.below(10));
          std::vector<std::pair<int, snap>> picked;
          for (int i = 0; i < m; ++i) {
            const int kk = static_cast<int>(r.below(n));
            snap s2{};
            if (!take(kk, &s2)) continue;
            bool dup = false;
            for (auto& e : picked) dup = dup || e.second.p == s2.p;
            if (!dup) picked.emplace_back(kk, s2);
          }
          if (picked.empty()) continue;
          if (r.chance(50)) {
            std::sort(picked.begin(), picked.end(), [](auto& a, auto& b) { return a.second.p < b.second.p; });
          } else if (r.chance(50)) {
            std::sort(picked.begin(), picked.end(), [](auto& a, auto& b) { return a.second.p > b.second.p; });
          }
          std::vector<void*> ps;
          std::vector<std::uint64_t> exps, gens(picked.size());
          std::vector<block_state> ans(picked.size());
          for (auto& e : picked) {
            ps.push_back(e.second.p);
            exps.push_back(e.second.gen);
          }
          h.seal_many(ps.data(), ps.size(), ans.data(), gens.data(), exps.data());
          for (std::size_t i = 0; i < picked.size(); ++i) {
            verify(ps[i], picked[i].second.n, picked[i].second.L, ans[i], gens[i], "seal_many");
            saw(picked[i].first, picked[i].second, ans[i], gens[i]);
          }
        } else if (op < 85) {
          if (!take(k, &sn)) continue;
          check_copy(sn.p, sn.n, sn.gen, "check");
        } else if (!graves.empty()) {
          // Stale handles (freed blocks, perhaps handed out again, perhaps
          // their arenas unmapped): never intact, never a crash.
          const auto gr = graves[r.below(graves.size())];
          std::uint64_t g = 0;
          block_state a;
          const unsigned how = static_cast<unsigned>(r.below(5));
          if (how == 0) {
            a = h.seal(gr.first, &g, gr.second);
          } else if (how == 1) {
            buf.assign(16, 1);
            a = h.write_and_seal(gr.first, buf.data(), 16, &g, gr.second);
          } else if (how == 2) {
            void* one[1] = {gr.first};
            std::uint64_t ex[1] = {gr.second};
            block_state aa[1];
            h.seal_many(one, 1, aa, &g, ex);
            a = aa[0];
          } else if (how == 3) {
            a = h.check(gr.first, gr.second);
          } else {
            // An interior pointer (no expected generation: never a block start).
            a = h.seal(static_cast<char*>(gr.first) + 8, &g);
            CHECK(a == block_state::foreign);
          }
          st.stale_handles.fetch_add(1, std::memory_order_relaxed);
          if (a == block_state::intact) {
            st.errors.fetch_add(1);
            FAIL_CHECK("a stale handle answered intact (how " << how << ", gen " << gr.second << ")");
          }
          if (graves.size() > 4096) graves.erase(graves.begin(), graves.begin() + 2048);
        }
      }
    }
  }
};

void run_history(core::heap& h, std::uint64_t seed, const char* name, int slots = 64) {
  run R(h, slots);
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(seconds() * 1000));
  std::atomic<bool> done{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&, t] { R.worker(dropalloc::testing::derived_seed(seed, t), end); });
  }
  std::thread trimmer([&] {
    rng r{dropalloc::testing::derived_seed(seed, 99)};
    while (!done.load()) {
      if (r.chance(50)) {
        h.trim();
      } else {
        h.decay(r.chance(50));
      }
      R.st.trims.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(r.below(300)));
    }
  });
  for (auto& t : ts) t.join();
  done.store(true);
  trimmer.join();
  // Everything left: sealed blocks check and hold their contents.
  for (auto& s : R.slots) {
    if (s.p == nullptr) continue;
    R.check_copy(s.p, s.n, s.gen.load(), "final");
    h.deallocate(s.p);
  }
  MESSAGE(std::string(name) << ": seals " << R.st.seals.load() << " (intact " << R.st.intact.load() << ", stale " << R.st.stale.load() << ", dropped "
               << R.st.dropped.load() << "), checks verified intact " << R.st.verified_intact.load() << ", lives " << R.st.lives.load()
               << ", frees " << R.st.frees.load() << ", drops " << R.st.drops.load() << ", trims/decays " << R.st.trims.load()
               << ", stale handles " << R.st.stale_handles.load() << ", errors " << R.st.errors.load());
  CHECK(R.st.errors.load() == 0);
}

}  // namespace

TEST_CASE("race model: real OS layer (queued advice where MAP_DROPPABLE)") {
  os::os_interface& o = os::system_os();
  core::heap_options opt = dropalloc::testing::with_os(&o);
  opt.empty_arena_decay_ms = 0;
  core::heap h(opt);
  MESSAGE("backing " << static_cast<int>(h.arena_backing()));
  run_history(h, 3401, "real OS");
}

// A history over the fake OS reporting `memory` arenas, empty arenas unmapped
// at once.
void run_on_fake_os(dropalloc::backing memory, std::uint64_t seed, const char* name, int slots = 64,
                    bool thread_cache = true) {
  os::fake_os fake;
  core::heap_options opt = dropalloc::testing::with_fake_os(&fake, memory);
  opt.empty_arena_decay_ms = 0;
  opt.thread_cache = thread_cache;
  core::heap h(opt);
  run_history(h, seed, name, slots);
}

TEST_CASE("race model: fake OS reporting droppable arenas (queued advice)") {
  run_on_fake_os(dropalloc::backing::droppable, 3402, "fake droppable");
}

TEST_CASE("race model: fake OS, private fallback (advise_sealed at once)") {
  run_on_fake_os(dropalloc::backing::private_fallback, 3403, "fake fallback");
}

TEST_CASE("race model: six slots only (every operation on a few blocks: the most races per block)") {
  // No thread cache: frees go straight back, addresses reused at once, arenas emptied.
  run_on_fake_os(dropalloc::backing::droppable, 3404, "six slots", 6, /*thread_cache=*/false);
}
