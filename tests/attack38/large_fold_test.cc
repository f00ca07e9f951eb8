// Holds: large blocks whose steps fold onto other arenas' entries.
// 1. A large block at a colliding spot grows in place (new header replaces
//    the old one in table and fold, old header unmapped after a grace
//    period) again and again while another thread checks it and the
//    colliding arena's block: answers stay right, nothing reads the old
//    header after its unmap (its metadata is made PROT_NONE), and the fold
//    never names the old header afterwards.
// 2. A block over 64 GiB (its steps wrap the fold onto itself) next to
//    arenas whose entries it shares: each is found, and after it is freed
//    (unmapped) no entry names it.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "tests/attack38/common.h"
#include "tests/core_heap.h"

using namespace attack38;
using dropalloc::block_state;

TEST_CASE("a large block grown in place at a colliding spot") {
  const std::uintptr_t base = free_spots(2, 256 * kStep, 23);
  REQUIRE(base != 0);
  dropalloc::os::fake_os real;
  for (int large_first = 0; large_first < 2; ++large_first) {
    CAPTURE(large_first);
    placed_os os_l(real, base);
    os_l.poison_metadata = true;
    placed_os os_c(real, base + kFoldSpan);
    auto l = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_l));
    auto c = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_c));
    void* q = nullptr;
    if (large_first == 0) q = allocate(*c, 64);
    void* p = allocate(*l, 5u << 20);
    if (large_first != 0) q = allocate(*c, 64);
    REQUIRE(p != nullptr);
    REQUIRE(q != nullptr);
    REQUIRE(fold_index(p) == fold_index(q));
    std::uint64_t qgen = 0;
    REQUIRE(c->seal(q, &qgen) == block_state::intact);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> wrong{0}, asked{0};
    std::thread checker([&] {
      while (!stop.load()) {
        // p grows meanwhile: never intact for c, never c's; q always c's.
        if (c->owns(p) || c->usable_size(p) != 0) wrong.fetch_add(1);
        if (!c->owns(q) || c->generation(q) != qgen || c->check(q, qgen) != block_state::intact) wrong.fetch_add(1);
        if (l->owns(q) || l->usable_size(q) != 0) wrong.fetch_add(1);
        // p: l's (its usable size reads 0 while a growth has it claimed).
        if (!l->owns(p)) wrong.fetch_add(1);
        for (std::uintptr_t k = 1; k < 12; ++k) {
          void* inner = static_cast<char*>(p) + k * kStep;
          if (l->owns(inner) || c->owns(inner) || l->usable_size(inner) != 0) wrong.fetch_add(1);
        }
        asked.fetch_add(1);
      }
    });
    std::size_t size = 5u << 20;
    int grown = 0;
    for (int i = 0; i < 200; ++i) {
      size += (i % 3 == 0) ? (4u << 20) + 4096 : 4096;
      if (size > (48u << 20)) break;
      if (l->grow_large_in_place(p, size)) ++grown;
      CHECK(l->usable_size(p) >= size);
      CHECK(fold_violations() == 0);
    }
    stop = true;
    checker.join();
    MESSAGE("grown in place: " << grown << ", checks: " << asked.load() << ", old headers unmapped: "
                               << os_l.poisoned.load());
    CHECK(grown > 5);
    CHECK(wrong.load() == 0);
    std::uint64_t gen = 0;
    REQUIRE(l->seal(p, &gen) == block_state::intact);
    CHECK(l->check(p, gen) == block_state::intact);
    l->deallocate(p);
    CHECK(fold_violations() == 0);
    l.reset();
    CHECK(c->owns(q));
    CHECK(c->check(q, qgen) == block_state::intact);
    CHECK(fold_violations() == 0);
    c->deallocate(q);
    c.reset();
    CHECK(fold_violations() == 0);
  }
}

TEST_CASE("a block over 64 GiB wraps the fold; its neighbours and it are each found") {
  const std::size_t huge = (std::size_t{65} << 30);
  const std::uintptr_t base = free_spots(1, huge + 2 * kFoldSpan, 31);
  REQUIRE(base != 0);
  dropalloc::os::fake_os real;
  for (int huge_first = 0; huge_first < 2; ++huge_first) {
    CAPTURE(huge_first);
    // The small arenas sit past the block's end, at steps whose entries the
    // block's own steps fold onto.
    placed_os os_h(real, base);
    placed_os os_n(real, base + huge + 4 * kStep + kFoldSpan / 2);
    auto h = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_h));
    auto n = std::make_unique<core::heap>(dropalloc::testing::with_os_no_decay(&os_n));
    std::vector<void*> small;
    void* p = nullptr;
    if (huge_first != 0) p = allocate(*h, huge);
    for (int i = 0; i < 200; ++i) small.push_back(allocate(*n, 40000));
    if (huge_first == 0) p = allocate(*h, huge);
    REQUIRE(p != nullptr);
    CHECK(fold_violations() == 0);
    std::uint64_t gen = 0;
    CHECK(h->usable_size(p) >= huge);
    for (void* b : small) {
      REQUIRE(b != nullptr);
      CHECK(n->owns(b));
      CHECK_FALSE(h->owns(b));
      CHECK(h->usable_size(b) == 0);
    }
    for (std::uintptr_t off = kStep; off < huge; off += 997 * kStep) {
      void* inner = static_cast<char*>(p) + off;
      CHECK_FALSE(h->owns(inner));
      CHECK_FALSE(n->owns(inner));
      CHECK(h->usable_size(inner) == 0);
    }
    gen = h->generation(p);
    CHECK(gen != 0);
    h->deallocate(p);  // 65 GiB: not cached; unregistered and unmapped
    h->deallocate(p);  // refused
    CHECK(h->stats().misuse_refused == 1);
    CHECK(fold_violations() == 0);
    for (std::size_t f = 0; f < core::kFoldEntries; ++f) {
      core::segment* s = core::g_segment_fold[f].load();
      CHECK((s == nullptr || reinterpret_cast<std::uintptr_t>(s->base) != reinterpret_cast<std::uintptr_t>(p)));
    }
    for (void* b : small) {
      CHECK(n->owns(b));
      n->deallocate(b);
    }
    h.reset();
    n.reset();
    CHECK(fold_violations() == 0);
  }
}
