// Regression (fallback): a seal's advice that arrives late, after the *same*
// life was rewritten with write_and_seal, makes the rewrite's pages lazily
// freed; reclaim then takes them. The block must then read `dropped` under
// its current generation (its witnesses were taken from the rewrite), never
// `intact` over bytes that differ from what write_and_seal sealed. The first
// sealer is parked inside seal_pages() (test OS layer) for the rewrite.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack8/parking_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("fallback: late advice over a write_and_seal rewrite is reported, never intact") {
  for (std::size_t size : {std::size_t{4096}, std::size_t{20480}}) {
    attack8::parking_os os;
    dropalloc::resource_options o;
    o.os = &os;
    droppable_resource r(o);
    block_ref b = r.allocate_block(size, 64);
    std::vector<unsigned char> a(size, 0x5a), y(size);
    for (std::size_t i = 0; i < size; ++i) y[i] = static_cast<unsigned char>(i % 251 + 1);
    os.arm();
    std::thread sealer([&] { (void)r.write_and_seal(b.ptr, a.data(), a.size()); });
    REQUIRE(os.wait_parked());
    b.generation = r.generation(b.ptr);
    // The rewrite waits for no one: the first sealer holds no lock now.
    const block_state w = r.write_and_seal(b, y.data(), y.size());
    CHECK(w == block_state::intact);
    os.release();
    sealer.join();
    for (int i = 0; i < 50 && std::memcmp(b.ptr, y.data(), size) == 0; ++i) {
      REQUIRE(attack8::reclaim(b.ptr, size) == 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const bool same = std::memcmp(b.ptr, y.data(), size) == 0;
    const block_state c = r.check(b);
    MESSAGE("size " << size << ": bytes kept " << same << ", check " << std::string(dropalloc::to_string(c)));
    CHECK_FALSE((c == block_state::intact && !same));
    r.deallocate(b);
  }
}
