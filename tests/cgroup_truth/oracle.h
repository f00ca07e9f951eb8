// The oracle: what check() says about a block against what the block holds.
//
// Reads follow the resource's safe read protocol (read, then check): only if
// check() says intact AFTER the read must the bytes read equal the checksum
// kept in ordinary memory; any difference then is a wrong block.
//
// One outcome is not the library's to catch: seal() and seal_all() vouch for
// what the block holds when they read it, and a page the kernel zeroed while
// the caller was still writing is sealed as zeros. Right after a first seal
// the test therefore reads the block back, as a careful owner would; a
// difference made only of zero bytes there is counted as lost_before_seal.
// Nowhere else (and never for write_and_seal, which compares by itself) is any
// difference excused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "allocator/dropalloc.h"
#include "tests/cgroup_truth/content.h"
#include "tests/cgroup_truth/tally.h"

namespace dropalloc::truth {

inline verdict verdict_of(block_state s) {
  switch (s) {
    case block_state::dropped: return dropped;
    case block_state::unsealed: return unsealed;
    case block_state::intact: return ok;
    default: return bad;
  }
}

// `first` is what the caller just learnt (from check(), seal() or
// write_and_seal()); when it says intact, the block is read and checked again.
inline verdict judge(droppable_resource& res, const void* p, std::uint64_t generation, std::size_t size,
                     std::uint64_t expected_sum, block_state first) {
  if (first != block_state::intact) return verdict_of(first);
  std::uint64_t got = checksum(p, size);
  block_state after = res.check(p, generation);
  if (after != block_state::intact) return verdict_of(after);
  return got == expected_sum ? ok : wrong;
}

// How a block's bytes differ from what was written into it.
struct mismatch {
  std::size_t differing_bytes = 0;
  std::size_t first_differing = 0;
  std::size_t pages = 0;              // 4 KiB pages the block touches
  std::size_t pages_differing = 0;
  std::size_t pages_zero_now = 0;     // of those, reading all zeros within the block
  bool only_zeros_differ = true;      // every differing byte reads zero
  bool block_zero_now = true;
};

// expected: scratch of at least size bytes, refilled here from the seed.
inline mismatch compare(const void* block, std::size_t size, std::uint64_t seed, unsigned char* expected) {
  fill(seed, size, expected);
  const auto* got = static_cast<const unsigned char*>(block);
  mismatch m;
  auto addr = reinterpret_cast<std::uintptr_t>(block);
  std::uintptr_t first_page = addr / kPageBytes, last_page = (addr + size - 1) / kPageBytes;
  m.pages = last_page - first_page + 1;
  for (std::uintptr_t page = first_page; page <= last_page; ++page) {
    std::size_t from = page == first_page ? 0 : page * kPageBytes - addr;
    std::size_t to = page == last_page ? size : (page + 1) * kPageBytes - addr;
    bool differs = false, zero = true;
    for (std::size_t k = from; k < to; ++k) {
      if (got[k] != 0) zero = false;
      if (got[k] == expected[k]) continue;
      if (m.differing_bytes++ == 0) m.first_differing = k;
      if (got[k] != 0) m.only_zeros_differ = false;
      differs = true;
    }
    if (!zero) m.block_zero_now = false;
    if (differs) {
      ++m.pages_differing;
      if (zero) ++m.pages_zero_now;
    }
  }
  return m;
}

inline void print_wrong(std::FILE* out, int path, int moment, const void* block, std::size_t size,
                        std::uint64_t seed, const mismatch& m) {
  std::fprintf(out,
               "WRONG: %s, %s: %zu-byte block at %p (page offset %zu, pattern %s): %zu bytes differ from "
               "offset %zu, in %zu of %zu pages (%zu of them all zeros now); differing bytes %s; block %s\n",
               path_name(path), moment_name(moment), size, block,
               static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(block) % kPageBytes),
               to_string(pattern_of(seed)), m.differing_bytes, m.first_differing, m.pages_differing, m.pages,
               m.pages_zero_now, m.only_zeros_differ ? "all read zero" : "include non-zero values",
               m.block_zero_now ? "all zeros now" : "not all zeros");
  std::fflush(out);
}

}  // namespace dropalloc::truth
