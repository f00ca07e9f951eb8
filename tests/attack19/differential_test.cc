// seal_many through handles against the same calls made one at a time with
// seal(block_ref&), on two resources driven by one random script: every
// answer, every handle's generation move and every later check must agree,
// and every `intact` must be over the bytes the block held when sealed.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "tests/attack19/common.h"

using dropalloc::backing;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using namespace attack19;

namespace {

const std::size_t kSizes[] = {16, 24, 64, 100, 700, 1000, 4096, 3 * 4096 + 5, 70000, 300000};
const std::size_t kCounts[] = {0, 1, 2, 7, 127, 128, 129, 200, 256, 257};

enum class pre : int {
  fresh,             // written, never sealed
  sealed,            // written and sealed
  rewritten,         // sealed, then written again
  sealed_dropped,    // sealed, then a page dropped
  live_dropped,      // written, a page dropped, never sealed
  freed,             // freed: the handle is stale
  gen_zero,          // handle with generation 0
  null_ptr,          // null handle with a generation
  interior,          // a block's interior pointer with its generation
  old_gen,           // the block's generation minus one
  next_gen,          // the block's generation plus one
  dropped_state,     // sealed, dropped, found dropped by a check
  kinds
};

struct world {
  droppable_resource* res = nullptr;
  droppable_resource* other = nullptr;
  std::vector<block_ref> blocks;  // what was allocated
  std::vector<std::size_t> sizes;
  std::vector<block_ref> handles;  // what the batch is given
};

// Builds the same world in r for the same seed.
void build(world& w, std::uint64_t seed, std::size_t n) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t size = kSizes[rng() % std::size(kSizes)];
    block_ref b = w.res->allocate_block(size);
    fill(b.ptr, size, seed * 1000 + i);
    w.blocks.push_back(b);
    w.sizes.push_back(size);
  }
  for (std::size_t i = 0; i < n; ++i) {
    block_ref b = w.blocks[i];
    const std::size_t size = w.sizes[i];
    const auto k = static_cast<pre>(rng() % static_cast<int>(pre::kinds));
    const std::size_t page = (rng() % ((size + kPage - 1) / kPage)) * kPage;
    switch (k) {
      case pre::fresh: break;
      case pre::sealed: w.res->seal(b); break;
      case pre::rewritten:
        w.res->seal(b);
        fill(b.ptr, size, seed * 1000 + i + 7);
        break;
      case pre::sealed_dropped:
        w.res->seal(b);
        drop_page_of(*w.res, static_cast<char*>(b.ptr) + page);
        break;
      case pre::live_dropped: drop_page_of(*w.res, static_cast<char*>(b.ptr) + page); break;
      case pre::freed: break;  // after the loop: its neighbours stay
      case pre::gen_zero: b.generation = 0; break;
      case pre::null_ptr: b.ptr = nullptr; break;
      case pre::interior: b.ptr = static_cast<char*>(b.ptr) + 8; break;
      case pre::old_gen: b.generation -= 1; break;
      case pre::next_gen: b.generation += 1; break;
      case pre::dropped_state:
        w.res->seal(b);
        drop_page_of(*w.res, static_cast<char*>(b.ptr) + page);
        (void)w.res->check(b);
        break;
      default: break;
    }
    if (k == pre::freed) b.ptr = w.blocks[i].ptr;
    w.handles.push_back(b);
    // Duplicates: the same handle again, now and then.
    if (rng() % 8 == 0) w.handles.push_back(b);
    if (k == pre::freed) w.blocks[i].generation = ~std::uint64_t{0};  // marks it
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (w.blocks[i].generation == ~std::uint64_t{0}) {
      w.res->deallocate(w.blocks[i].ptr, w.sizes[i]);
      w.blocks[i].ptr = nullptr;
    }
  }
  // A foreign handle from another resource, sometimes.
  if (n != 0 && rng() % 2 == 0) {
    block_ref f = w.other->allocate_block(64);
    w.handles.push_back(f);
  }
  std::shuffle(w.handles.begin(), w.handles.end(), rng);
}

// The block a handle points into (index into w.blocks), or -1.
long owner_of(const world& w, const void* p) {
  for (std::size_t i = 0; i < w.blocks.size(); ++i) {
    if (w.blocks[i].ptr == nullptr) continue;
    auto* b = static_cast<const char*>(w.blocks[i].ptr);
    if (p >= b && p < b + w.sizes[i]) return static_cast<long>(i);
  }
  return -1;
}

void run_case(backing bk, std::uint64_t seed, std::size_t n) {
  CAPTURE(static_cast<int>(bk));
  CAPTURE(seed);
  CAPTURE(n);
  steered_os os_a, os_b, os_o;
  droppable_resource a(on(os_a, bk)), b(on(os_b, bk)), other(on(os_o, bk));
  world wa, wb;
  wa.res = &a;
  wb.res = &b;
  wa.other = wb.other = &other;
  build(wa, seed, n);
  build(wb, seed, n);
  REQUIRE(wa.handles.size() == wb.handles.size());
  const std::size_t h = wa.handles.size();
  // What each block holds when the batch starts: no one writes during it.
  std::vector<std::vector<unsigned char>> snap(wa.blocks.size());
  for (std::size_t i = 0; i < wa.blocks.size(); ++i) {
    if (wa.blocks[i].ptr != nullptr) snap[i] = snapshot(wa.blocks[i].ptr, wa.sizes[i]);
  }
  std::vector<block_ref> before_a = wa.handles, before_b = wb.handles;
  std::vector<block_state> got(h, block_state::foreign);
  const int settles_before = os_a.settles.load();
  std::size_t intact = a.seal_many(std::span<block_ref>(wa.handles), std::span<block_state>(got));
  // One barrier per 128 handles that carry a generation, at most.
  CHECK(os_a.settles.load() - settles_before <= static_cast<int>((h + 127) / 128));
  std::size_t counted = 0;
  for (std::size_t i = 0; i < h; ++i) {
    CAPTURE(i);
    block_state want = b.seal(wb.handles[i]);
    CHECK(name(got[i]) == name(want));
    if (got[i] == block_state::intact) ++counted;
    // The handle moved as the one-at-a-time one did.
    CHECK(wa.handles[i].generation - before_a[i].generation == wb.handles[i].generation - before_b[i].generation);
  }
  CHECK(intact == counted);
  for (std::size_t i = 0; i < h; ++i) {
    CAPTURE(i);
    CHECK(name(a.check(wa.handles[i])) == name(b.check(wb.handles[i])));
    CHECK(name(a.check(before_a[i])) == name(b.check(before_b[i])));
  }
  // The oracle: drop a page of every third block, then any handle that
  // reads intact must be over the bytes its block held when sealed.
  std::mt19937_64 rng(seed ^ 0xabcdef);
  for (std::size_t i = 0; i < wa.blocks.size(); i += 3) {
    if (wa.blocks[i].ptr == nullptr) continue;
    const std::size_t page = (rng() % ((wa.sizes[i] + kPage - 1) / kPage)) * kPage;
    drop_page_of(a, static_cast<char*>(wa.blocks[i].ptr) + page);
  }
  for (std::size_t i = 0; i < h; ++i) {
    for (const block_ref& r : {wa.handles[i], before_a[i]}) {
      if (a.check(r) != block_state::intact) continue;
      const long o = owner_of(wa, r.ptr);
      REQUIRE(o >= 0);
      REQUIRE(wa.blocks[o].ptr == r.ptr);
      CAPTURE(o);
      CHECK(std::memcmp(r.ptr, snap[o].data(), wa.sizes[o]) == 0);
    }
  }
}

}  // namespace

TEST_CASE("seal_many through handles answers and moves handles as seal(block_ref&) one at a time") {
  for (backing bk : {backing::droppable, backing::private_fallback}) {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
      for (std::size_t n : kCounts) run_case(bk, seed * 31 + n, n);
    }
  }
}

TEST_CASE("seal_many with too few answers throws and seals nothing, through pointers and handles") {
  for (backing bk : {backing::droppable, backing::private_fallback}) {
    steered_os os;
    droppable_resource r(on(os, bk));
    std::vector<block_ref> refs;
    std::vector<void*> ptrs;
    for (int i = 0; i < 300; ++i) {
      refs.push_back(r.allocate_block(i % 2 ? 100 : 5000));
      fill(refs.back().ptr, i % 2 ? 100 : 5000, static_cast<std::uint64_t>(i));
      ptrs.push_back(refs.back().ptr);
    }
    for (std::size_t short_by : {std::size_t{1}, std::size_t{172}, std::size_t{300}}) {
      std::vector<block_state> answers(300 - short_by, block_state::dropped);
      const int settles = os.settles.load();
      std::vector<block_ref> copy = refs;
      CHECK_THROWS_AS(r.seal_many(std::span<block_ref>(copy), std::span<block_state>(answers)), std::invalid_argument);
      CHECK_THROWS_AS(r.seal_many(std::span<void* const>(ptrs), std::span<block_state>(answers)),
                      std::invalid_argument);
      CHECK(os.settles.load() == settles);
      for (std::size_t i = 0; i < 300; ++i) {
        CHECK(copy[i].generation == refs[i].generation);
        CHECK(r.check(refs[i]) == block_state::unsealed);
      }
      for (block_state s : answers) CHECK(s == block_state::dropped);  // untouched
    }
    // Longer answers: only the first blocks.size() are written.
    std::vector<block_state> answers(400, block_state::stale);
    CHECK(r.seal_many(std::span<block_ref>(refs), std::span<block_state>(answers)) == 300);
    for (std::size_t i = 300; i < 400; ++i) CHECK(answers[i] == block_state::stale);
    for (auto& b : refs) r.deallocate(b);
  }
}
