// Regression (passes): generations across thousands of re-seals (cf2b412:
// every sealed -> sealed seal moves the generation), frees, trims and arenas
// mapped again at the same address. Every handle ever held - one per sealed
// version - is kept; none of an earlier version or life ever reads intact,
// unsealed or dropped again, each is refused by seal(block_ref&),
// write_and_seal(block_ref&) (nothing written) and seal_rewritten(block_ref&);
// heap generations only grow (so the 52-bit field and the arena floor after
// trim never bring one back); the raw-pointer seal() moves generation(p);
// the C API's handle reads STALE after a re-seal. 24 B, 3000 B (straddling),
// 12 KiB page-aligned, and a 300 KB large block (large cache and trim).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/dropalloc_c.h"
#include "allocator/os/fake_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

bool old_answer(block_state s) { return s == block_state::stale || s == block_state::foreign; }

}  // namespace

TEST_CASE("thousands of re-seals, then free / trim / remap at the same address: old versions never come back") {
  for (std::size_t n : {24u, 3000u, 3u * 4096u, 300000u}) {
    CAPTURE(n);
    dropalloc::os::fake_os os;
    os.reuse_unmapped_arena = true;
    dropalloc::resource_options o;
    o.os = &os;
    o.thread_cache = false;
    droppable_resource res(o);
    std::vector<block_ref> old;
    std::vector<unsigned char> a(n, 0x31), c(n, 0x32), probe(n, 0x77);
    void* addr = nullptr;
    std::uint64_t last = 0;
    for (int life = 0; life < 4; ++life) {
      block_ref b = res.allocate_block(n, n == 3 * 4096 ? 4096 : 8);
      if (addr == nullptr) addr = b.ptr;
      REQUIRE(b.ptr == addr);
      CHECK(b.generation > last);
      REQUIRE(res.write_and_seal(b, a.data(), n) == block_state::intact);
      for (int k = 0; k < 1500; ++k) {
        old.push_back(b);
        const std::uint64_t before = b.generation;
        const auto& src = k % 2 == 0 ? c : a;
        switch (k % 3) {
          case 0: REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact); break;
          case 1:
            std::memcpy(b.ptr, src.data(), n);
            REQUIRE(res.seal(b) == block_state::intact);
            break;
          default:
            std::memcpy(b.ptr, src.data(), n);
            REQUIRE(res.seal(b.ptr) == block_state::intact);
            b.generation = res.generation(b.ptr);
            break;
        }
        REQUIRE(b.generation > before);
        REQUIRE(b.generation == res.generation(b.ptr));
        REQUIRE(res.check(old.back()) == block_state::stale);
      }
      last = b.generation;
      std::memcpy(b.ptr, a.data(), n);
      REQUIRE(res.write_and_seal(b, a.data(), n) == block_state::intact);
      res.deallocate(b);
      if (life % 2 == 1) res.trim();
      old.push_back(b);
      // Every older version or life: never intact, and refused by the handle calls.
      for (std::size_t i = 0; i < old.size(); i += 7) {
        block_ref h = old[i];
        REQUIRE(old_answer(res.check(h)));
      }
      block_ref fresh = res.allocate_block(n, n == 3 * 4096 ? 4096 : 8);
      REQUIRE(fresh.ptr == addr);
      REQUIRE(res.write_and_seal(fresh, a.data(), n) == block_state::intact);
      for (std::size_t i = 0; i < old.size(); i += 97) {
        block_ref h = old[i];
        CHECK(old_answer(res.check(h)));
        block_ref h2 = h;
        CHECK(old_answer(res.seal(h2)));
        CHECK(h2.generation == h.generation);
        CHECK(old_answer(res.write_and_seal(h2, probe.data(), n)));
        CHECK(h2.generation == h.generation);
        CHECK(old_answer(res.seal_rewritten(h2)));
        CHECK(h2.generation == h.generation);
        CHECK(h.generation < fresh.generation);
      }
      CHECK(std::memcmp(fresh.ptr, a.data(), n) == 0);  // no refused call wrote
      CHECK(res.check(fresh) == block_state::intact);
      last = fresh.generation;
      res.deallocate(fresh);
      if (life % 2 == 0) res.trim();
    }
  }
}

TEST_CASE("C API: a re-seal moves the generation; the old handle reads STALE, never INTACT") {
  dropalloc_resource* r = dropalloc_create(0);
  REQUIRE(r != nullptr);
  dropalloc_block b = dropalloc_alloc(r, 5000, 0);
  REQUIRE(b.ptr != nullptr);
  std::memset(b.ptr, 0x41, 5000);
  REQUIRE(dropalloc_seal(r, b.ptr) == DROPALLOC_INTACT);
  CHECK(dropalloc_generation(r, b.ptr) == b.generation);  // the first seal keeps it
  for (int k = 0; k < 200; ++k) {
    dropalloc_block before = b;
    std::memset(b.ptr, 0x42 + k % 3, 5000);
    REQUIRE(dropalloc_seal(r, b.ptr) == DROPALLOC_INTACT);
    CHECK(dropalloc_check(r, before.ptr, before.generation) == DROPALLOC_STALE);
    CHECK(dropalloc_is_intact(r, before) == 0);
    b.generation = dropalloc_generation(r, b.ptr);
    CHECK(b.generation > before.generation);
    CHECK(dropalloc_is_intact(r, b) == 1);
  }
  REQUIRE(dropalloc_drop_for_testing(r, b.ptr, 1) == 0);
  CHECK(dropalloc_seal(r, b.ptr) == DROPALLOC_DROPPED);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_DROPPED);
  dropalloc_free(r, b.ptr);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_STALE);
  dropalloc_destroy(r);
}
