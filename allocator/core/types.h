// The core data types of dropalloc, with the invariant of every field.
//
// Glossary
//   page      a 4 KiB OS page: the unit the kernel drops, seals and faults.
//   arena     a droppable mapping carved into blocks of one size class (a
//             "segment" in the code), or the mapping of one large block. Each
//             starts on a 4 MiB boundary (one address-map entry each). A class's
//             first arena is small (64 KiB, or 4 blocks) and each further one
//             twice the last, up to 4 MiB: address space and metadata grow
//             with use.
//   block     what allocate() returns. Blocks of a class sit back to back in
//             their arena, so a block may share pages with its neighbours and
//             straddle page boundaries; a large block is page-aligned.
//   metadata  everything the allocator needs to remember: free bitmaps,
//             generations, witnesses. It lives in ordinary private memory, never
//             in droppable pages, because any droppable page may read as zeros
//             at any instant.
//   generation  a number that changes whenever a block is freed; a caller holds
//             (pointer, generation) and asks whether that block is intact.
//   seal      declare a block fully written: make a translation barrier (no
//             CPU still reads its pages as they were before a drop in flight:
//             os/os.h, "stale translations"), record its witnesses, and
//             MADV_FREE its pages so the kernel drops them oldest first (with
//             MAP_DROPPABLE queued and given in batches: core/advice.cc).
//   witness   for each page a sealed block touches, the index of a non-zero
//             8-byte word of the block's portion of that page (the first one
//             from a cache line that depends on the page: core/seal_check.cc).
//             The page was dropped iff that word now reads zero. A portion
//             holding only zeros has no witness: dropping its page loses the
//             block nothing.
//   intact    sealed, not freed since, and every witness word still non-zero.
//   thread cache  a thread's bins of free blocks, one per size class up to
//             64 KiB; allocation and free of cached blocks take no lock.
//   transfer cache  per class, free blocks passed between thread caches in
//             batches, under the class lock.
//   thread tag  1-31, kept in a live block's state byte: which thread
//             allocated it. A thread sets aside, rather than reuses, small
//             blocks another thread allocated (passive false sharing).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "allocator/core/size_class.h"

namespace dropalloc {

// The answer to "is this (pointer, generation) still whole?".
enum class block_state : std::uint8_t {
  intact,    // sealed, not freed since, no page lost: contents are as sealed
  unsealed,  // live but not sealed (or written after seal() was asked to reseal):
             // the allocator cannot vouch for it
  dropped,   // a page of it was dropped after it was sealed: rebuild it
  stale,     // freed (and perhaps handed out again) since that generation
  foreign,   // not a block start of this resource
};

const char* to_string(block_state s) noexcept;

// A snapshot of one resource's counters. Exact when no other thread is
// allocating or freeing; otherwise each field is a recent value.
struct resource_stats {
  std::uint64_t blocks_live = 0;      // handed to callers and not yet freed
  std::uint64_t bytes_live = 0;       // their size-class-rounded bytes
  std::uint64_t arenas_mapped = 0;    // arenas plus large-block mappings
  std::uint64_t bytes_mapped = 0;     // address space of those mappings
  std::uint64_t bytes_mapped_peak = 0;  // the most bytes_mapped has been
  std::uint64_t bytes_resident = 0;   // of those, resident now (mincore estimate)
  std::uint64_t metadata_bytes = 0;   // ordinary memory reserved for metadata
  std::uint64_t metadata_bytes_peak = 0;  // the most metadata_bytes has been
  std::uint64_t drops_detected = 0;   // sealed blocks found dropped (once per seal)
  std::uint64_t misuse_refused = 0;   // double, foreign or interior frees ignored
  bool droppable = false;             // arenas are MAP_DROPPABLE (else private fallback)
};

// Sums the counters of two heaps' statistics (peaks too: an upper bound of
// the peak of the sum). `droppable` stays the first's.
inline void add_counters(resource_stats& sum, const resource_stats& st) noexcept {
  sum.blocks_live += st.blocks_live;
  sum.bytes_live += st.bytes_live;
  sum.arenas_mapped += st.arenas_mapped;
  sum.bytes_mapped += st.bytes_mapped;
  sum.bytes_mapped_peak += st.bytes_mapped_peak;
  sum.bytes_resident += st.bytes_resident;
  sum.metadata_bytes += st.metadata_bytes;
  sum.metadata_bytes_peak += st.metadata_bytes_peak;
  sum.drops_detected += st.drops_detected;
  sum.misuse_refused += st.misuse_refused;
}

}  // namespace dropalloc

namespace dropalloc::os {
class os_interface;
}  // namespace dropalloc::os

namespace dropalloc::core {

inline constexpr std::size_t kSegmentShift = 22;
inline constexpr std::size_t kSegmentSize = std::size_t{1} << kSegmentShift;  // 4 MiB
inline constexpr std::size_t kPagesPerSegment = kSegmentSize / kPage;
inline constexpr std::uint32_t kLargeClass = 0xffff;

// Two pieces of metadata per block.
//
// The state byte is what allocate and free touch: one byte per block keeps the
// hot metadata dense (8 blocks' states per cache line would cost a miss per
// allocation in batch workloads).
//
// The block state machine (bits 0-1 of the state byte). Every transition is
// below; nothing else changes a block's state. Each is tested in
// tests/block_state_test.cc.
//
//   free ----allocate----> live
//   live, sealed, dropped ----free----> free       generation + 1 if observed
//   live ----seal / seal_all----> sealed           a translation barrier, then
//                                                  witnesses from the contents now
//                                                  (seal_many: seal of each block,
//                                                  one barrier first for them all)
//   live, sealed, dropped ----write_and_seal----> sealed   under the seal lock:
//                                                  unsealed (live) from the first byte
//                                                  written, then src and zeros to the
//                                                  end, a translation barrier,
//                                                  witnesses, a compare, and only
//                                                  then sealed (-> dropped if the
//                                                  compare failed: a page went);
//                                                  generation + 1 unless it was live
//                                                  (a first seal keeps allocate's)
//   dropped ----seal_rewritten----> sealed         the caller rewrote all of it;
//                                                  generation + 1: a new life, so a
//                                                  reader who copied it while it was
//                                                  dropped reads stale, never intact;
//                                                  seal() and seal_all() leave it dropped
//   sealed ----seal----> sealed                    re-seal after a write, but only
//                                                  if no witness word reads zero;
//                                                  generation + 1: new contents, so
//                                                  a reader who copied the old ones
//                                                  reads stale (a rewrite can put the
//                                                  witness words back over a page
//                                                  lost unseen: only the generation
//                                                  tells that reader the copy spans it);
//   sealed ----seal----> dropped                   otherwise (the old seal is
//                                                  settled first: a lost page never
//                                                  becomes intact by a re-seal); the
//                                                  old witnesses are read again after
//                                                  the new ones are taken, so a page
//                                                  lost during the re-seal counts too
//   live, sealed, dropped ----any seal whose translation barrier fails----> dropped
//                                                  nothing sealed: no witness can be
//                                                  trusted without the barrier, so the
//                                                  block is taken as lost (generation + 1
//                                                  if it was sealed or dropped, or written
//                                                  here); only a rewrite takes it back
//   sealed ----check finds a zero witness----> dropped   (sticky)
//   seal_all never touches sealed or dropped blocks.
//   drop (kernel)   changes contents, not states: check() turns sealed into
//                   dropped when it sees it.
//   fork            the child's droppable arenas read as zeros: sealed blocks
//                   with data read dropped there; states are inherited.
//   live ----grow in place----> live               realloc of a large block never
//                                                  observed (core/large_grow.cc): free
//                                                  under its old header from the claim
//                                                  on (a racing free is a double free),
//                                                  live under a new one at the same
//                                                  address, whose generations start
//                                                  above the old header's; live again
//                                                  under the old one if the growth
//                                                  fails (tests/large_grow_test.cc);
//                                                  within a mapping already large
//                                                  enough (a reused one) only its
//                                                  request grows, under the same
//                                                  header (never observed: no
//                                                  handle to the life exists)
//   trim / decay    unmap arenas with no live block (no state changes); handles
//                   into them read stale, since unmapping raises the process's
//                   generation floor above every generation the arena used.
// During a re-seal the state is live for a moment (a concurrent check answers
// `unsealed` rather than trust half-written witnesses). Sealers of one block
// are serialised by a lock; allocate, free and check take none. Every change
// of a live block's state byte is a compare-and-exchange (frees included), so
// a free, a seal and generation() marking it observed are ordered: of two
// racing frees one wins, and no observation is lost to a free. One exception
// keeps that order by other means: a thread frees its own never-observed
// block with a plain store while its tag is biased, and any other thread
// revokes that bias before it writes such a block's state (core/tag_bias.h). A free of an
// observed block also takes its seal lock, so it never falls between a
// sealer's meta-word and state-byte exchanges.
namespace state {
inline constexpr std::uint8_t kFree = 0, kLive = 1, kSealed = 2, kDropped = 3;
inline constexpr std::uint8_t kMask = 3;
// Set once a generation of the block has been handed out (generation(),
// allocate_block(), seal()): only then must a free bump the generation, since
// only then can a (pointer, generation) handle to this life exist.
inline constexpr std::uint8_t kObserved = 4;
// Bits 3-7 of a live block: the tag (1-31) of the thread that allocated it,
// 0 for a thread without a cache (then every thread treats it as foreign). A thread that frees a block another thread allocated does not
// hand it out again itself: the two threads' blocks could share a cache line
// and the writers would fight over it (passive false sharing).
inline constexpr int kTagShift = 3;
inline constexpr std::uint8_t kTagMask = 0xf8;
inline constexpr std::uint32_t kTags = 31;
}  // namespace state

// Whether two blocks of this size can sit on one 64-byte cache line. Blocks of
// a multiple of 64 bytes start on line boundaries (arenas and pages are
// line-aligned) and own whole lines, so handing them between threads is harmless.
constexpr bool blocks_share_lines(std::uint64_t block_size) { return block_size % 64 != 0; }

// The meta word, touched only for observed blocks (by free, seal and check):
//   bits 2-11  1 + index of the witness word in the block's first portion (the
//              part of the block in the page it starts in, at most 4 KiB), 0 =
//              none: a block within one page needs no other witness, and its
//              witness and generation change together
//   bits 12-63 generation, counted from the arena's gen_base
// Written only by compare-and-exchange (seal) and by bump_generation (free),
// so neither can undo the other.
namespace meta {
inline constexpr int kWitnessShift = 2;
inline constexpr std::uint64_t kWitnessMask = 0x3ffull << kWitnessShift;
inline constexpr int kGenShift = 12;

constexpr std::uint64_t gen(std::uint64_t m) { return m >> kGenShift; }
constexpr std::uint64_t witness(std::uint64_t m) { return (m & kWitnessMask) >> kWitnessShift; }
constexpr std::uint64_t make(std::uint64_t gen, std::uint64_t witness) {
  return (gen << kGenShift) | (witness << kWitnessShift);
}

static_assert(kMaxSmallSize / 8 < (kWitnessMask >> kWitnessShift), "witness index must fit");
}  // namespace meta

class heap;

// An arena and its metadata. The struct sits at the start of an ordinary
// (non-droppable) mapping that also holds the arrays it points to.
struct segment {
  // Fixed at creation.
  std::byte* base;                 // first block; kSegmentSize-aligned (large: its alignment)
  std::size_t span;                // bytes mapped at base
  heap* owner;                     // the heap whose blocks these are
  std::uint32_t cls;               // size class, or kLargeClass
  std::uint32_t block_size;        // bytes per block (large: the page-rounded request,
                                   // 0 past 4 GiB: block_bytes() has the size)
  std::uint32_t capacity;          // blocks in the arena (large: 1)
  std::uint32_t fast_capacity;     // blocks the free fast path may take: capacity for
                                   // classes a thread cache holds (up to 64 KiB), 0
                                   // otherwise (they go the slow way)
  std::uint64_t magic;             // ceil(2^40 / block_size): off * magic >> 40 is
                                   // off / block_size for every off < kSegmentSize;
                                   // 0 for a large block (every offset maps to block 0)
  // ^ the fields above and `state` are what every free reads: keep them in
  //   the first cache line (static_assert below).
  std::atomic<std::uint8_t>* state;          // [capacity] block states (namespace state)
  std::uint64_t gen_base;          // > every generation ever used at these addresses
  std::atomic<std::uint64_t>* meta;          // [capacity] generation + witness (namespace meta)
  // Blocks sit back to back (block i at base + i * block_size), so a block may
  // straddle pages. Each page p of the span has at most one block that started
  // in an earlier page and reaches into p, and at most one block that starts
  // in p and reaches past it; the witnesses of a straddling block's later
  // portions and its seal count are kept per page, keyed that way:
  std::atomic<std::uint16_t>* page_witness;  // [pages]: for the block reaching into page p
                                             // from an earlier page, 1 + index of the
                                             // witness word in its portion of p, 0 = none
  std::atomic<std::uint32_t>* seal_count;    // [pages]: for the block that starts in page p
                                             // and straddles its end: seals begun. A sealer
                                             // raises it before it writes page_witness;
                                             // check() reads it before and after reading
                                             // witnesses, and trusts them only if it did
                                             // not move (a sequence lock with one writer
                                             // at a time: the seal lock)
  std::uint64_t* free_bits;        // [ceil(capacity / 64)]: 1 = free block below `bump`
  std::byte* meta_base;            // the metadata mapping holding this struct (which
                                   // sits a cache-colouring offset into it)
  std::size_t meta_bytes;          // bytes of that mapping

  // Guarded by the owning class's lock.
  std::uint32_t bump;              // blocks [bump, capacity) were never handed out
  std::uint32_t free_count;        // set bits in free_bits
  std::uint32_t live;              // handed out: to callers or to thread caches.
                                   // Invariant: live + free_count + (capacity - bump) == capacity
  std::uint32_t scan_word;         // no free bit below this word of free_bits
  std::uint8_t list;               // which class list holds it (segment_list)
  std::uint64_t empty_since_ms;    // when live last fell to 0 (milliseconds)
  std::uint64_t last_freed_ms;     // when a block last came back to the free bits;
                                   // 0 = none since the free pages were last handed
                                   // to the OS (heap::decay). The last, not the first:
                                   // an arena still churning keeps its warm pages
  // Large blocks only, written by whoever holds the live block (the thread
  // that allocated it, then the one that frees or grows it).
  std::size_t large_request;       // bytes of the span the block's current life asked
                                   // for, page-rounded (<= span: a reused mapping may be
                                   // up to four times the request); realloc grows it
                                   // within the mapping before it extends the mapping
  std::size_t large_tail_kept;     // bytes past the request left resident when a cached
                                   // mapping was reused for a smaller one (counted in
                                   // the heap's large_tail_kept_bytes_); 0 = none
  bool large_released;             // in the large cache with its pages handed back
                                   // (they read as zeros until written); set only
                                   // while out of the cache's slots (by
                                   // heap::release_due_large), cleared by the thread
                                   // that takes the mapping out for reuse
  bool large_release_due;          // in the large cache with its pages, past the
                                   // resident bound: they go back unless it is reused
                                   // first (guarded by the heap's segments lock)
  bool large_releasing;            // out of the cache's slots while its pages go
                                   // (heap::release_due_large; guarded by the heap's
                                   // segments lock): a forked child puts it back
  segment* next;                   // class list links
  segment* prev;
  segment* all_next;               // heap-wide list (guarded by the heap's segments lock)
  segment* all_prev;
  // Unregistered, waiting to be unmapped after a grace period (segment.cc,
  // destroy_segments, retire_header): the next in that list, the OS that
  // unmaps it and what it unmaps. Written once it is off every other list.
  segment* deferred_next;
  os::os_interface* deferred_os;
  bool deferred_header_only;       // the header of a block that grew in place: unmap
                                   // its metadata only (the block keeps the arena)

  std::uint64_t generation_of(std::uint64_t m) const { return gen_base + meta::gen(m); }
};

static_assert(offsetof(segment, state) + sizeof(void*) <= 64, "hot segment fields span two cache lines");

enum segment_list : std::uint8_t { kListNone = 0, kListAvail = 1, kListEmpty = 2 };

}  // namespace dropalloc::core
