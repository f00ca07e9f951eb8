// Contract (README, private fallback): "written but unsealed blocks are
// ordinary memory that the kernel never drops"; "a block that shares a page
// with others is given to the kernel only while all of them are sealed";
// and `intact` means the block holds what was sealed.
//
// What happens: heap::seal (core/seal_check.cc) runs seal_block under the
// block's seal lock, RELEASES it, and only then calls advise_sealed(s, idx).
// In the fallback advise_sealed checks (and locks) the *other* blocks on the
// block's first and last pages, never the block itself: it still advises
// the block's own pages as if the life it just sealed were still there. If
// between the two the block is freed and handed out again (the owner is done
// with it; a 4096-byte block comes straight back from the thread cache at
// the same address) and the new life is written, the old seal's MADV_FREE
// lands on the new life's written, unsealed bytes. Reclaim (MADV_PAGEOUT,
// as memory pressure would) discards them: the live, never-sealed block
// reads zeros, check() says `unsealed`, and the owner's seal() then vouches
// `intact` for zeros it never wrote. Same with write_and_seal as the first
// sealer (its advice is the same code).
//
// Deterministic: the test OS layer parks the first sealer inside
// seal_pages(), after advise_sealed decided and before the MADV_FREE.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack8/parking_os.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::size_t kSize = 4096;

// first_sealer_writes: the first life is sealed by write_and_seal, else by seal().
void run(bool first_sealer_writes) {
  attack8::parking_os os;
  dropalloc::resource_options o;
  o.os = &os;
  droppable_resource r(o);

  void* p = r.allocate(kSize, 64);
  std::memset(p, 0x11, kSize);
  std::vector<unsigned char> first(kSize, 0x22);
  (void)r.generation(p);  // observed: its free bumps the generation

  os.arm();
  block_state first_seal = block_state::foreign;
  std::thread sealer([&] {
    first_seal = first_sealer_writes ? r.write_and_seal(p, first.data(), first.size()) : r.seal(p);
  });
  REQUIRE(os.wait_parked());

  // The owner is done with the first life: free it and allocate again.
  r.deallocate(p, kSize, 64);
  void* q = r.allocate(kSize, 64);
  REQUIRE(q == p);  // same block, new life
  std::vector<unsigned char> mine(kSize);
  for (std::size_t i = 0; i < kSize; ++i) mine[i] = static_cast<unsigned char>(i * 7 + 1);
  std::memcpy(q, mine.data(), kSize);  // written, not sealed: ordinary memory in the fallback

  os.release();  // the first life's advice now lands
  sealer.join();

  // Reclaim, as pressure would; again if a page was still in a per-CPU LRU
  // batch (then MADV_PAGEOUT skips it).
  for (int i = 0; i < 50 && std::memcmp(q, mine.data(), kSize) == 0; ++i) {
    REQUIRE(attack8::reclaim(q, kSize) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::uint64_t g = r.generation(q);
  const block_state before_seal = r.check(q, g);
  const bool kept = std::memcmp(q, mine.data(), kSize) == 0;
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < kSize; ++i) zeros += static_cast<const unsigned char*>(q)[i] == 0;
  const block_state sealed = r.seal(q);
  MESSAGE("first sealer: " << std::string(first_sealer_writes ? "write_and_seal" : "seal") << " -> "
                           << std::string(dropalloc::to_string(first_seal)) << "; new life (unsealed, check "
                           << std::string(dropalloc::to_string(before_seal)) << ") lost " << zeros << " of " << kSize
                           << " bytes; its seal() says " << std::string(dropalloc::to_string(sealed)) << "; seal_pages calls " << os.seals.load());
  CHECK_MESSAGE(kept, "a written, unsealed block of the fallback was discarded by reclaim");
  CHECK_FALSE((sealed == block_state::intact && std::memcmp(q, mine.data(), kSize) != 0));
  r.deallocate(q, kSize, 64);
}

}  // namespace

TEST_CASE("fallback: a seal's late advice lands on the next life of its own block (seal)") { run(false); }
TEST_CASE("fallback: a seal's late advice lands on the next life of its own block (write_and_seal)") { run(true); }
