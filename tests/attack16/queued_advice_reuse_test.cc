// Deterministic: queued advice whose block's arena went away (large free with
// decay 0: no flush), or whose heap was destroyed with entries queued, while
// another heap (a private-fallback one) or a new heap in the same storage
// maps an arena at the same address through the fake's address reuse. No
// seal_pages() may then land outside the advising heap's own live arenas,
// and the fallback heap's unsealed bytes must survive (drop_on_seal: every
// advised page is zeroed, as a kernel taking it at once would).
#include <doctest/doctest.h>

#include <cstring>
#include <optional>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack16/checking_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

void report(attack16::arena_registry& reg) {
  for (auto& v : reg.violations) MESSAGE(v);
  CHECK(reg.violations.empty());
}

}  // namespace

TEST_CASE("large block sealed (queued), freed and unmapped without a flush; a fallback heap maps there") {
  attack16::two_views views;
  [[maybe_unused]] auto& inner = views.inner;
  [[maybe_unused]] auto& reg = views.reg;
  [[maybe_unused]] auto& dview = views.dview;
  [[maybe_unused]] auto& pview = views.pview;
  droppable_resource d(attack16::options_for(&dview));
  droppable_resource p(attack16::options_for(&pview));
  constexpr std::size_t kBig = 300 * 1024;  // 75 pages: queued, not flushed
  block_ref a = d.allocate_block(kBig);
  std::memset(a.ptr, 0x5a, kBig);
  REQUIRE(d.seal(a) == block_state::intact);
  const int seals_before = inner.seals.load();
  void* where = a.ptr;
  d.deallocate(a.ptr, kBig);  // into the large cache
  block_ref b = d.allocate_block(2 * kBig);
  d.deallocate(b.ptr, 2 * kBig);  // its free destroys the expired entry: `a` unmapped, queue not flushed
  CHECK(inner.seals.load() == seals_before);
  block_ref c = p.allocate_block(kBig);  // the fallback heap, perhaps at a's old address
  MESSAGE("queued block at ", where, ", fallback block at ", c.ptr);
  std::memset(c.ptr, 0x77, kBig);  // live, unsealed: never to be given to the kernel
  d.seal_all();                     // flushes d's queue
  d.trim();
  std::vector<unsigned char> want(kBig, 0x77);
  CHECK(std::memcmp(c.ptr, want.data(), kBig) == 0);
  // Same with a droppable block of d itself mapped there (a new life).
  p.deallocate(c.ptr, kBig);
  p.trim();
  block_ref e = d.allocate_block(kBig);
  std::memset(e.ptr, 0x33, kBig);
  REQUIRE(d.seal(e) == block_state::intact);
  d.seal_all();
  CHECK(d.check(e) != block_state::intact);  // drop_on_seal zeroed it: never intact
  d.deallocate(e.ptr, kBig);
  report(reg);
}

TEST_CASE("heap destroyed with entries queued; a new heap in the same storage and a fallback heap reuse the addresses") {
  attack16::two_views views;
  [[maybe_unused]] auto& inner = views.inner;
  [[maybe_unused]] auto& reg = views.reg;
  [[maybe_unused]] auto& dview = views.dview;
  [[maybe_unused]] auto& pview = views.pview;
  std::optional<droppable_resource> d;
  droppable_resource p(attack16::options_for(&pview));
  for (int round = 0; round < 50; ++round) {
    d.emplace(attack16::options_for(&dview));
    std::vector<block_ref> bs;
    for (int i = 0; i < 20; ++i) {
      bs.push_back(d->allocate_block(i % 2 == 0 ? 6000 : 100));
      std::memset(bs.back().ptr, i + 1, i % 2 == 0 ? 6000 : 100);
      // A queue older than its delay is flushed by the next seal, this block
      // included, and drop_on_seal zeroes what is advised: dropped then.
      const block_state st = d->seal(bs.back());
      REQUIRE((st == block_state::intact || st == block_state::dropped));
    }
    d.reset();  // entries queued, arenas unmapped
    // The fallback heap maps arenas now (same sizes: the fake may reuse the address).
    std::vector<block_ref> live;
    for (int i = 0; i < 20; ++i) {
      live.push_back(p.allocate_block(i % 2 == 0 ? 6000 : 100));
      std::memset(live.back().ptr, 0x40 + i, i % 2 == 0 ? 6000 : 100);
    }
    d.emplace(attack16::options_for(&dview));
    block_ref x = d->allocate_block(6000);
    std::memset(x.ptr, 9, 6000);
    d->seal(x);
    d->seal_all();
    p.seal_all();  // seals p's live blocks, advises each page only while all its blocks are sealed
    for (int i = 0; i < 20; ++i) {
      const std::size_t n = i % 2 == 0 ? 6000 : 100;
      std::vector<unsigned char> want(n, static_cast<unsigned char>(0x40 + i));
      const block_state st = p.check(p.generation(live[i].ptr) ? block_ref{live[i].ptr, p.generation(live[i].ptr)} : live[i]);
      if (st == block_state::intact) CHECK(std::memcmp(live[i].ptr, want.data(), n) == 0);
    }
    for (auto& b : live) p.deallocate(b);
    p.trim();
    d->deallocate(x.ptr, 6000);
  }
  d.reset();
  report(reg);
}
