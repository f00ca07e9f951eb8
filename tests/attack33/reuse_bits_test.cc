// An entry with bits whose small arena is unmapped while it waits, and a new
// arena of another class mapped at the same address (promise 2/3 of the
// brief: bits never applied to a different arena; no read past capacity).
//
// trim() flushes the queue first, then unmaps: a cached large mapping, then
// the empty arenas. Between the two (in the OS call that unmaps the large
// mapping, on the same thread) blocks of a 64 B arena are sealed in address
// order (one entry, 40 bits) and all of its blocks freed: trim() then unmaps
// that arena with the entry still queued. The fake OS maps the next arena of
// the same span there: a 4096 B class arena (16 blocks). The entry's block
// (index 0, or index 960 = a 4096 B block start) is a block start there too,
// so give_advice finds it, and only the gen_base test keeps its bits off the
// new arena (whose bits would reach past its 16 blocks).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;

namespace {
struct hook_os : dropalloc::testing::recording_os {
  using recording_os::recording_os;
  std::function<void()> on_unmap;
  void unmap_arena(void* p, std::size_t b) noexcept override {
    if (on_unmap) {
      auto f = std::move(on_unmap);
      on_unmap = nullptr;
      f();
    }
    recording_os::unmap_arena(p, b);
  }
};

void run(std::uint32_t entry_idx) {
  os::fake_os fake;
  fake.reported_backing = dropalloc::backing::droppable;
  fake.reuse_unmapped_arena = true;
  hook_os rec(fake);
  core::heap_options o = dropalloc::testing::with_os_no_decay(&rec);
  o.thread_cache = false;
  core::heap h(o);

  std::vector<void*> small;
  for (int i = 0; i < 1024; ++i) small.push_back(dropalloc::testing::allocate_large(h, 64));
  char* base = static_cast<char*>(small[0]);
  for (int i = 0; i < 1024; ++i) REQUIRE(static_cast<char*>(small[i]) == base + 64 * i);  // one arena
  for (void* p : small) std::memset(p, 0x33, 64);
  void* large = dropalloc::testing::allocate_large(h, 300000);
  h.deallocate(large);  // cached

  bool ran = false;
  rec.on_unmap = [&] {
    ran = true;
    for (std::uint32_t i = entry_idx; i < entry_idx + 40; ++i) REQUIRE(h.seal(small[i]) == block_state::intact);
    for (void* p : small) h.deallocate(p);  // the arena is empty: trim() unmaps it next
  };
  h.trim();
  REQUIRE(ran);

  // The next 64 KiB arena lands where the 64 B one was.
  std::vector<void*> big;
  for (int i = 0; i < 16; ++i) big.push_back(dropalloc::testing::allocate_large(h, 4096));
  INFO("old arena " << static_cast<void*>(base) << ", new " << big[0]);
  if (big[0] != base) {
    MESSAGE("address not reused; nothing tested");
    for (void* p : big) h.deallocate(p);
    return;
  }
  for (int i = 0; i < 16; ++i) std::memset(big[i], i + 1, 4096);
  // Blocks 1..15 of the new arena: the odd ones sealed (queued themselves),
  // the even ones live. The bits, if taken for this arena, would add nothing
  // but must not read past block 15 either.
  std::vector<std::uint64_t> gens(16);
  const std::uint64_t before = rec.mark();
  for (int i = 1; i < 16; i += 2) REQUIRE(h.seal(big[i], &gens[i]) == block_state::intact);
  (void)h.seal_all();  // gives the queue (the old entry among them), then seals the live ones
  for (int i = 1; i < 16; i += 2) {
    CHECK(h.check(big[i], gens[i]) == block_state::intact);
    CHECK(rec.advised(reinterpret_cast<std::uintptr_t>(big[i]), before));
  }
  for (void* p : big) h.deallocate(p);
}
}  // namespace

TEST_CASE("bits of an entry whose arena went, address reused by another class: entry at index 0") { run(0); }
TEST_CASE("bits of an entry whose arena went, address reused by another class: entry at index 960") { run(960); }
