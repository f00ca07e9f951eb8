// Transparent huge pages on a droppable arena. The allocator asks for 4 KiB
// pages (MADV_NOHUGEPAGE), but a program may undo that, or run with THP
// "always" on a kernel that ignores the advice: then the kernel drops a whole
// 2 MiB folio at once. Every block in it must be reported dropped, every
// block outside it intact, and a 4 KiB drop inside it (which splits the folio)
// must still hit only its own block.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

using dropalloc::block_state;

namespace {
constexpr std::size_t kHuge = std::size_t{2} << 20;
constexpr std::size_t kPage = 4096;
}  // namespace

TEST_CASE("a 2 MiB drop on a huge-page-backed arena is detected for every block in it") {
  dropalloc::resource_options opts;
  opts.thread_cache = false;  // blocks in address order, for a predictable layout
  dropalloc::droppable_resource res(opts);
  bool droppable = res.arena_backing() == dropalloc::backing::droppable;
  // One-page blocks. A class's arenas start small and double, each on a 4 MiB
  // boundary: allocate (untouched) until a block starts one, so that a 2 MiB
  // huge page can sit at its start. Nothing has touched its pages yet, so
  // MADV_HUGEPAGE applies to the first faults.
  std::vector<dropalloc::block_ref> filler, blocks;
  for (;;) {
    dropalloc::block_ref b = res.allocate_block(kPage);
    // An arena's first block, in an arena of at least 2 MiB (else the advice
    // fails on the unmapped rest).
    if (reinterpret_cast<std::uintptr_t>(b.ptr) % (std::uintptr_t{4} << 20) == 0 &&
        madvise(b.ptr, kHuge, MADV_HUGEPAGE) == 0) {
      blocks.push_back(b);
      break;
    }
    filler.push_back(b);
    REQUIRE(filler.size() < 4096);
  }
  auto* base = static_cast<char*>(blocks[0].ptr);
  for (std::size_t i = 1; i < 2 * kHuge / kPage; ++i) blocks.push_back(res.allocate_block(kPage));
  // The first 2 MiB of them are one run of pages, in one arena.
  for (std::size_t i = 0; i < kHuge / kPage; ++i) REQUIRE(static_cast<char*>(blocks[i].ptr) == base + i * kPage);
  for (auto& b : filler) res.deallocate(b.ptr, kPage);
  for (std::size_t i = 0; i < blocks.size(); ++i) std::memset(blocks[i].ptr, static_cast<int>(i % 250 + 1), kPage);
  std::string rec = hardening::smaps_record(base);
  long thp_after_write = hardening::smaps_kb(rec, "AnonHugePages");
  CHECK(hardening::smaps_has_flag(rec, "hg"));
  CHECK(res.seal_all() == blocks.size());  // one MADV_FREE over the arena
  long thp_after_seal = hardening::smaps_kb(hardening::smaps_record(base), "AnonHugePages");
  MESSAGE("AnonHugePages of the arena: " << thp_after_write << " kB after writing, " << thp_after_seal
                                         << " kB after sealing (THP "
                                         << std::string(thp_after_write >= 2048 ? "used" : "not available now")
                                         << ")");

  auto in_huge = [&](const dropalloc::block_ref& b) {
    return static_cast<char*>(b.ptr) >= base && static_cast<char*>(b.ptr) < base + kHuge;
  };
  // A single 4 KiB page inside the huge page: only its block.
  char* one = base + 100 * kPage;
  if (droppable) {
    REQUIRE(madvise(one, kPage, MADV_PAGEOUT) == 0);
  } else {
    REQUIRE(res.drop_for_testing(one, kPage) == 0);
  }
  for (auto& b : blocks) {
    CHECK(res.check(b.ptr, b.generation) == (b.ptr == one ? block_state::dropped : block_state::intact));
  }
  // Now the whole 2 MiB, as reclaim of a huge folio does.
  if (droppable) {
    REQUIRE(madvise(base, kHuge, MADV_PAGEOUT) == 0);
  } else {
    REQUIRE(res.drop_for_testing(base, kHuge) == 0);
  }
  std::size_t dropped = 0, intact = 0;
  for (auto& b : blocks) {
    block_state s = res.check(b.ptr, b.generation);
    CHECK(s == (in_huge(b) ? block_state::dropped : block_state::intact));
    dropped += s == block_state::dropped;
    intact += s == block_state::intact;
    if (s == block_state::intact) CHECK(static_cast<unsigned char*>(b.ptr)[kPage - 1] != 0);
  }
  CHECK(dropped == kHuge / kPage);
  CHECK(intact == blocks.size() - kHuge / kPage);
  for (auto& b : blocks) res.deallocate(b.ptr, kPage);
}
