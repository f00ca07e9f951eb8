// Arenas ("segments"): creating and destroying them, the global map from an
// address to its segment, and block index arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include "allocator/core/mutex.h"

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

// In front of the table, a static array indexed by the address's 4 MiB step
// modulo 64 GiB (the size of the window arenas are placed in, os/linux_os.cc):
// one load where the table takes two, each of which waits for the one before
// (the check of a block and the free fast path wait for the lookup). Every
// arena of one window has an entry of its own there. An entry names at most
// one segment (the first registered of those whose steps fold onto it: in
// another window or placed by the kernel); a lookup that finds its address
// outside the entry's segment asks the table, which is always complete.
inline constexpr int kFoldBits = 14;
inline constexpr std::size_t kFoldEntries = std::size_t{1} << kFoldBits;
extern std::atomic<segment*> g_segment_fold[kFoldEntries];

// The segment holding address a, or nullptr, from the table alone. The masks
// keep any address, even one beyond 47 bits (rejected by callers' offset
// checks), in bounds. Inline: a call, even on a path the fast paths rarely
// take, makes them save registers on every call.
inline segment* segment_in_table(std::uintptr_t a) noexcept {
  map_leaf* leaf = g_segment_map[(a >> (kSegmentShift + kLeafBits)) & (kRootEntries - 1)].load(
      std::memory_order_acquire);
  if (leaf == nullptr) return nullptr;
  return (*leaf)[(a >> kSegmentShift) & (kLeafEntries - 1)].load(std::memory_order_acquire);
}

// The segment holding address a (whose 4 MiB step it is registered for), or
// nullptr, and a's offset from that segment's base in *off (set only when
// the segment is not null; on the table's path it may lie past the span, as
// callers' block checks find). The fast paths want both, and the fold's hit
// computes the offset anyway: one read of the base, not two. Reads the
// header of the segment the fold names, which may be another heap's arena
// being unmapped: call it inside a read section (core/grace.h), even for an
// address known to be a live block. Outside one, for such an address, ask
// segment_in_table: the table names only the block's own arena, which the
// live block keeps mapped.
inline segment* segment_and_offset(std::uintptr_t a, std::uint64_t* off) {
  segment* s = g_segment_fold[(a >> kSegmentShift) & (kFoldEntries - 1)].load(std::memory_order_acquire);
  if (__builtin_expect(s != nullptr, 1)) {
    *off = a - reinterpret_cast<std::uintptr_t>(s->base);
    if (__builtin_expect(*off < s->span, 1)) return s;
  }
  s = segment_in_table(a);
  if (s != nullptr) *off = a - reinterpret_cast<std::uintptr_t>(s->base);
  return s;
}

// segment_and_offset without the offset, on the same terms.
inline segment* segment_at(std::uintptr_t a) {
  std::uint64_t off;
  return segment_and_offset(a, &off);
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

// off * magic >> 40 equals off / d for off < 2^22 and d <= 2^18: with
// magic = (2^40 + r) / d, r < d, the error term off * r / (d * 2^40) stays
// below 1 / d because off * r < 2^40.
static_assert(kSegmentShift <= 22 && kMaxClassSize <= (std::size_t{1} << 18), "block division must be exact");

// Block index of `p` in `s`; false when p is not the start of a block.
inline bool block_index(const segment* s, const void* p, std::uint32_t* idx) {
  auto off = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - s->base);
  if (off >= s->span) return false;
  std::uint64_t i = (off * s->magic) >> 40;
  if (i * s->block_size != off) return false;
  *idx = static_cast<std::uint32_t>(i);
  return *idx < s->capacity;
}

// Block index of `p`, which must be a block start of `s` (our own pointers).
inline std::uint32_t block_index_of(const segment* s, const void* p) {
  auto off = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - s->base);
  return static_cast<std::uint32_t>((off * s->magic) >> 40);
}

inline std::byte* block_start(const segment* s, std::uint32_t idx) {
  return s->base + static_cast<std::size_t>(idx) * s->block_size;
}

// The pages block idx touches: [first, last], as page numbers of the span.
struct page_run {
  std::size_t first;
  std::size_t last;
  bool straddles() const { return last != first; }
};
inline std::size_t block_bytes(const segment* s) {
  return s->cls == kLargeClass ? s->span : s->block_size;  // a large block may pass 4 GiB
}
inline page_run block_pages(const segment* s, std::uint32_t idx) {
  std::size_t from = static_cast<std::size_t>(idx) * s->block_size;
  return page_run{from / kPage, (from + block_bytes(s) - 1) / kPage};
}

// The inverse: the blocks touching page `page` of the span, [first, last],
// last < capacity (first > last past the last block). A large arena's one
// block touches every page; its block_size may be 0 (over 4 GiB), so no
// division there.
struct block_run {
  std::uint64_t first;
  std::uint64_t last;
};
inline block_run page_blocks(const segment* s, std::size_t page) {
  if (s->cls == kLargeClass) return block_run{0, 0};
  std::uint64_t first = std::uint64_t{page} * kPage / s->block_size;
  std::uint64_t last = (std::uint64_t{page} * kPage + kPage - 1) / s->block_size;
  return block_run{first, last < s->capacity ? last : std::uint64_t{s->capacity} - 1};
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

// The header and metadata of a large block mapped at [base, base + span)
// (live, as create_large makes it), with the map's leaves for that range,
// not yet in the map (publish_segment). Used when a large block grows in
// place. nullptr (and an errno value in *err) on failure.
segment* large_header(os::os_interface& os, heap* owner, std::byte* base, std::size_t span, int* err);
// Enters s in the map for every 4 MiB its span touches, replacing whatever
// the entries held (the header of the same block before it grew).
void publish_segment(segment* s);

// Raises the process's generation floor (the least generation base a new
// segment gets) above every generation s has used: a handle into s never
// matches a generation of a later segment at the same addresses.
void raise_generation_floor(const segment* s);

// Unregisters and unmaps the arena and its metadata, first raising the global
// generation floor above every generation the segment used, and waiting for a
// grace period in between (core/grace.h): no lock-free reader still holds it.
void destroy_segment(os::os_interface& os, segment* s);
// When destroy_segments unmaps: now (after a grace period of its own, which
// also unmaps whatever was deferred before), or batched: unregistered at
// once, and unmapped with others under one grace period once the deferred
// ones reach kRetiredBatchSegments or kRetiredBatchBytes, or by the next
// call that unmaps now (decay, trim, a heap's destructor). A grace period
// is a process barrier (membarrier: an interrupt on every CPU running one of
// the process's threads): a program that frees large blocks of changing
// sizes evicts a cached mapping on most frees, and paid one per free.
enum class retire : std::uint8_t { now, batched };
// The batch bound: fewer than this many segments, and this many bytes of
// their mappings (resident or not), wait unmapped-to-be between calls; the
// retirement that reaches either unmaps them all. They are off every heap's
// lists, so no heap's statistics count them meanwhile.
inline constexpr std::size_t kRetiredBatchSegments = 16;
inline constexpr std::size_t kRetiredBatchBytes = std::size_t{8} << 20;

// destroy_segment for n segments under one grace period. Callers unlink
// them from every list first, and call it holding no heap lock: the wait
// for readers and the unmaps take a while, and other threads want the lock.
// Called inside a read section (in_read_section()), they are unregistered
// at once and unmapped by the next call made outside every section.
void destroy_segments(os::os_interface& os, segment* const* list, int n, retire when = retire::now);
// The header of a large block that grew in place (heap::grow_large_in_place),
// already replaced in the map and in every list: its metadata is unmapped
// with the next batch (retire::batched), not its arena, which the block keeps.
void retire_header(os::os_interface& os, segment* old);
// In a forked child (one thread, every heap's count zeroed by the caller):
// the batches other threads of the parent were unmapping go back on the
// stack (but the segment each was unmapping), and the batch counters and
// each waiting segment's heap's count (heap::retired_waiting) are
// recomputed from what the stack holds. A batch of the forking thread's own
// (a fork from a signal handler that interrupted its flush) is left to that
// flush and not counted: its unmaps may take its heaps' counts below 0.
void recount_deferred_after_fork() noexcept;
// Unmaps the segments destroyed inside read sections or retired in a batch
// so far (after a grace period); nothing when called inside one. Another
// thread may have taken some off the stack and still be unmapping them: a
// heap that must see its own gone waits for its count
// (heap::wait_for_retired), since the OS they were mapped with may not
// outlive the heap.
void unmap_deferred_segments() noexcept;
// The two halves, for callers that destroy many segments under one grace
// period: unregister each, wait_for_readers() once, then unmap each.
void unregister_segment(segment* s);
void unmap_segment(os::os_interface& os, segment* s);

// Guards the lazy creation of the segment map (held across fork).
mutex& segment_map_init_lock();

// The next generation base handed to a new segment.
std::uint64_t next_gen_base();

}  // namespace dropalloc::core
