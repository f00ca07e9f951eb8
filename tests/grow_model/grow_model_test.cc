// Model-based test of realloc's growth in place (heap::grow_large_in_place,
// allocator/core/large_grow.cc) composed with everything else a core heap
// does: seeded random operations on three owner threads, each with a shadow
// model of its blocks, and one checker thread that probes the handles the
// owners publish (current ones, and those of lives that ended by a free, a
// re-seal or a growth) and the blocks being grown at that moment.
//
// Owner operations: allocate (large blocks, never observed, and small ones),
// grow in place (bigger, huge, invalid, not larger; under the seal_all lock
// or without it, sometimes while the checker hammers the block), observe
// (generation()), write, seal, full rewrite + re-seal, check, force a drop of
// a page (heap drop_for_testing or the fake OS), free, misuse (double free,
// interior and foreign free, growth of a freed address) and the explicit
// refusals (nullptr, 0, interior, stack, small block, the other heap's
// block), seal_all / check_all (exclusive lock: nobody writes meanwhile),
// trim.
//
// Oracles: see README.md. Every failure names the seed, the round, the
// thread and the last operations; the operation choices replay from the seed
// (the interleaving does not).
//
// Knobs (environment): GROW_MODEL_SEED (base seed, default fixed),
// GROW_MODEL_SECONDS (budget per test case, default 6),
// GROW_MODEL_KEEP_GOING=1 (report every oracle that fires, do not stop).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/failure_log.h"
#include "tests/forwarding_os.h"
#include "tests/live_set.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr int kOwners = 3;
constexpr int kSlots = 8;  // published handles per owner
constexpr std::size_t kMaxBlocks = 7;
constexpr std::size_t kMaxLiveBytes = 20 * kMiB;
constexpr std::size_t kNormalGrowCap = 8 * kMiB;

// ---- knobs --------------------------------------------------------------------------

std::uint64_t base_seed() {
  const char* s = std::getenv("GROW_MODEL_SEED");
  return s != nullptr && *s != '\0' ? std::strtoull(s, nullptr, 0) : 20261204;
}
double budget_seconds() {
  const char* s = std::getenv("GROW_MODEL_SECONDS");
  const double v = s != nullptr ? std::atof(s) : 0;
  return v > 0 ? v : 6.0;
}
bool keep_going() {
  const char* s = std::getenv("GROW_MODEL_KEEP_GOING");
  return s != nullptr && *s == '1';
}
using dropalloc::testing::derived_seed;

const char* name(block_state s) { return dropalloc::to_string(s); }
std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}
std::size_t round_page(std::size_t n) { return (n + kPage - 1) / kPage * kPage; }

// ---- contents -----------------------------------------------------------------------

// The word at byte offset `off` (8-aligned) of a block filled with `seed`: no
// zero byte, so every page written holds a witness and a drop always shows.
inline std::uint64_t word_at(std::uint64_t seed, std::size_t off) {
  std::uint64_t z = seed * 0x9e3779b97f4a7c15ull + (off >> 3) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
  z ^= z >> 29;
  return z | 0x0101010101010101ull;
}

// What a block must hold: runs [b, e) of a seed's pattern (seed 0: zeros),
// sorted, covering [0, size). Offsets are multiples of 8.
struct run {
  std::size_t b, e;
  std::uint64_t seed;
};
struct contents {
  std::size_t size = 0;
  std::vector<run> runs;

  void reset(std::size_t n, std::uint64_t seed) {
    size = n;
    runs.assign(1, run{0, n, seed});
  }
  void assign(std::size_t b, std::size_t e, std::uint64_t seed) {
    if (b >= e) return;
    std::vector<run> out;
    for (const run& r : runs) {
      if (r.b < b) out.push_back(run{r.b, std::min(r.e, b), r.seed});
    }
    out.push_back(run{b, e, seed});
    for (const run& r : runs) {
      if (r.e > e) out.push_back(run{std::max(r.b, e), r.e, r.seed});
    }
    runs.clear();
    for (const run& r : out) {
      if (!runs.empty() && runs.back().seed == r.seed && runs.back().e == r.b)
        runs.back().e = r.e;
      else
        runs.push_back(r);
    }
  }
  void grow_to(std::size_t n) {
    if (n <= size) return;
    const std::size_t old = size;
    size = n;
    runs.push_back(run{old, n, 0});
    assign(old, n, 0);  // merges with a zero run before it
  }
  bool nonzero_in(std::size_t b, std::size_t e) const {
    for (const run& r : runs) {
      if (r.seed != 0 && r.b < e && r.e > b) return true;
    }
    return false;
  }
};

void write_run(std::byte* p, std::size_t b, std::size_t e, std::uint64_t seed) {
  for (std::size_t off = b; off < e; off += 8) {
    const std::uint64_t w = word_at(seed, off);
    std::memcpy(p + off, &w, 8);
  }
}

// First offset in [b, e) where memory differs from c, or SIZE_MAX.
std::size_t compare_range(const std::byte* p, const contents& c, std::size_t b, std::size_t e) {
  for (const run& r : c.runs) {
    const std::size_t lo = std::max(r.b, b), hi = std::min(r.e, e);
    if (lo >= hi) continue;
    if (r.seed == 0) {
      if (dropalloc::testing::all_zero(p + lo, hi - lo)) continue;
      for (std::size_t off = lo; off < hi; ++off) {
        if (p[off] != std::byte{0}) return off;
      }
      continue;
    }
    for (std::size_t off = lo; off < hi; off += 8) {
      std::uint64_t w;
      std::memcpy(&w, p + off, 8);
      if (w != word_at(r.seed, off)) return off;
    }
  }
  return SIZE_MAX;
}

// ---- shared state -----------------------------------------------------------------------

// Set by an owner around one growth: the OS layer (serialized_fake below)
// fails that growth's mremap, or its metadata maps.
thread_local bool t_fail_extend = false;
thread_local bool t_fail_metadata = false;

struct handle {
  std::byte* p;
  std::uint64_t gen;
};

// Every generation handed out per address (by any owner's generation(),
// seal() or a checker's racing generation()): the lives at one address come
// one after the other, and each new life's first generation must be above
// all of them.
class generation_registry {
 public:
  void record(const void* p, std::uint64_t g) {
    std::lock_guard<std::mutex> l(m_);
    auto& e = at_[reinterpret_cast<std::uintptr_t>(p)];
    e.max = std::max(e.max, g);
    if (std::find(e.all.begin(), e.all.end(), g) == e.all.end()) {
      if (e.all.size() >= 32) e.all.erase(e.all.begin());
      e.all.push_back(g);
    }
  }
  std::uint64_t max(const void* p) {
    std::lock_guard<std::mutex> l(m_);
    auto it = at_.find(reinterpret_cast<std::uintptr_t>(p));
    return it == at_.end() ? 0 : it->second.max;
  }
  std::vector<std::uint64_t> all(const void* p) {
    std::lock_guard<std::mutex> l(m_);
    auto it = at_.find(reinterpret_cast<std::uintptr_t>(p));
    return it == at_.end() ? std::vector<std::uint64_t>{} : it->second.all;
  }

 private:
  struct entry {
    std::uint64_t max = 0;
    std::vector<std::uint64_t> all;
  };
  std::mutex m_;
  std::unordered_map<std::uintptr_t, entry> at_;
};

using dropalloc::testing::failure_log;
using dropalloc::testing::live_set;

// Totals over a test case, printed at its end.
struct counters {
  std::atomic<long> ops{0}, grown{0}, grown_huge{0}, grown_within{0}, grow_no_room{0}, grow_refused_ok{0}, races{0},
      injected{0}, race_probes{0}, race_observed{0}, race_grown{0}, race_grown_observed{0}, unlocked{0},
      unlocked_swept{0}, seal_alls{0}, check_alls{0}, drops{0}, checker_probes{0}, checker_intact{0}, ended_probes{0},
      misuse{0};
};

class owner;

struct world {
  core::heap* h = nullptr;
  core::heap* other = nullptr;  // another heap: its blocks are foreign to h
  os::fake_os* fos = nullptr;   // the fake OS layer, if that is what h runs on
  std::uint64_t round_seed = 0;
  int round = 0;
  const char* os_name = "";
  clock_type::time_point deadline;

  // seal_all and check_all run under the exclusive side; every owner
  // operation that writes a block (and most others) under the shared side,
  // so nobody writes an unsealed block during seal_all. The unlocked growth
  // is the exception on purpose (a growth writes nothing).
  std::shared_mutex seal_lock;
  std::atomic<bool> sweeper_waiting{false};
  std::atomic<std::uint64_t> epoch{0};  // seal_alls so far

  // Live blocks per start address, over all owners: allocation and every
  // misuse (double free, free or growth of a freed address) run under
  // addr_lock, so a misuse never hits another owner's new block, and the
  // heap's misuse counter moves only by ours.
  std::mutex addr_lock;
  std::unordered_map<std::uintptr_t, int> live_at;

  generation_registry gens;
  live_set ranges;  // the address ranges of every owner's live blocks

  std::mutex ended_m;
  std::vector<handle> ended;  // handles of lives that ended: must read stale
  std::size_t ended_next = 0;

  std::vector<owner*> owners;
  failure_log* log = nullptr;
  counters* count = nullptr;
  std::atomic<bool> stop_all{false};  // an oracle fired (and not keep_going)
  std::atomic<long> misuse_expected{0};
  void* other_large = nullptr;
  void* other_small = nullptr;

  void add_ended(std::byte* p, std::uint64_t g) {
    if (g == 0) return;
    std::lock_guard<std::mutex> l(ended_m);
    if (ended.size() < 1024)
      ended.push_back(handle{p, g});
    else
      ended[ended_next++ % 1024] = handle{p, g};
  }
  bool pick_ended(dropalloc::testing::rng& r, handle* out) {
    std::lock_guard<std::mutex> l(ended_m);
    if (ended.empty()) return false;
    *out = ended[r.below(ended.size())];
    return true;
  }
  std::string tag() const {
    return std::string("os=") + os_name + " round=" + std::to_string(round) +
           " round_seed=" + std::to_string(round_seed) + " (GROW_MODEL_SEED=" + std::to_string(base_seed()) + ")";
  }
};

// ---- one owner ----------------------------------------------------------------------------

enum class life : std::uint8_t { live, sealed, dropped };
const char* name(life l) { return l == life::live ? "live" : l == life::sealed ? "sealed" : "dropped"; }

struct blk {
  std::byte* p = nullptr;
  std::size_t usable = 0;
  std::size_t request = 0;  // large: the page-rounded request of this life (a reused mapping's usable size is more)
  bool large = false;
  contents now;      // what memory holds
  contents at_seal;  // what the last effective seal vouched for
  life st = life::live;
  bool observed = false;                 // a generation of this life was handed out
  bool lost = false;                     // sealed, and a page with sealed data was dropped since
  bool in_flight = false;                // in an unlocked growth: the sweeper may not know its state
  std::uint64_t gen = 0;                 // of this life, once observed
  std::vector<std::uint64_t> life_gens;  // earlier generations of this life (before re-seals)
  int slot = -1;
};

struct board_slot {
  std::mutex m;
  bool used = false;
  std::byte* p = nullptr;
  std::uint64_t gen = 0;
  std::shared_ptr<const contents> sealed;
};

struct race_slot {
  std::mutex m;
  std::byte* p = nullptr;
  std::size_t old_usable = 0, new_span = 0;
  int observe_pct = 0;  // how often a probe calls generation()
  bool in_flight = false;
  std::vector<std::uint64_t> gens;  // generations the checker was handed
  std::atomic<int> probes{0};
};

struct freed_block {
  std::byte* p;
  bool large;
  std::size_t usable;
  std::uint64_t last_gen;  // 0: never observed
};

class owner {
 public:
  owner(world& w, int id, std::uint64_t seed) : w_(w), h_(*w.h), id_(id), seed_(seed), r_{seed} {}

  std::vector<std::unique_ptr<blk>> blocks;
  std::uint64_t synced_epoch = 0;
  board_slot slots[kSlots];
  race_slot race;

  void go(int max_ops) {
    for (int i = 0; i < max_ops && !stopped(); ++i) {
      if (clock_type::now() > w_.deadline) break;
      step();
      ++w_.count->ops;
    }
    auto lk = shared();
    sync();
    while (!blocks.empty() && !stopped()) op_free(blocks.back().get());
    if (stopped()) {
      // Leave the rest for the heap's destructor (an oracle fired).
      for (auto& b : blocks) retract(b.get());
    }
  }
  bool stopped() const { return w_.stop_all.load(std::memory_order_relaxed); }

 private:
  world& w_;
  core::heap& h_;
  int id_;
  std::uint64_t seed_;
  dropalloc::testing::rng r_;
  long op_no_ = 0;
  std::deque<std::string> recent_;
  std::vector<freed_block> freed_;


  void note(const std::string& s) {
    recent_.push_back("#" + std::to_string(op_no_) + " " + s);
    if (recent_.size() > 12) recent_.pop_front();
  }
  std::string where(const blk& b) const {
    return "block " + hex(b.p) + (b.large ? " large" : " small") + " usable " + std::to_string(b.usable) + " model " +
           name(b.st) + (b.observed ? " observed gen " + std::to_string(b.gen) : " never-observed") +
           (b.lost ? " lost-page" : "");
  }
  bool expect(bool ok, const char* oracle, const std::string& detail) {
    if (ok) return true;
    std::string msg = "ORACLE " + std::string(oracle) + " fired: " + w_.tag() + " owner=" + std::to_string(id_) +
                      " owner_seed=" + std::to_string(seed_) + " op=" + std::to_string(op_no_) + "\n  " + detail +
                      "\n  recent operations of this owner (oldest first):";
    for (const auto& r : recent_) msg += "\n    " + r;
    w_.log->add(oracle, msg);
    if (!keep_going()) w_.stop_all.store(true);
    return false;
  }

  // The shared side of the seal_all lock, letting a waiting sweeper in first
  // (glibc's rwlock prefers readers).
  std::shared_lock<std::shared_mutex> shared() {
    while (w_.sweeper_waiting.load(std::memory_order_acquire)) std::this_thread::yield();
    return std::shared_lock<std::shared_mutex>(w_.seal_lock);
  }

  std::size_t live_bytes() const {
    std::size_t n = 0;
    for (const auto& b : blocks) n += b->usable;
    return n;
  }
  blk* pick() { return blocks.empty() ? nullptr : blocks[r_.below(blocks.size())].get(); }
  blk* pick_growable() {
    std::vector<blk*> c;
    for (auto& b : blocks) {
      if (b->large && b->st == life::live && !b->observed) c.push_back(b.get());
    }
    return c.empty() ? nullptr : c[r_.below(c.size())];
  }

  // Memory against the model: every byte of small blocks; of large ones all
  // of it now and then, otherwise the pages at both ends, at run edges and
  // some at random (a block may be many MiB after a growth).
  void verify(const blk& b, const char* oracle, bool full = false) {
    std::size_t bad = SIZE_MAX;
    if (full || b.now.size <= 256 * kKiB) {
      bad = compare_range(b.p, b.now, 0, b.now.size);
    } else {
      std::vector<std::size_t> pages{0, kPage, b.now.size - kPage, b.now.size - 2 * kPage};
      for (const run& r : b.now.runs) {
        pages.push_back(r.b / kPage * kPage);
        if (r.e > kPage) pages.push_back((r.e - 1) / kPage * kPage);
      }
      for (int i = 0; i < 6; ++i) pages.push_back(r_.below(b.now.size / kPage) * kPage);
      for (std::size_t pg : pages) {
        if (pg >= b.now.size) continue;
        bad = compare_range(b.p, b.now, pg, std::min(pg + kPage, b.now.size));
        if (bad != SIZE_MAX) break;
      }
    }
    if (bad == SIZE_MAX) return;
    std::uint64_t got;
    std::memcpy(&got, b.p + bad / 8 * 8, 8);
    std::uint64_t seed = 0;
    for (const run& r : b.now.runs) {
      if (r.b <= bad && bad < r.e) seed = r.seed;
    }
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  ": memory differs from the model at offset %zu (word %#" PRIx64 ", model %s %#" PRIx64 ")", bad, got,
                  seed == 0 ? "zero" : "seed", seed == 0 ? 0 : word_at(seed, bad / 8 * 8));
    expect(false, oracle, where(b) + buf);
  }

  // What check(p, gen) of the current life may answer.
  block_state expected_check(const blk& b) const {
    if (b.st == life::live) return block_state::unsealed;
    if (b.st == life::sealed && !b.lost) return block_state::intact;
    return block_state::dropped;
  }

  void record_gen(blk* b, std::uint64_t g) {
    if (b->observed && g != b->gen) {
      b->life_gens.push_back(b->gen);
      w_.add_ended(b->p, b->gen);
    }
    b->observed = true;
    b->gen = g;
    w_.gens.record(b->p, g);
  }
  // The first generation of a life must lie above every generation handed
  // out at its address before (earlier lives, ended by a free or a growth).
  void first_gen(blk* b, std::uint64_t g, std::uint64_t floor, const char* how) {
    expect(g != 0, "generation-zero-for-live-block", where(*b) + ": " + how + " gave 0");
    expect(g > floor, "new-life-generation-not-above-earlier-lives",
           where(*b) + ": " + how + " gave " + std::to_string(g) + ", but " + std::to_string(floor) +
               " was handed out at this address before");
    record_gen(b, g);
  }

  // Handles of ended lives at b's address (and of this life before a
  // re-seal) must read stale.
  void check_ended_at(const blk& b) {
    for (std::uint64_t g : w_.gens.all(b.p)) {
      if (b.observed && g == b.gen) continue;
      block_state s = h_.check(b.p, g);
      expect(s == block_state::stale, "ended-handle-not-stale",
             where(b) + ": check of generation " + std::to_string(g) + " (an earlier life or seal) said " + name(s));
    }
  }

  void publish(blk* b) {
    if (b->slot >= 0 || !b->observed || b->st == life::live) return;
    for (int i = 0; i < kSlots; ++i) {
      board_slot& s = slots[i];
      std::lock_guard<std::mutex> l(s.m);
      if (s.used) continue;
      s.used = true;
      s.p = b->p;
      s.gen = b->gen;
      s.sealed = std::make_shared<const contents>(b->at_seal);
      b->slot = i;
      return;
    }
  }
  // Before anything that may change the block's generation or contents (or
  // free it): the checker holds the slot's lock while it reads and checks.
  void retract(blk* b) {
    if (b->slot < 0) return;
    board_slot& s = slots[b->slot];
    std::lock_guard<std::mutex> l(s.m);
    s.used = false;
    s.sealed.reset();
    b->slot = -1;
  }

  // A seal_all since this owner's last operation sealed every live block
  // of it (owners hold the shared lock during their operations, so it ran
  // between two of them) with what it held.
  void sync(const blk* skip = nullptr) {
    const std::uint64_t e = w_.epoch.load(std::memory_order_acquire);
    if (e == synced_epoch) return;
    synced_epoch = e;
    for (auto& bp : blocks) {
      blk* b = bp.get();
      if (b == skip || b->st != life::live) continue;
      sealed_by_sweep(b);
    }
  }
  void sealed_by_sweep(blk* b) {
    b->st = life::sealed;
    b->at_seal = b->now;
    b->lost = false;
    const std::uint64_t g = h_.generation(b->p);
    if (b->observed) {
      expect(g == b->gen, "seal_all-moved-generation-of-live-block",
             where(*b) + ": generation() after seal_all " + std::to_string(g));
      record_gen(b, g);
    } else {
      first_gen(b, g, w_.gens.max(b->p), "generation() after seal_all");
    }
    publish(b);
  }

  // ---- the operations --------------------------------------------------------------------

  void step() {
    ++op_no_;
    const std::uint64_t u = r_.below(1000);
    if (u < 10) return op_sweep(false);
    if (u < 18) return op_sweep(true);
    if (u < 26) {
      note("trim");
      h_.trim();
      return;
    }
    auto lk = shared();
    sync();
    blk* b = pick();
    const bool full = blocks.size() >= kMaxBlocks || live_bytes() >= kMaxLiveBytes;
    if (b == nullptr || (u < 180 && !full)) return op_allocate();
    if (u < 430) {
      blk* g = r_.chance(75) ? pick_growable() : nullptr;
      return op_grow(g != nullptr ? g : b, lk);
    }
    if (u < 480) return op_observe(b);
    if (u < 560) return op_write(b);
    if (u < 640) return op_seal(b);
    if (u < 700) return op_drop(b);
    if (u < 790) return op_check(b);
    if (u < 850) return op_free(b);
    if (u < 880) return op_rewrite(b);
    if (u < 930) return op_misuse();
    if (u < 970) return op_refusals(b);
    return op_check(b);
  }

  void op_allocate() {
    const bool large = r_.chance(65);
    std::size_t size;
    if (large) {
      size = core::kMaxClassSize + 1 + r_.below(r_.chance(85) ? 768 * kKiB : 3 * kMiB);
    } else {
      size = r_.chance(70) ? 8 + r_.below(4096) : 4097 + r_.below(64 * kKiB);
    }
    const std::size_t aligns[] = {16, 16, 16, 64, 4096, 64 * kKiB, 8 * kMiB};
    const std::size_t align = aligns[r_.below(large ? 7 : 5)];
    note("allocate " + std::to_string(size) + " aligned " + std::to_string(align));
    void* raw;
    {
      std::lock_guard<std::mutex> l(w_.addr_lock);
      core::alloc_error err = core::alloc_error::none;
      raw = h_.allocate(size, align, &err);
      if (raw != nullptr) ++w_.live_at[reinterpret_cast<std::uintptr_t>(raw)];
    }
    if (!expect(raw != nullptr, "allocate-failed", "allocate(" + std::to_string(size) + ") returned nullptr")) return;
    expect(reinterpret_cast<std::uintptr_t>(raw) % align == 0, "allocate-misaligned", hex(raw));
    auto b = std::make_unique<blk>();
    b->p = static_cast<std::byte*>(raw);
    b->large = size > core::kMaxClassSize;
    b->request = b->large ? round_page(size) : 0;
    const std::size_t usable = h_.usable_size(raw);
    expect(usable >= size && usable % 8 == 0, "usable-size-short",
           "allocate(" + std::to_string(size) + ") -> " + hex(raw) + " usable " + std::to_string(usable));
    b->usable = usable;
    std::uintptr_t hit = 0;
    expect(w_.ranges.add(raw, usable, &hit), "allocate-overlaps-live-block",
           "new block " + hex(raw) + "+" + std::to_string(usable) + " overlaps the live block at " +
               hex(reinterpret_cast<void*>(hit)));
    // Nobody can have a handle of it, nor may anyone seal it right now.
    const std::uint64_t seed = r_.next() | 1;
    write_run(b->p, 0, usable, seed);
    b->now.reset(usable, seed);
    note("  -> " + where(*b));
    blocks.push_back(std::move(b));
  }

  // realloc's growth in place, with every outcome checked against the model.
  void op_grow(blk* b, std::shared_lock<std::shared_mutex>& lk) {
    const std::size_t old = b->usable;
    std::size_t bytes;
    const std::uint64_t k = r_.below(100);
    if (k < 60) {
      if (old >= kNormalGrowCap)
        bytes = old + kPage;
      else if (k < 8)
        bytes = old + 1;
      else
        bytes = std::min(old + kPage * (1 + r_.below(std::max<std::size_t>(1, old / kPage))), kNormalGrowCap);
    } else if (k < 66) {
      bytes = r_.chance(50) ? 256 * kMiB : 1024 * kMiB;
    } else if (k < 73) {
      // Past kMaxRequest; and 32 TiB, accepted as a request but past what a
      // header can count (2^32 pages): refused after the claim, undone.
      const std::size_t bad[] = {core::kMaxRequest + 1, SIZE_MAX, 0, SIZE_MAX - kPage + 2, std::size_t{1} << 45};
      bytes = bad[r_.below(5)];
    } else {
      const std::size_t same[] = {old, old - 1, old / 2, 1, old > kPage ? old - kPage : old};
      bytes = same[r_.below(5)];
    }
    // Growth is above the life's request, which for a reused mapping is less
    // than its usable size (the mapping's): up to the usable size the block
    // grows within its mapping (nothing mapped, the header and usable size
    // as they were), past it the mapping is extended.
    const bool may = b->large && b->st == life::live && !b->observed && bytes != 0 && bytes <= core::kMaxRequest &&
                     bytes < (std::size_t{1} << 44) && round_page(bytes) > b->request;
    const bool within = may && round_page(bytes) <= old;
    // An injected failure of the mremap or of the new header's metadata.
    const std::uint64_t inject = may && !within ? (r_.chance(12) ? 1 + r_.below(2) : 0) : 0;
    const std::size_t span = may ? (within ? old : round_page(bytes)) : 0;
    const bool huge = span > 64 * kMiB;
    const bool racing = may && r_.chance(40);
    const bool unlocked = may && !huge && r_.chance(30);
    const std::uint64_t floor = w_.gens.max(b->p);
    note("grow_large_in_place " + where(*b) + " to " + std::to_string(bytes) + (racing ? " racing the checker" : "") +
         (unlocked ? " without the seal_all lock" : ""));

    if (racing) {
      {
        std::lock_guard<std::mutex> l(race.m);
        race.p = b->p;
        race.old_usable = old;
        race.new_span = span;
        const int pcts[] = {0, 1, 10, 100};
        race.observe_pct = pcts[r_.below(4)];
        race.gens.clear();
        race.probes.store(0);
      }
      // Let the checker start probing this very block.
      for (int i = 0; i < 2000 && race.probes.load() == 0 && !stopped(); ++i) std::this_thread::yield();
      ++w_.count->races;
    }
    if (unlocked) {
      b->in_flight = true;
      lk.unlock();
      ++w_.count->unlocked;
    }
    t_fail_extend = inject == 1;
    t_fail_metadata = inject == 2;
    const bool ok = h_.grow_large_in_place(b->p, bytes);
    t_fail_extend = t_fail_metadata = false;
    if (inject != 0) ++w_.count->injected;
    if (unlocked) {
      lk = shared();
      b->in_flight = false;
    }
    std::vector<std::uint64_t> seen;
    if (racing) {
      {
        std::lock_guard<std::mutex> l(race.m);
        race.p = nullptr;
      }
      for (;;) {
        std::lock_guard<std::mutex> l(race.m);
        if (!race.in_flight) {
          seen.swap(race.gens);
          break;
        }
      }
      w_.count->race_probes += race.probes.load();
    }
    // A seal_all that ran while the growth was unlocked sealed this block if
    // it found it live (old header or new), or skipped it (claimed).
    const bool swept = unlocked && w_.epoch.load(std::memory_order_acquire) != synced_epoch;
    if (swept) {
      ++w_.count->unlocked_swept;
      sync(b);
    }
    note(std::string("  -> ") + (ok ? "grown" : "refused") + (seen.empty() ? "" : ", checker observed it") +
         (swept ? ", a seal_all ran meanwhile" : ""));

    if (!expect(!ok || (may && inject == 0), "grow-accepted-what-must-be-refused",
                where(*b) + ": grow_large_in_place(" + std::to_string(bytes) + ") returned true")) {
      return;
    }
    if (ok) {
      ++w_.count->grown;
      if (huge) ++w_.count->grown_huge;
      if (within) ++w_.count->grown_within;
      const std::size_t now_usable = h_.usable_size(b->p);
      expect(now_usable == span, "usable-size-after-growth",
             where(*b) + ": grown to " + std::to_string(bytes) + ", usable_size " + std::to_string(now_usable) +
                 " (want " + std::to_string(span) + ")");
      b->usable = span;
      b->request = round_page(bytes);
      b->now.grow_to(span);
      std::uintptr_t hit = 0;
      expect(w_.ranges.resize(b->p, span, &hit), "grown-block-overlaps-live-block",
             where(*b) + ": after the growth it reaches the live block at " + hex(reinterpret_cast<void*>(hit)));
      // The old bytes as they were, the new ones zero (sampled past 8 MiB).
      if (old <= 256 * kKiB || r_.chance(25)) {
        const std::size_t bad = compare_range(b->p, b->now, 0, old);
        expect(bad == SIZE_MAX, "old-bytes-changed-by-growth", where(*b) + ": offset " + std::to_string(bad));
      }
      if (span - old <= kNormalGrowCap) {
        expect(dropalloc::testing::all_zero(b->p + old, span - old), "new-bytes-not-zero",
               where(*b) + ": [" + std::to_string(old) + ", " + std::to_string(span) + ") after the growth");
      }
      verify(*b, "memory-differs-after-growth");
      check_ended_at(*b);
    } else {
      if (may && inject == 0) {
        if (seen.empty() && !swept) ++w_.count->grow_no_room;
      } else {
        ++w_.count->grow_refused_ok;
      }
      const std::size_t now_usable = h_.usable_size(b->p);
      expect(now_usable == old, "refused-growth-changed-usable-size",
             where(*b) + ": usable_size " + std::to_string(now_usable) + " after a refused growth to " +
                 std::to_string(bytes));
      verify(*b, "refused-growth-changed-bytes");
      if (b->observed) {
        const std::uint64_t g = h_.generation(b->p);
        expect(g == b->gen, "refused-growth-changed-generation", where(*b) + ": generation() now " + std::to_string(g));
        const block_state s = h_.check(b->p, b->gen);
        expect(s == expected_check(*b), "refused-growth-changed-check",
               where(*b) + ": check said " + name(s) + ", the model says " + name(expected_check(*b)));
      }
    }
    if (racing && ok) {
      ++w_.count->race_grown;
      if (!seen.empty()) ++w_.count->race_grown_observed;
    }
    if (!seen.empty()) {
      ++w_.count->race_observed;
      // The checker observed the block at some point of the race: the life
      // it saw must be the one there now (a growth claims only blocks never
      // observed, and an observed block is never claimed).
      const std::uint64_t g = h_.generation(b->p);
      for (std::uint64_t s : seen) {
        expect(s == g, "checker-observed-a-life-that-ended",
               where(*b) + ": the checker's generation() during the " + (ok ? "successful" : "refused") +
                   " growth gave " + std::to_string(s) + ", the block's is " + std::to_string(g));
      }
      if (b->observed) {
        expect(g == b->gen, "generation-changed", where(*b) + ": generation() " + std::to_string(g));
        record_gen(b, g);
      } else {
        first_gen(b, g, floor, "generation() after a raced growth");
      }
    }
    if (swept) {
      // Sealed by the sweep or not: ask (the block may be observed now).
      const std::uint64_t g = h_.generation(b->p);
      if (b->observed) {
        expect(g == b->gen, "generation-changed", where(*b) + ": generation() " + std::to_string(g));
        record_gen(b, g);
      } else {
        first_gen(b, g, floor, "generation() after an unlocked growth and a seal_all");
      }
      const block_state s = h_.check(b->p, g);
      if (s == block_state::intact) {
        b->st = life::sealed;
        b->at_seal = b->now;
        b->lost = false;
        publish(b);
      } else {
        expect(s == block_state::unsealed, "check-after-unlocked-growth",
               where(*b) + ": check said " + name(s) + " (want unsealed, or intact if the seal_all sealed it)");
      }
    } else if (ok && seen.empty() && r_.chance(50)) {
      first_gen(b, h_.generation(b->p), floor, "generation() after a growth");
      const block_state s = h_.check(b->p, b->gen);
      expect(s == block_state::unsealed, "grown-block-not-unsealed", where(*b) + ": check said " + name(s));
    }
    if (ok && huge) op_free(b);  // a seal_all would read every page of it
  }

  void op_observe(blk* b) {
    note("generation() of " + where(*b));
    const std::uint64_t floor = w_.gens.max(b->p);
    const std::uint64_t g = h_.generation(b->p);
    if (b->observed) {
      expect(g == b->gen, "generation-changed", where(*b) + ": generation() now " + std::to_string(g));
    } else {
      first_gen(b, g, floor, "generation()");
    }
  }

  // Writes into a live block: pages of a large one, all of a small one.
  void op_write(blk* b) {
    if (b->st != life::live) return op_rewrite(b);
    std::size_t lo = 0, hi = b->usable;
    if (b->large && r_.chance(70)) {
      const std::size_t pages = b->usable / kPage;
      lo = r_.below(pages) * kPage;
      hi = std::min(b->usable, lo + (1 + r_.below(8)) * kPage);
    }
    const std::uint64_t seed = r_.next() | 1;
    note("write [" + std::to_string(lo) + ", " + std::to_string(hi) + ") of " + where(*b));
    write_run(b->p, lo, hi, seed);
    b->now.assign(lo, hi, seed);
  }

  // A sealed or dropped block rewritten as a whole and sealed again.
  void op_rewrite(blk* b) {
    if (b->st == life::live) return op_write(b);
    retract(b);
    const std::uint64_t seed = r_.next() | 1;
    const bool rewritten = r_.chance(50);
    note(std::string("rewrite all, then ") + (rewritten ? "seal_rewritten " : "seal ") + where(*b));
    write_run(b->p, 0, b->usable, seed);
    b->now.reset(b->usable, seed);
    const std::uint64_t old = b->gen;
    std::uint64_t sg = 0;
    const block_state s = rewritten ? h_.seal_rewritten(b->p, &sg) : h_.seal(b->p, &sg);
    // Every witness was rewritten with non-zero words: seal() finds no loss
    // unless a check had already found the block dropped (then it stays so).
    const bool dropped_allowed = !rewritten && (b->st == life::dropped || b->lost);
    const bool intact_allowed = rewritten || b->st == life::sealed;
    expect((s == block_state::intact && intact_allowed) || (s == block_state::dropped && dropped_allowed),
           "rewrite-seal-answer", where(*b) + ": said " + name(s));
    after_seal(b, s, sg, old);
  }

  void after_seal(blk* b, block_state s, std::uint64_t sg, std::uint64_t old) {
    const std::uint64_t g = h_.generation(b->p);
    if (s == block_state::intact) {
      expect(sg == g, "sealed-generation-mismatch",
             where(*b) + ": seal gave " + std::to_string(sg) + ", generation() " + std::to_string(g));
      expect(g > old, "reseal-kept-generation", where(*b) + ": re-sealed at " + std::to_string(g));
      b->st = life::sealed;
      b->at_seal = b->now;
      b->lost = false;
    } else {
      expect(g >= old, "generation-went-back", where(*b) + ": now " + std::to_string(g));
      b->st = life::dropped;
    }
    record_gen(b, g);
    if (g != old) {
      const block_state o = h_.check(b->p, old);
      expect(o == block_state::stale, "old-seal-handle-not-stale",
             where(*b) + ": generation " + std::to_string(old) + " before the seal said " + name(o));
    }
    publish(b);
  }

  void op_seal(blk* b) {
    if (b->st != life::live) {
      retract(b);
      note("re-seal " + where(*b));
      const std::uint64_t old = b->gen;
      std::uint64_t sg = 0;
      const block_state s = h_.seal(b->p, &sg);
      const block_state want = (b->st == life::sealed && !b->lost) ? block_state::intact : block_state::dropped;
      expect(s == want, "reseal-answer", where(*b) + ": seal() said " + name(s) + ", want " + name(want));
      after_seal(b, s, sg, old);
      return;
    }
    note("seal " + where(*b));
    const std::uint64_t floor = w_.gens.max(b->p);
    std::uint64_t sg = 0;
    const block_state s = h_.seal(b->p, &sg);
    expect(s == block_state::intact, "seal-of-live-block", where(*b) + ": seal() said " + name(s));
    if (b->observed) {
      expect(sg == b->gen, "first-seal-moved-generation", where(*b) + ": sealed at " + std::to_string(sg));
      record_gen(b, sg);
    } else {
      first_gen(b, sg, floor, "seal()");
    }
    if (s == block_state::intact) {
      b->st = life::sealed;
      b->at_seal = b->now;
      b->lost = false;
    } else {
      b->st = life::dropped;
    }
    publish(b);
  }

  // Zeroes a page wholly inside the block, as the kernel's drop would.
  void op_drop(blk* b) {
    const auto a = reinterpret_cast<std::uintptr_t>(b->p);
    std::uintptr_t first = (a + kPage - 1) / kPage * kPage;
    if (first + kPage > a + b->usable) return op_check(b);
    const std::size_t n = (a + b->usable - first) / kPage;
    const std::uintptr_t page = first + r_.below(n) * kPage;
    const bool via_fake = w_.fos != nullptr && r_.chance(30);
    note("drop page " + hex(reinterpret_cast<void*>(page)) + (via_fake ? " (fake OS)" : "") + " of " + where(*b));
    const int rc = via_fake ? w_.fos->drop_pages(reinterpret_cast<void*>(page), kPage)
                            : h_.drop_for_testing(reinterpret_cast<void*>(page), kPage);
    expect(rc == 0, "drop_for_testing-refused-own-page", where(*b) + ": rc " + std::to_string(rc));
    ++w_.count->drops;
    const std::size_t off = page - a;
    if (b->st == life::sealed && b->at_seal.nonzero_in(off, off + kPage)) b->lost = true;
    b->now.assign(off, off + kPage, 0);
  }

  void op_check(blk* b) {
    note("check " + where(*b));
    verify(*b, "memory-differs-from-model", r_.chance(10));
    if (!b->observed && r_.chance(30)) op_observe(b);
    if (b->observed) {
      const block_state want = expected_check(*b);
      const block_state s = h_.check(b->p, b->gen);
      expect(s == want, "check-answer", where(*b) + ": check said " + name(s) + ", the model says " + name(want));
      if (s == block_state::dropped) b->st = life::dropped;
    }
    check_ended_at(*b);
  }

  void op_free(blk* b) {
    note("free " + where(*b));
    retract(b);
    verify(*b, "memory-differs-before-free");
    std::byte* p = b->p;
    const std::uint64_t g = b->observed ? b->gen : 0;
    std::vector<std::uint64_t> gens = b->life_gens;
    if (g != 0) gens.push_back(g);
    const bool large = b->large;
    const std::size_t usable = b->usable;
    // Out of the live ranges before the free: from the free on, another
    // owner may be handed the same addresses.
    expect(w_.ranges.remove(p), "freed-block-not-in-live-set", where(*b));
    h_.deallocate(p);
    {
      std::lock_guard<std::mutex> l(w_.addr_lock);
      --w_.live_at[reinterpret_cast<std::uintptr_t>(p)];
    }
    for (std::uint64_t og : gens) {
      const block_state s = h_.check(p, og);
      expect(s == block_state::stale, "freed-handle-not-stale",
             "freed " + hex(p) + " generation " + std::to_string(og) + ": check said " + name(s));
      w_.add_ended(p, og);
    }
    if (freed_.size() >= 32) freed_.erase(freed_.begin());
    freed_.push_back(freed_block{p, large, usable, g});
    blocks.erase(std::find_if(blocks.begin(), blocks.end(), [&](const auto& x) { return x.get() == b; }));
  }

  // Double free, interior and foreign free, growth of a freed address: all
  // refused, counted (frees), and nothing lost.
  void op_misuse() {
    std::lock_guard<std::mutex> l(w_.addr_lock);
    const std::uint64_t kind = r_.below(4);
    auto refused_free = [&](void* p, const char* oracle, const std::string& what) {
      const std::uint64_t before = h_.stats().misuse_refused;
      h_.deallocate(p);
      const std::uint64_t after = h_.stats().misuse_refused;
      ++w_.misuse_expected;
      ++w_.count->misuse;
      expect(after == before + 1, oracle,
             what + ": misuse_refused " + std::to_string(before) + " -> " + std::to_string(after));
    };
    if (kind <= 1 && !freed_.empty()) {
      const freed_block f = freed_[r_.below(freed_.size())];
      if (w_.live_at[reinterpret_cast<std::uintptr_t>(f.p)] != 0) return;  // handed out again: legal
      if (kind == 0) {
        note("double free " + hex(f.p));
        refused_free(f.p, "double-free-not-refused", "double free of " + hex(f.p));
      } else {
        note("grow freed " + hex(f.p));
        const bool ok = h_.grow_large_in_place(f.p, f.usable * 2);
        expect(!ok, "grow-of-freed-block-accepted", "freed " + hex(f.p) + " grew");
      }
      if (f.last_gen != 0) {
        const block_state s = h_.check(f.p, f.last_gen);
        expect(s == block_state::stale, "freed-handle-not-stale",
               "freed " + hex(f.p) + " generation " + std::to_string(f.last_gen) + ": check said " + name(s));
      }
      return;
    }
    if (kind == 2) {
      blk* b = pick();
      if (b == nullptr || b->usable < 32) return;
      const std::size_t off = b->large && r_.chance(50) ? kPage : 16;
      note("interior free at +" + std::to_string(off) + " of " + where(*b));
      refused_free(b->p + off, "interior-free-not-refused", "interior free inside " + where(*b));
      expect(h_.usable_size(b->p) == b->usable, "interior-free-freed-block", where(*b));
      verify(*b, "interior-free-changed-bytes");
      return;
    }
    std::uint64_t local[4] = {1, 2, 3, 4};
    note("foreign free of a stack address");
    refused_free(local, "foreign-free-not-refused", "free of a stack address");
    expect(local[0] == 1, "foreign-free-wrote", "the stack word changed");
  }

  // Growths that must be refused whatever the block: not a block start of
  // this heap, a small block, another heap's.
  void op_refusals(blk* b) {
    note("refusals around " + where(*b));
    std::uint64_t local[8] = {};
    struct attempt {
      core::heap* h;
      void* p;
      std::size_t bytes;
      const char* what;
    } tries[] = {
        {&h_, nullptr, 2 * kMiB, "nullptr"},
        {&h_, b->p, 0, "0 bytes"},
        {&h_, b->p + 16, b->usable * 2, "interior +16"},
        {&h_, b->p + kPage, b->usable * 2, "interior +4096"},
        {&h_, local, 2 * kMiB, "stack address"},
        {&h_, w_.other_large, 4 * kMiB, "another heap's large block"},
        {&h_, w_.other_small, 4 * kMiB, "another heap's small block"},
        {w_.other, b->p, b->usable * 2, "this heap's block, asked of another heap"},
    };
    for (const attempt& t : tries) {
      // An offset past the block may be the start of someone else's block.
      if ((t.p == b->p + kPage && b->usable <= kPage) || (t.p == b->p + 16 && b->usable <= 16)) continue;
      const bool ok = t.h->grow_large_in_place(t.p, t.bytes);
      expect(!ok, "grow-accepted-what-must-be-refused", std::string(t.what) + " around " + where(*b) + " grew");
    }
    if (!b->large) {
      const bool ok = h_.grow_large_in_place(b->p, core::kMaxClassSize * 2);
      expect(!ok, "grow-accepted-small-block", where(*b) + " grew");
    }
    expect(h_.usable_size(b->p) == b->usable, "refused-growth-changed-usable-size", where(*b));
    expect(w_.other->usable_size(w_.other_large) >= 300 * kKiB && dropalloc::testing::holds(w_.other_large, 4096, 77),
           "other-heap-block-changed", "another heap's large block changed");
    verify(*b, "refused-growth-changed-bytes");
    if (b->observed) {
      const std::uint64_t g = h_.generation(b->p);
      expect(g == b->gen, "refused-growth-changed-generation", where(*b) + ": generation() " + std::to_string(g));
    }
  }

  // seal_all or check_all, with every owner between two operations (the
  // exclusive lock); a block in an unlocked growth may go either way.
  void op_sweep(bool check_all) {
    note(check_all ? "check_all" : "seal_all");
    w_.sweeper_waiting.store(true, std::memory_order_release);
    std::unique_lock<std::shared_mutex> lk(w_.seal_lock);
    w_.sweeper_waiting.store(false, std::memory_order_release);
    const std::uint64_t e = w_.epoch.load();
    // [lo, hi] of intact, unsealed, dropped, as the models say.
    std::uint64_t lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
    std::uint64_t live_lo = 0, live_hi = 0;
    for (owner* o : w_.owners) {
      for (const auto& bp : o->blocks) {
        const blk& b = *bp;
        if (b.in_flight) {  // live, claimed (skipped), or grown and perhaps sealed by an earlier seal_all
          ++live_hi;
          ++hi[0];
          ++hi[1];
          continue;
        }
        block_state s;
        if (b.st == life::live)
          s = o->synced_epoch == e ? block_state::unsealed : block_state::intact;
        else
          s = o->expected_check(b);
        const int i = s == block_state::intact ? 0 : s == block_state::unsealed ? 1 : 2;
        ++lo[i];
        ++hi[i];
        if (s == block_state::unsealed) {
          ++live_lo;
          ++live_hi;
        }
      }
    }
    if (!check_all) {
      ++w_.count->seal_alls;
      const std::size_t n = h_.seal_all();
      expect(n >= live_lo && n <= live_hi, "seal_all-count",
             "seal_all sealed " + std::to_string(n) + ", the models allow " + std::to_string(live_lo) + ".." +
                 std::to_string(live_hi));
      w_.epoch.store(e + 1, std::memory_order_release);
      return;
    }
    ++w_.count->check_alls;
    const core::sweep_result r = h_.check_all();
    const std::uint64_t got[3] = {r.intact, r.unsealed, r.dropped};
    const char* names[3] = {"intact", "unsealed", "dropped"};
    for (int i = 0; i < 3; ++i) {
      expect(got[i] >= lo[i] && got[i] <= hi[i], "check_all-counts",
             std::string("check_all counted ") + std::to_string(got[i]) + " " + names[i] + ", the models allow " +
                 std::to_string(lo[i]) + ".." + std::to_string(hi[i]));
    }
  }
};

// ---- the checker ---------------------------------------------------------------------------

class checker {
 public:
  checker(world& w, std::uint64_t seed) : w_(w), h_(*w.h), r_{seed} {}
  std::atomic<bool> stop{false};

  void go() {
    while (!stop.load(std::memory_order_acquire) && !w_.stop_all.load()) {
      bool raced = false;
      for (owner* o : w_.owners) raced |= probe_race(*o);
      if (raced) continue;
      ++w_.count->checker_probes;
      const std::uint64_t u = r_.below(100);
      if (u < 50)
        probe_board();
      else if (u < 95)
        probe_ended();
      else
        probe_foreign();
    }
  }

 private:
  world& w_;
  core::heap& h_;
  dropalloc::testing::rng r_;

  void fail(const char* oracle, const std::string& detail) {
    w_.log->add(oracle,
                "ORACLE " + std::string(oracle) + " fired on the checker thread: " + w_.tag() + "\n  " + detail);
    if (!keep_going()) w_.stop_all.store(true);
  }

  // The block an owner is growing right now: observe it, ask its size and
  // its check, and check the ended handles at its address.
  bool probe_race(owner& o) {
    race_slot& rs = o.race;
    std::byte* p;
    std::size_t old_usable, new_span;
    int observe_pct;
    {
      std::lock_guard<std::mutex> l(rs.m);
      if (rs.p == nullptr) return false;
      p = rs.p;
      old_usable = rs.old_usable;
      new_span = rs.new_span;
      observe_pct = rs.observe_pct;
      rs.in_flight = true;
    }
    std::uint64_t g = 0;
    if (r_.below(100) < static_cast<std::uint64_t>(observe_pct)) g = h_.generation(p);
    const std::size_t u = h_.usable_size(p);
    if (u != 0 && u != old_usable && u != new_span) {
      fail("racing-usable-size", "usable_size(" + hex(p) + ") = " + std::to_string(u) + " while it grows from " +
                                     std::to_string(old_usable) + " to " + std::to_string(new_span));
    }
    if (g != 0) {
      const block_state s = h_.check(p, g);
      if (s != block_state::unsealed && s != block_state::intact) {
        fail("racing-check-of-observed-life",
             "check(" + hex(p) + ", " + std::to_string(g) + ") just after generation() said " + name(s));
      }
    }
    for (std::uint64_t eg : w_.gens.all(p)) {
      if (eg == g) continue;
      const block_state s = h_.check(p, eg);
      // Every generation recorded at p belongs to a life that ended before
      // this one began (this life was never observed before the race).
      if (s != block_state::stale) {
        fail(s == block_state::intact ? "ended-handle-intact" : "ended-handle-not-stale",
             "check(" + hex(p) + ", " + std::to_string(eg) + ") of an earlier life, during a growth, said " + name(s));
      }
    }
    {
      std::lock_guard<std::mutex> l(rs.m);
      if (g != 0) rs.gens.push_back(g);
      rs.in_flight = false;
    }
    rs.probes.fetch_add(1);
    return true;
  }

  // A published (sealed) handle: copy some pages, then check (the safe read
  // protocol). The owner cannot free, rewrite or re-seal it while the slot
  // is held; it can drop its pages, and seal_all/check_all may run.
  void probe_board() {
    owner& o = *w_.owners[r_.below(w_.owners.size())];
    board_slot& s = o.slots[r_.below(kSlots)];
    std::lock_guard<std::mutex> l(s.m);
    if (!s.used) return;
    const contents& c = *s.sealed;
    std::size_t offs[3] = {0, 0, 0};
    const std::size_t pages = (c.size + kPage - 1) / kPage;
    offs[1] = r_.below(pages) * kPage;
    offs[2] = (pages - 1) * kPage;
    std::vector<std::byte> copy(3 * kPage);
    for (int i = 0; i < 3; ++i) {
      const std::size_t n = std::min(kPage, c.size - offs[i]);
      std::memcpy(copy.data() + i * kPage, s.p + offs[i], n);
    }
    const block_state st = h_.check(s.p, s.gen);
    if (st != block_state::intact && st != block_state::dropped) {
      fail("published-handle-answer",
           "check(" + hex(s.p) + ", " + std::to_string(s.gen) + ") of a sealed block its owner holds said " + name(st));
      return;
    }
    if (st != block_state::intact) return;
    ++w_.count->checker_intact;
    for (int i = 0; i < 3; ++i) {
      const std::size_t n = std::min(kPage, c.size - offs[i]);
      // compare_range wants the block's offsets: shift the copy.
      contents shifted;
      shifted.size = n;
      for (const run& r : c.runs) {
        const std::size_t lo = std::max(r.b, offs[i]), hi = std::min(r.e, offs[i] + n);
        if (lo < hi) shifted.runs.push_back(run{lo - offs[i], hi - offs[i], r.seed});
      }
      for (const run& r : shifted.runs) {
        for (std::size_t off = r.b; off < r.e; off += 8) {
          std::uint64_t wd;
          std::memcpy(&wd, copy.data() + i * kPage + off, 8);
          const std::uint64_t want = r.seed == 0 ? 0 : word_at(r.seed, offs[i] + off);
          if (wd != want) {
            fail("intact-but-copy-differs", "check(" + hex(s.p) + ", " + std::to_string(s.gen) +
                                                ") said intact, but the copy read before it differs at offset " +
                                                std::to_string(offs[i] + off));
            return;
          }
        }
      }
    }
  }

  void probe_ended() {
    handle e;
    if (!w_.pick_ended(r_, &e)) return;
    ++w_.count->ended_probes;
    const block_state s = h_.check(e.p, e.gen);
    if (s != block_state::stale) {
      fail(s == block_state::intact ? "ended-handle-intact" : "ended-handle-not-stale",
           "check(" + hex(e.p) + ", " + std::to_string(e.gen) + ") of a life that ended said " + name(s));
    }
  }

  void probe_foreign() {
    std::uint64_t local[2] = {1, 2};
    block_state s = h_.check(local, r_.next() | 1);
    if (s != block_state::foreign && s != block_state::stale) {
      fail("stack-check", std::string("check(&local) said ") + name(s));
    }
    s = h_.check(nullptr, 0);
    if (s != block_state::foreign) fail("nullptr-check", std::string("check(nullptr) said ") + name(s));
    if (h_.generation(local) != 0 || h_.usable_size(local) != 0)
      fail("stack-generation", "a stack address has a generation");
  }
};

// The fake OS layer keeps plain fields (last_unmapped) that its unmap_arena
// writes: one unmap at a time, so that several freeing threads do not race
// on the test harness (ThreadSanitizer would report that, not the allocator).
struct serialized_fake : dropalloc::testing::forwarding_os {
  using forwarding_os::forwarding_os;
  std::mutex m;
  void unmap_arena(void* p, std::size_t b) noexcept override {
    std::lock_guard<std::mutex> l(m);
    real.unmap_arena(p, b);
  }
  // Failures injected into the calling thread's next growth only.
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override {
    if (t_fail_extend) return ENOMEM;
    return real.extend_arena(p, o, n);
  }
  void* map_metadata(std::size_t b, int* e) noexcept override {
    if (t_fail_metadata) {
      *e = ENOMEM;
      return nullptr;
    }
    return real.map_metadata(b, e);
  }
};

void run_case(const char* os_name, os::fake_os* fos, os::os_interface& layer) {
  failure_log log;
  counters count;
  const auto start = clock_type::now();
  const auto deadline = start + std::chrono::microseconds(static_cast<long long>(budget_seconds() * 1e6));
  std::fprintf(stderr, "[grow_model] %s: GROW_MODEL_SEED=%llu GROW_MODEL_SECONDS=%g backing=%s\n", os_name,
               static_cast<unsigned long long>(base_seed()), budget_seconds(),
               dropalloc::to_string(layer.arena_backing()));
  int rounds = 0;
  for (int round = 0; clock_type::now() < deadline && !(log.any() && !keep_going()); ++round) {
    ++rounds;
    const std::uint64_t seed = derived_seed(base_seed(), static_cast<std::uint64_t>(round));
    core::heap_options opt = dropalloc::testing::with_os_no_decay(&layer);
    opt.empty_arena_decay_ms = (seed & 2) != 0 ? 0 : 600000;  // 0: emptied arenas go back at once (address reuse)
    opt.thread_cache = (seed & 4) != 0 || (seed & 1) != 0;
    core::heap h(opt);
    core::heap other(dropalloc::testing::with_os_no_decay(&layer));
    world w;
    w.h = &h;
    w.other = &other;
    w.fos = fos;
    w.round_seed = seed;
    w.round = round;
    w.os_name = os_name;
    w.deadline = deadline;
    w.log = &log;
    w.count = &count;
    core::alloc_error err = core::alloc_error::none;
    w.other_large = other.allocate(300 * kKiB, 16, &err);
    w.other_small = other.allocate(100, 16, &err);
    REQUIRE(w.other_large != nullptr);
    REQUIRE(w.other_small != nullptr);
    dropalloc::testing::fill(w.other_large, 4096, 77);
    std::vector<std::unique_ptr<owner>> owners;
    for (int i = 0; i < kOwners; ++i) {
      owners.push_back(std::make_unique<owner>(w, i, derived_seed(seed, static_cast<std::uint64_t>(i) + 1)));
      w.owners.push_back(owners.back().get());
    }
    checker c(w, derived_seed(seed, 99));
    std::thread ct([&] { c.go(); });
    std::vector<std::thread> ts;
    for (auto& o : owners) ts.emplace_back([&o] { o->go(400); });
    for (auto& t : ts) t.join();
    c.stop.store(true);
    ct.join();
    if (log.any()) {
      std::fprintf(stderr, "[grow_model] %s: failed in round %d (round seed %llu)\n", os_name, round,
                   static_cast<unsigned long long>(seed));
      if (!keep_going()) break;  // the heaps' destructors unmap what is left
      continue;
    }
    other.deallocate(w.other_large);
    other.deallocate(w.other_small);
    const dropalloc::resource_stats st = h.stats();
    CHECK_MESSAGE(st.blocks_live == 0, w.tag() << ": blocks_live " << st.blocks_live << " after every block was freed");
    CHECK_MESSAGE(
        st.misuse_refused == static_cast<std::uint64_t>(w.misuse_expected.load()),
        w.tag() << ": misuse_refused " << st.misuse_refused << ", the owners made " << w.misuse_expected.load());
    CHECK(other.stats().blocks_live == 0);
    CHECK(other.stats().misuse_refused == 0);
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  std::fprintf(stderr,
               "[grow_model] %s: %d rounds, %ld ops in %.1f s; grown %ld (huge %ld, within a reused mapping %ld), no "
               "room %ld, injected failures "
               "%ld, refused as it must "
               "%ld; races %ld (checker probes during them %ld, observed %ld, grown %ld, grown and the new life "
               "observed during the race %ld); unlocked growths %ld (a seal_all "
               "meanwhile %ld); seal_all %ld, check_all %ld, drops %ld, misuse %ld; checker probes %ld (intact "
               "%ld, ended handles %ld)\n",
               os_name, rounds, count.ops.load(), secs, count.grown.load(), count.grown_huge.load(),
               count.grown_within.load(), count.grow_no_room.load(), count.injected.load(),
               count.grow_refused_ok.load(), count.races.load(), count.race_probes.load(), count.race_observed.load(),
               count.race_grown.load(), count.race_grown_observed.load(), count.unlocked.load(),
               count.unlocked_swept.load(), count.seal_alls.load(), count.check_alls.load(), count.drops.load(),
               count.misuse.load(), count.checker_probes.load(), count.checker_intact.load(),
               count.ended_probes.load());
  if (log.any()) {
    const std::string all = log.all();
    std::fprintf(stderr, "%s", all.c_str());
    FAIL_CHECK("oracle failures (reproduce the operation choices with GROW_MODEL_SEED=" << base_seed() << "):\n"
                                                                                        << all);
  }
  CHECK_MESSAGE(count.grown.load() > 0, "no block grew in place in " << rounds << " rounds");
}

}  // namespace

TEST_CASE("grow model: fake OS layer in droppable mode") {
  os::fake_os fos;
  fos.reported_backing = dropalloc::backing::droppable;
  serialized_fake layer(fos);
  run_case("fake", &fos, layer);
}

TEST_CASE("grow model: real OS layer (MAP_DROPPABLE where the kernel has it)") {
  os::os_interface& sys = os::system_os();
  if (sys.arena_backing() != dropalloc::backing::droppable) {
    MESSAGE("no MAP_DROPPABLE here (fallback reason " << sys.fallback_reason() << "): running on the fallback");
  }
  serialized_fake layer(sys);  // passes everything on, but for the failures injected into one growth
  run_case("real", nullptr, layer);
}
