// Held: blocks sealed on threads that exit at once, freed (through their
// handles) on threads that inherited those tables, and their addresses handed
// out again on later threads with other contents, sealed again. An old
// handle never reads intact; a live handle always does, with its contents.
#include <doctest/doctest.h>

#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack29/common.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

struct sealed {
  block_ref b;
  std::size_t size;
  unsigned char tag;
};

}  // namespace

TEST_CASE("seal, check and generations of blocks passing through exiting threads' caches") {
  droppable_resource res;
  std::vector<sealed> live, old;
  std::mutex lock;
  unsigned char next_tag = 1;
  std::uint64_t refused_expected = 0;
  for (int round = 0; round < (attack29::kSlow ? 10 : 40); ++round) {
    CAPTURE(round);
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t) {
      const unsigned char tag = next_tag;
      next_tag = static_cast<unsigned char>(next_tag == 255 ? 1 : next_tag + 1);
      ts.emplace_back([&, t, tag] {
        // Free some live blocks of exited threads through their handles.
        std::vector<sealed> mine;
        {
          std::lock_guard<std::mutex> g(lock);
          for (int i = 0; i < 10 && !live.empty(); ++i) {
            mine.push_back(live.back());
            live.pop_back();
          }
        }
        for (sealed& s : mine) {
          CHECK(res.check(s.b) == block_state::intact);
          res.deallocate(s.b);
        }
        std::vector<sealed> made;
        for (int i = 0; i < 30; ++i) {
          const std::size_t size = 8 + static_cast<std::size_t>((t * 31 + i * 7) % 300);
          block_ref b = res.allocate_block(size, 8);
          std::memset(b.ptr, tag, size);
          CHECK(res.seal(b) == block_state::intact);
          made.push_back({b, size, tag});
        }
        std::lock_guard<std::mutex> g(lock);
        for (auto& s : mine) old.push_back(s);
        for (auto& s : made) live.push_back(s);
      });
    }
    for (auto& t : ts) t.join();
    for (const sealed& s : live) {
      REQUIRE(res.check(s.b) == block_state::intact);
      const auto* p = static_cast<const unsigned char*>(s.b.ptr);
      for (std::size_t i = 0; i < s.size; ++i) REQUIRE(p[i] == s.tag);
    }
    for (const sealed& s : old) CHECK(res.check(s.b) != block_state::intact);
    for (const sealed& s : old) res.deallocate(s.b);  // stale handles: refused
    refused_expected += old.size();
    CHECK(res.stats().misuse_refused == refused_expected);
    CHECK(res.stats().blocks_live == live.size());
    old.clear();
  }
}
