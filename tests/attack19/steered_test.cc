// seal_many with the OS steered: drops at the batch's barrier, a barrier
// that fails (the batch's only, or every one), and, between the seals of
// one batch (at each advice, which in the private fallback follows each
// block's seal at once), drops of earlier, current and later blocks' pages
// and another thread freeing, rewriting, reallocating or unmapping later
// blocks. Oracle: a handle that reads intact is over the bytes its block
// held when that generation was sealed; no page dropped after a block's
// seal goes unseen.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "tests/attack19/common.h"

using dropalloc::backing;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using namespace attack19;

namespace {

// Runs closures on its own thread; post() waits for one up to a bound
// (it may be stuck behind a seal lock the poster holds, during an advice:
// then it runs later, racing the rest of the batch).
class helper {
 public:
  helper() : t_([this] { loop(); }) {}
  ~helper() {
    {
      std::lock_guard<std::mutex> g(m_);
      quit_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  void post(std::function<void()> f) {
    std::unique_lock<std::mutex> g(m_);
    const std::uint64_t my = ++posted_;
    work_.push_back(std::move(f));
    cv_.notify_all();
    cv_.wait_for(g, std::chrono::milliseconds(20), [&] { return done_ >= my; });
  }
  void drain() {
    std::unique_lock<std::mutex> g(m_);
    cv_.wait(g, [&] { return done_ == posted_; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [&] { return quit_ || !work_.empty(); });
      if (work_.empty()) return;
      auto f = std::move(work_.front());
      work_.erase(work_.begin());
      g.unlock();
      f();
      g.lock();
      ++done_;
      cv_.notify_all();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> work_;
  std::uint64_t posted_ = 0, done_ = 0;
  bool quit_ = false;
  std::thread t_;
};

const std::size_t kSizes[] = {24, 64, 700, 4096, 3 * 4096 + 5, 70000, 300000};

struct slot {
  block_ref ref;          // what the batch gets (and the handle it returns)
  block_ref before;       // the handle as it was before the batch
  std::size_t size = 0;
  bool was_sealed = false;
  std::vector<unsigned char> snap;  // contents when the batch began
  // A page of it dropped while it was already sealed by the batch.
  std::atomic<bool> dropped_after_seal{false};
  std::atomic<bool> dropped_before_seal{false};
  std::atomic<bool> touched{false};  // freed or rewritten by the helper
  block_ref theirs;                  // the helper's handle of what it wrote
  std::uint64_t their_seed = 0;
  std::size_t their_size = 0;
};

// Whether slot s was sealed by the batch by now.
bool sealed_by_batch(droppable_resource& r, slot& s) {
  if (s.touched.load()) return true;  // not ours to judge
  const std::uint64_t g = r.generation(s.before.ptr);
  if (s.was_sealed) return g != s.before.generation;
  return r.check(s.before.ptr, g) != block_state::unsealed;
}

// Drops the page holding byte page * kPage of slot s (nothing of a slot the
// helper took), and books it for every slot with bytes on that page. Before
// a slot's seal: the seal will see zeros there, so its expected contents
// (snap) get them too. After: a loss if its portion of the page held a
// non-zero byte.
void drop_one(droppable_resource& r, std::vector<slot>& slots, slot& s, std::size_t page) {
  if (s.touched.load()) return;
  const auto a = reinterpret_cast<std::uintptr_t>(static_cast<char*>(s.before.ptr) + page * kPage) &
                 ~(std::uintptr_t{kPage} - 1);
  std::vector<bool> after(slots.size());
  for (std::size_t k = 0; k < slots.size(); ++k) after[k] = sealed_by_batch(r, slots[k]);
  drop_page_of(r, reinterpret_cast<void*>(a));
  for (std::size_t k = 0; k < slots.size(); ++k) {
    slot& o = slots[k];
    if (o.touched.load()) continue;
    const auto start = reinterpret_cast<std::uintptr_t>(o.before.ptr);
    if (start + o.size <= a || start >= a + kPage) continue;
    const std::size_t from = a > start ? a - start : 0;
    const std::size_t to = std::min(o.size, a + kPage - start);
    bool nonzero = false;
    for (std::size_t i = from; i < to; ++i) nonzero |= o.snap[i] != 0;
    if (after[k]) {
      if (nonzero) o.dropped_after_seal = true;
    } else {
      o.dropped_before_seal = true;
      std::fill(o.snap.begin() + static_cast<long>(from), o.snap.begin() + static_cast<long>(to), 0);
    }
  }
}

// One batch over steered OS, with `act` run at each advice.
void run(backing bk, std::uint64_t seed, bool handles, int mode) {
  CAPTURE(static_cast<int>(bk));
  CAPTURE(seed);
  CAPTURE(handles);
  CAPTURE(mode);
  steered_os os;
  os.inner.reuse_unmapped_arena = true;
  droppable_resource r(on(os, bk));
  std::mt19937_64 rng(seed);
  const std::size_t n = 1 + rng() % 140;
  std::vector<slot> slots(n);
  for (std::size_t i = 0; i < n; ++i) {
    slot& s = slots[i];
    s.size = kSizes[rng() % std::size(kSizes)];
    s.ref = r.allocate_block(s.size);
    fill(s.ref.ptr, s.size, seed * 977 + i);
    if (rng() % 3 == 0) {
      s.was_sealed = true;
      REQUIRE(r.seal(s.ref) == block_state::intact);
      if (rng() % 2 == 0) fill(s.ref.ptr, s.size, seed * 977 + i + 500);  // rewritten, to be resealed
    }
    s.before = s.ref;
    s.snap = snapshot(s.ref.ptr, s.size);
  }
  helper h;
  std::mutex hook_lock;  // one hook at a time
  int fired = 0;
  int actions = 0;
  const std::thread::id batch_thread = std::this_thread::get_id();
  os.on_seal_pages = [&](void*, std::size_t) {
    // Not again from inside itself (a check it makes may find a drop and
    // advise again), and one thread at a time.
    // Only the batch's thread acts: the helper's own seals advise too.
    static thread_local bool inside = false;
    if (inside || std::this_thread::get_id() != batch_thread) return;
    inside = true;
    std::lock_guard<std::mutex> g(hook_lock);
    struct leave {
      ~leave() { inside = false; }
    } leaving;
    ++fired;
    // The block whose turn is next (roughly: the first not yet sealed).
    std::size_t next = n;
    for (std::size_t i = 0; i < n; ++i) {
      if (!sealed_by_batch(r, slots[i])) {
        next = i;
        break;
      }
    }
    const std::size_t prev = next == 0 ? 0 : next - 1;
    switch (mode) {
      case 0:  // drops of the last sealed, the next and a random block
        drop_one(r, slots, slots[prev], rng() % ((slots[prev].size + kPage - 1) / kPage));
        if (next < n) drop_one(r, slots, slots[next], rng() % ((slots[next].size + kPage - 1) / kPage));
        {
          slot& any = slots[rng() % n];
          drop_one(r, slots, any, rng() % ((any.size + kPage - 1) / kPage));
        }
        break;
      case 1:  // another thread frees the next block
      case 2:  // another thread rewrites the next block through its own handle
      case 3:  // another thread frees the next block, trims, and allocates and writes its size again
        if (next >= n || slots[next].touched.load() || ++actions > 6) break;
        {
          slot* s = &slots[next];
          s->touched = true;
          h.post([&r, s, mode, seed] {
            if (mode == 2) {
              std::vector<unsigned char> v(s->size);
              fill(v.data(), s->size, seed + 0x5151);
              block_ref mine = s->before;
              // The slot's handle may have moved already; either way the
              // result must be self-consistent.
              mine.generation = r.generation(s->before.ptr);
              if (r.write_and_seal(mine, v.data(), s->size) == block_state::intact) {
                s->theirs = mine;
                s->their_seed = seed + 0x5151;
                s->their_size = s->size;
              }
              return;
            }
            r.deallocate(s->before.ptr, s->size);
            if (mode == 3) {
              (void)r.trim();
              block_ref b = r.allocate_block(s->size);
              fill(b.ptr, s->size, seed + 0x7777);
              if (r.seal(b) == block_state::intact) {
                s->theirs = b;
                s->their_seed = seed + 0x7777;
                s->their_size = s->size;
              }
            }
          });
        }
        break;
      default: break;
    }
  };
  if (mode == 4) {
    // Drops at the barrier: a page of every other block.
    os.on_settle = [&] {
      for (std::size_t i = 0; i < n; i += 2) drop_one(r, slots, slots[i], 0);
    };
  }
  if (mode == 5) os.fail_settle = 1;   // the batch's barrier fails, the blocks' own do not
  if (mode == 6) os.fail_settle = -1;  // every barrier fails
  std::vector<block_state> got(n, block_state::foreign);
  if (handles) {
    std::vector<block_ref> refs(n);
    for (std::size_t i = 0; i < n; ++i) refs[i] = slots[i].ref;
    r.seal_many(std::span<block_ref>(refs), std::span<block_state>(got));
    for (std::size_t i = 0; i < n; ++i) slots[i].ref = refs[i];
  } else {
    std::vector<void*> ptrs(n);
    for (std::size_t i = 0; i < n; ++i) ptrs[i] = slots[i].ref.ptr;
    r.seal_many(std::span<void* const>(ptrs), std::span<block_state>(got));
    for (std::size_t i = 0; i < n; ++i) {
      if (got[i] == block_state::intact || got[i] == block_state::dropped) {
        slots[i].ref.generation = r.generation(slots[i].ref.ptr);
      }
    }
  }
  h.drain();
  os.on_seal_pages = nullptr;
  os.on_settle = nullptr;
  os.fail_settle = 0;
  for (std::size_t i = 0; i < n; ++i) {
    slot& s = slots[i];
    CAPTURE(i);
    CAPTURE(s.size);
    CAPTURE(name(got[i]));
    if (mode == 6) {
      // No barrier: nothing may be sealed; the block is taken as lost.
      CHECK(got[i] == block_state::dropped);
      CHECK(r.check(s.ref) != block_state::intact);
      CHECK(r.check(block_ref{s.ref.ptr, r.generation(s.ref.ptr)}) != block_state::intact);
    }
    for (const block_ref& b : {s.ref, s.before}) {
      if (b.ptr == nullptr || r.check(b) != block_state::intact) continue;
      if (s.touched.load()) {
        // Freed: nothing of it may read intact. Rewritten or reallocated by
        // the helper: its bytes (the batch may seal them again) or, if the
        // batch came first, the batch's.
        CHECK(mode != 1);
        const bool theirs = s.their_seed != 0 && s.theirs.ptr == b.ptr && holds(b.ptr, s.their_size, s.their_seed);
        const bool ours = b.ptr == s.before.ptr && std::memcmp(b.ptr, s.snap.data(), s.size) == 0;
        CHECK((theirs || ours));
        continue;
      }
      CHECK(!s.dropped_after_seal.load());
      // No write since the batch began: the bytes are as sealed (zeros
      // where a page went before the seal).
      CHECK(std::memcmp(b.ptr, s.snap.data(), s.size) == 0);
    }
    if (s.theirs.ptr != nullptr && r.check(s.theirs) == block_state::intact) {
      CHECK(holds(s.theirs.ptr, s.their_size, s.their_seed));
    }
    // A re-seal of a block with a page dropped at the barrier is a loss.
    if (mode == 4 && s.was_sealed && s.dropped_before_seal.load()) CHECK(got[i] == block_state::dropped);
  }
  (void)fired;
}

}  // namespace

TEST_CASE("seal_many steered: drops, frees, rewrites and unmaps between the seals of one batch") {
  for (backing bk : {backing::private_fallback, backing::droppable}) {
    for (int mode = 0; mode <= 6; ++mode) {
      for (std::uint64_t seed = 1; seed <= 6; ++seed) {
        run(bk, seed * 7 + static_cast<std::uint64_t>(mode), true, mode);
        run(bk, seed * 7 + static_cast<std::uint64_t>(mode) + 1000, false, mode);
      }
    }
  }
}
