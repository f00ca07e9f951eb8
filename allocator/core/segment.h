// Arenas ("segments"): creating and destroying them, the global map from an
// address to its segment, and block index arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "allocator/core/types.h"
#include "allocator/os/os.h"

namespace dropalloc::core {

// ---- address -> segment ----------------------------------------------------
// A two-level table with one entry per 4 MiB of the 47-bit user address
// space. The root is a static array; a leaf, covering 32 GiB, is mapped the
// first time an arena lands in its range and is never unmapped (lock-free
// readers may hold it at any time). A process using a few GiB maps one or
// two 64 KiB leaves, not a 256 MiB flat table.
inline constexpr int kAddressBits = 47;
inline constexpr int kLeafBits = 13;
inline constexpr int kRootBits = kAddressBits - kSegmentShift - kLeafBits;
inline constexpr std::size_t kLeafEntries = std::size_t{1} << kLeafBits;
inline constexpr std::size_t kRootEntries = std::size_t{1} << kRootBits;

using map_leaf = std::atomic<segment*>[kLeafEntries];
extern std::atomic<map_leaf*> g_segment_map[kRootEntries];

// The segment holding address a, or nullptr. The masks keep any address,
// even one beyond 47 bits (rejected by callers' offset checks), in bounds.
inline segment* segment_at(std::uintptr_t a) {
  map_leaf* leaf = g_segment_map[(a >> (kSegmentShift + kLeafBits)) & (kRootEntries - 1)].load(
      std::memory_order_acquire);
  if (leaf == nullptr) return nullptr;
  return (*leaf)[(a >> kSegmentShift) & (kLeafEntries - 1)].load(std::memory_order_acquire);
}

// The segment whose mapping holds p, or nullptr. An arena may be smaller
// than its 4 MiB map entry: addresses past its end belong to someone else.
inline segment* segment_of(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  if ((a >> kAddressBits) != 0) return nullptr;
  segment* s = segment_at(a);
  if (s == nullptr || a - reinterpret_cast<std::uintptr_t>(s->base) >= s->span) return nullptr;
  return s;
}

// Block index of `p` in `s`; false when p is not the start of a block.
inline bool block_index(const segment* s, const void* p, std::uint32_t* idx) {
  auto off = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - s->base);
  if (off >= s->span) return false;
  std::uint64_t page = off / kPage;
  std::uint64_t in_page = off % kPage;
  if (s->per_page != 0) {  // small: per_page blocks in each page
    std::uint64_t j = (in_page * s->magic) >> 32;
    if (j >= s->per_page || j * s->block_size != in_page) return false;
    *idx = static_cast<std::uint32_t>(page * s->per_page + j);
  } else {  // multi-page and large: page-aligned blocks of pages_per_block pages
    if (in_page != 0) return false;
    std::uint64_t i = (page * s->magic) >> 32;
    if (i * s->pages_per_block != page) return false;
    *idx = static_cast<std::uint32_t>(i);
  }
  return *idx < s->capacity;
}

// Block index of `p`, which must be a block start of `s` (our own pointers).
inline std::uint32_t block_index_of(const segment* s, const void* p) {
  auto off = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - s->base);
  if (s->per_page != 0) {
    return static_cast<std::uint32_t>((off / kPage) * s->per_page + (((off % kPage) * s->magic) >> 32));
  }
  return static_cast<std::uint32_t>(((off / kPage) * s->magic) >> 32);
}

inline std::byte* block_start(const segment* s, std::uint32_t idx) {
  if (s->per_page != 0) {
    return s->base + (idx / s->per_page) * kPage + (idx % s->per_page) * s->block_size;
  }
  return s->base + static_cast<std::size_t>(idx) * s->pages_per_block * kPage;
}

// ---- lifetime ----------------------------------------------------------------
// The span of the next arena of class `cls` when the class holds `arenas`
// already: small at first (a class used for a few blocks costs little address
// space and metadata), doubling with each arena up to kSegmentSize.
std::size_t arena_span(std::uint32_t cls, std::uint32_t arenas);

// Maps an arena of `span` bytes (arena_span) for size class `cls`, aligned to
// kSegmentSize, and its metadata, and registers it in the segment map.
// Returns nullptr (and an errno value in *err) on failure.
segment* create_segment(os::os_interface& os, heap* owner, std::uint32_t cls, std::size_t span, int* err);

// Maps one large block of `bytes` (rounded up to pages) aligned to `alignment`.
segment* create_large(os::os_interface& os, heap* owner, std::size_t bytes,
                      std::size_t alignment, int* err);

// Unregisters and unmaps the arena and its metadata, first raising the global
// generation floor above every generation the segment used, and waiting for a
// grace period in between (core/grace.h): no lock-free reader still holds it.
void destroy_segment(os::os_interface& os, segment* s);
// The two halves, for callers that destroy many segments under one grace
// period: unregister each, wait_for_readers() once, then unmap each.
void unregister_segment(segment* s);
void unmap_segment(os::os_interface& os, segment* s);

// Guards the lazy creation of the segment map (held across fork).
std::mutex& segment_map_init_lock();

// The next generation base handed to a new segment.
std::uint64_t next_gen_base();

}  // namespace dropalloc::core
