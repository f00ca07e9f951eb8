// The address map's fold (core/segment.h): arenas 64 GiB apart share one fold
// entry, which names at most one of them; the others are found through the
// table. Every lookup (the free fast path, check, owns, usable_size,
// generation, seal) must find each arena's blocks whichever arena holds the
// entry, before and after the other is unmapped, and must refuse addresses
// of an arena that has gone, while another thread unmaps and maps the
// colliding arena again and again.
#include <doctest/doctest.h>

#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"

using dropalloc::block_state;
using dropalloc::core::alloc_error;
using dropalloc::core::heap;

namespace {

constexpr std::uintptr_t kFoldSpan = std::uintptr_t{1} << (dropalloc::core::kSegmentShift + dropalloc::core::kFoldBits);
static_assert(kFoldSpan == std::uintptr_t{64} << 30);

// Maps its heap's first arena at a chosen 4 MiB-aligned spot (again after
// it was unmapped), everything else as the fake OS does.
struct placed_os : dropalloc::testing::forwarding_os {
  std::uintptr_t spot;
  std::atomic<bool> spot_mapped{false};
  std::atomic<int> spot_maps{0};
  placed_os(dropalloc::os::os_interface& real, std::uintptr_t at) : forwarding_os(real), spot(at) {}
  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    if (!spot_mapped.load() && bytes <= dropalloc::core::kSegmentSize && spot % alignment == 0) {
      void* p = mmap(reinterpret_cast<void*>(spot), bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
      if (p == reinterpret_cast<void*>(spot)) {
        spot_mapped = true;
        ++spot_maps;
        return p;
      }
      if (p != MAP_FAILED) munmap(p, bytes);
    }
    return forwarding_os::map_arena(bytes, alignment, err);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    if (reinterpret_cast<std::uintptr_t>(p) == spot) {
      munmap(p, bytes);
      spot_mapped = false;
      return;
    }
    forwarding_os::unmap_arena(p, bytes);
  }
};

// Three 4 MiB-aligned spots 64 GiB apart, all free now, far from where the
// kernel and the allocator's window place mappings.
std::uintptr_t free_spots() {
  for (std::uintptr_t base = std::uintptr_t{40} << 40; base < (std::uintptr_t{60} << 40);
       base += (std::uintptr_t{1} << 40) + (std::uintptr_t{12} << 22)) {
    bool all_free = true;
    for (int i = 0; i < 3 && all_free; ++i) {
      void* want = reinterpret_cast<void*>(base + i * kFoldSpan);
      void* p = mmap(want, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
      all_free = p == want;
      if (p != MAP_FAILED) munmap(p, 4096);
    }
    if (all_free) return base;
  }
  return 0;
}

std::uintptr_t fold_index(const void* p) {
  return (reinterpret_cast<std::uintptr_t>(p) >> dropalloc::core::kSegmentShift) &
         (dropalloc::core::kFoldEntries - 1);
}

void* allocate(heap& h, std::size_t bytes) {
  alloc_error err = alloc_error::none;
  void* p = h.allocate(bytes, 16, &err);
  REQUIRE(p != nullptr);
  return p;
}

// Everything a caller can ask of a live block p of h, sealed with the
// contents `fill`: all of it must find the block.
void require_found(heap& h, void* p, unsigned char fill) {
  REQUIRE(h.owns(p));
  REQUIRE(h.usable_size(p) >= 64);
  std::memset(p, fill, 64);
  std::uint64_t gen = 0;
  REQUIRE(h.seal(p, &gen) == block_state::intact);
  REQUIRE(gen != 0);
  REQUIRE(h.generation(p) == gen);
  REQUIRE(h.check(p, gen) == block_state::intact);
  REQUIRE(h.check(p, gen + 1) != block_state::intact);
}

std::uint64_t refused(const heap& h) { return h.stats().misuse_refused; }

}  // namespace

TEST_CASE("arenas whose steps fold onto one entry are each found, whichever holds it") {
  const std::uintptr_t base = free_spots();
  REQUIRE(base != 0);
  dropalloc::os::fake_os real;
  for (int first_holds = 0; first_holds < 2; ++first_holds) {
    CAPTURE(first_holds);
    placed_os os_a(real, base), os_b(real, base + kFoldSpan);
    auto a = std::make_unique<heap>(dropalloc::testing::with_os_no_decay(&os_a));
    auto b = std::make_unique<heap>(dropalloc::testing::with_os_no_decay(&os_b));
    // The heap whose arena registers first holds the fold entry.
    heap& early = first_holds != 0 ? *a : *b;
    heap& late = first_holds != 0 ? *b : *a;
    void* pe = allocate(early, 64);
    void* pl = allocate(late, 64);
    REQUIRE(os_a.spot_maps == 1);
    REQUIRE(os_b.spot_maps == 1);
    REQUIRE(fold_index(pe) == fold_index(pl));
    require_found(early, pe, 0x11);
    require_found(late, pl, 0x22);
    REQUIRE_FALSE(early.owns(pl));
    REQUIRE_FALSE(late.owns(pe));
    // Frees through the fast path (each thread has a slot and a cache now)
    // and again (refused), then the blocks come back.
    const std::uint64_t refused_early = refused(early), refused_late = refused(late);
    early.deallocate(pe);
    late.deallocate(pl);
    early.deallocate(pe);
    late.deallocate(pl);
    REQUIRE(refused(early) == refused_early + 1);
    REQUIRE(refused(late) == refused_late + 1);
    void* pe2 = allocate(early, 64);
    void* pl2 = allocate(late, 64);
    require_found(early, pe2, 0x33);
    require_found(late, pl2, 0x44);

    // The heap that holds the entry goes: its arena is unmapped; the other
    // is found through the table, and the gone arena's addresses are refused.
    const std::uintptr_t gone = first_holds != 0 ? base : base + kFoldSpan;
    if (first_holds != 0) {
      a.reset();
    } else {
      b.reset();
    }
    REQUIRE(late.owns(pl2));
    std::uint64_t gen = late.generation(pl2);
    REQUIRE(late.check(pl2, gen) == block_state::intact);
    void* stray = reinterpret_cast<void*>(gone);
    REQUIRE_FALSE(late.owns(stray));
    REQUIRE(late.usable_size(stray) == 0);
    REQUIRE(late.check(stray, gen) != block_state::intact);
    const std::uint64_t before = refused(late);
    late.deallocate(stray);
    REQUIRE(refused(late) == before + 1);
    late.deallocate(pl2);
    void* pl3 = allocate(late, 64);
    require_found(late, pl3, 0x55);
    late.deallocate(pl3);
  }
}

TEST_CASE("lookups of one arena stay right while another thread maps and unmaps a colliding one") {
  const std::uintptr_t base = free_spots();
  REQUIRE(base != 0);
  dropalloc::os::fake_os real;
  placed_os os_b(real, base + kFoldSpan);
  heap b(dropalloc::testing::with_os_no_decay(&os_b));
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  // Maps a heap's arena at `base`, then at base + 128 GiB (the same entry),
  // uses and drops each: the entry changes hands and is cleared, over and over.
  std::thread churn([&] {
    for (int i = 0; i < 300 && !stop.load(); ++i) {
      placed_os os_a(real, base + (i % 2 == 0 ? 0 : 2 * kFoldSpan));
      heap a(dropalloc::testing::with_os_no_decay(&os_a));
      void* p = allocate(a, 64);
      CHECK(a.owns(p));
      CHECK_FALSE(b.owns(p));
      a.deallocate(p);
      rounds.fetch_add(1);
    }
    stop = true;
  });
  std::vector<void*> mine;
  std::uint64_t wrong = 0, asked = 0;
  unsigned char fill = 1;
  while (!stop.load()) {
    void* p = allocate(b, 64);
    wrong += os_b.spot_maps != 1 || fold_index(p) != fold_index(reinterpret_cast<void*>(base)) ? 1 : 0;
    std::memset(p, fill++, 64);
    std::uint64_t gen = 0;
    wrong += b.seal(p, &gen) == block_state::intact ? 0 : 1;
    wrong += b.check(p, gen) == block_state::intact ? 0 : 1;
    wrong += b.owns(p) ? 0 : 1;
    // The colliding spots: whatever is mapped there now is not b's.
    for (std::uintptr_t other : {base, base + 2 * kFoldSpan}) {
      void* q = reinterpret_cast<void*>(other);
      wrong += b.owns(q) ? 1 : 0;
      wrong += b.usable_size(q) == 0 ? 0 : 1;
      wrong += b.check(q, gen) == block_state::intact ? 1 : 0;
    }
    mine.push_back(p);
    if (mine.size() == 64) {
      for (void* m : mine) b.deallocate(m);
      mine.clear();
    }
    ++asked;
  }
  churn.join();
  for (void* m : mine) b.deallocate(m);
  MESSAGE("rounds of the colliding arena: " << rounds.load() << ", blocks asked about: " << asked);
  CHECK(rounds.load() == 300);
  CHECK(wrong == 0);
  CHECK(b.stats().misuse_refused == 0);
}
