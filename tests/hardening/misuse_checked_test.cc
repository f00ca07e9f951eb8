// Misuse in the checked build (DROPALLOC_CHECKED=1, what --config=check
// builds): a sized free whose size or alignment does not fit the block is a
// caller bug; it is refused with a message naming both, and counted.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <unordered_map>

#include "allocator/pmr/droppable_resource.h"  // the checked build of the front end
#include "tests/hardening/util.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("checked build: wrong sizes and alignments are refused and reported") {
  droppable_resource res;
  auto small = res.allocate_block(100, 8);      // class 104, 8-aligned
  auto page = res.allocate_block(20000, 4096);  // 5 pages
  auto large = res.allocate_block(1 << 20, 16);
  std::memset(small.ptr, 1, 100);
  hardening::stderr_capture capture;
  res.deallocate(small.ptr, 200, 8);        // more bytes than the block holds
  res.deallocate(small.ptr, 100, 64);       // more alignment than the class gives
  res.deallocate(page.ptr, 30000, 4096);
  res.deallocate(large.ptr, (1 << 20) + 4097, 16);
  res.deallocate(large.ptr, 1 << 20, 3);    // not a power of two
  std::string out = capture.text();
  CHECK(res.stats().misuse_refused == 5);
  CHECK(hardening::count_lines(out) == 5);
  CHECK(out.find("sized free of 200 bytes aligned to 8, block holds 104 aligned to 8") != std::string::npos);
  CHECK(out.find("sized free of 100 bytes aligned to 64") != std::string::npos);
  CHECK(out.find("nothing was freed") != std::string::npos);
  // Refused means untouched: the blocks are still live and hold their data.
  CHECK(res.usable_size(small.ptr) == 104);
  CHECK(res.check(small.ptr, small.generation) == block_state::unsealed);
  CHECK(static_cast<unsigned char*>(small.ptr)[99] == 1);
  CHECK(res.stats().blocks_live == 3);

  // Matching (or smaller, equally aligned) sizes pass silently.
  hardening::stderr_capture quiet;
  res.deallocate(small.ptr, 100, 8);
  res.deallocate(page.ptr, 20000, 4096);
  res.deallocate(large.ptr, 1 << 20, 16);
  void* p = res.allocate(64, 16);
  res.deallocate(p, 50, 16);
  CHECK(quiet.text().empty());
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 5);
}

TEST_CASE("checked build: pmr containers free with matching sizes") {
  droppable_resource res;
  hardening::stderr_capture capture;
  {
    std::pmr::vector<std::pmr::string> v(&res);
    for (int i = 0; i < 3000; ++i) v.emplace_back(static_cast<std::size_t>(i % 700), 'q');
    std::pmr::unordered_map<int, std::pmr::string> m(&res);
    for (int i = 0; i < 3000; ++i) m.emplace(i, std::pmr::string(50, 'z', &res));
  }
  CHECK(capture.text().empty());
  CHECK(res.stats().misuse_refused == 0);
  CHECK(res.stats().blocks_live == 0);
}
