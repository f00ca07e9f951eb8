// Per-thread caches of free blocks: the allocation fast path pops from them and
// the free fast path pushes to them, with no lock and no shared write.
//
// A thread holds one table; a heap that won a registry slot (at most
// kMaxCachedHeaps at once) has one tc_heap_cache in it, keyed by the heap's
// unique id so a cache left behind by a destroyed heap is recognised and
// discarded, never used. Blocks in a cache count as "live" in their segment.
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>

#include "allocator/core/size_class.h"

namespace dropalloc::core {

inline constexpr int kMaxCachedHeaps = 64;
// Slots per bin. Batches of a few hundred small blocks allocated, then freed
// (many programs' pattern) went to the transfer cache and back every 64
// blocks with 128 slots. Measured against 128: 256 ran glibc_simple 6%
// faster (xmalloc 13%) for 6-8% more peak memory in the threaded workloads;
// 512 ran glibc_simple 10% faster for 10-15% more.
inline constexpr std::uint32_t kBinSlots = 256;

// Size classes up to kMaxCachedSize (64 KiB) are cached per thread and served
// by the inline fast paths; a refill or flush takes no lock unless it reaches
// the transfer cache. Larger classes always go to their arenas.
inline constexpr std::size_t kNumCachedClasses = class_for(kMaxCachedSize, 8) + 1;
static_assert(kSizeClasses[kNumCachedClasses - 1].size == kMaxCachedSize);

// Small classes cache up to 64 KiB each, between 16 and kBinSlots blocks;
// classes above 4 KiB up to 128 KiB each (2-16 blocks), so a thread holds at
// most a few MiB per heap. A refill or a flush moves half a bin.
inline constexpr auto kBinCapacity = [] {
  std::array<std::uint32_t, kNumCachedClasses> caps{};
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    std::size_t size = kSizeClasses[cls].size;
    std::size_t n = cls < kNumSmallClasses ? 64 * 1024 / size : 128 * 1024 / size;
    std::size_t lo = cls < kNumSmallClasses ? 16 : 2;
    caps[cls] = static_cast<std::uint32_t>(n < lo ? lo : n > kBinSlots ? kBinSlots : n);
  }
  return caps;
}();

// Capacity of a class's transfer cache: up to 1 MiB or 4096 blocks.
inline constexpr auto kTransferCapacity = [] {
  std::array<std::uint32_t, kNumCachedClasses> caps{};
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    std::size_t n = (1u << 20) / kSizeClasses[cls].size;
    caps[cls] = static_cast<std::uint32_t>(n > 4096 ? 4096 : n < 4 ? 4 : n);
  }
  return caps;
}();
static_assert(kBinCapacity[kNumCachedClasses - 1] >= 2 && kTransferCapacity[kNumCachedClasses - 1] >= 4);

// A free block and its state byte: caching the state's address spares the
// allocation fast path the pointer-to-arena lookup.
struct cached_block {
  void* ptr;
  std::atomic<std::uint8_t>* state;
};

// A class's bin: the counts here, its blocks in tc_heap_cache::items[cls].
// Written by the owning thread only; the atomics are read by stats.
struct tc_bin {
  // items[0, count): free blocks this thread hands out, last freed first.
  std::atomic<std::uint32_t> count;
  // items[limit, kBinCapacity[cls]): blocks other threads allocated and this
  // one freed, waiting to be passed on to the transfer cache in a batch.
  // Invariant: count <= limit <= kBinCapacity[cls]; the free fast path only
  // compares count with limit.
  std::atomic<std::uint32_t> limit;
};

// heap_id and tc_table::caches are written by the owning thread and read by
// other threads' stats() under the registry lock: atomics, relaxed.
// The bins' counts sit together, apart from their blocks: setting up a cache
// writes every limit, and with each count beside its 2 KiB of slots that
// touched every page of the cache (about 300 KiB per thread and heap); now a
// page of counts, plus the slots of the classes the thread uses.
struct tc_heap_cache {
  std::atomic<std::uint64_t> heap_id;  // the heap the bins belong to; 0 = none
  tc_bin bins[kNumCachedClasses];
  cached_block items[kNumCachedClasses][kBinSlots];
};

struct tc_table {
  std::atomic<tc_heap_cache*> caches[kMaxCachedHeaps];  // by heap slot, mapped on first use
  tc_table* next;                          // all tables (guarded by the registry lock)
  tc_table* prev;
  // Kept from an exited thread (thread_cache.cc, retire_table): the bytes of
  // its caches resident then.
  std::size_t kept_resident;
  std::uint32_t tag;  // this thread's tag, 1-state::kTags (see state::kTagShift)
  // Locked by the thread that holds the table, from when it takes it until it
  // hands it back: a robust mutex, which the kernel marks when its owner
  // exits without unlocking it, so that a look finds the tables of threads
  // that exited without handing them back (thread_cache.cc,
  // reap_exited_tables). Not in the table's droppable data: metadata.
  pthread_mutex_t owner_alive;
};

// The calling thread's table; __thread (not thread_local) so access is a plain
// TLS load with no initialisation wrapper. initial-exec keeps it one load in
// the LD_PRELOAD shared object too (no __tls_get_addr call on the fast path).
extern __thread tc_table* t_cache_table __attribute__((tls_model("initial-exec")));

// The caches of the two heaps this thread used last (a program often
// interleaves two resources, or a resource and the malloc shim): the fast
// paths compare one or two ids and are done, instead of walking table -> slot
// -> cache -> id. Heap ids are never reused and a thread's caches are
// unmapped only when it exits (which clears this first), so a matching id
// means the cache is valid and belongs to that heap.
struct tag_bias;
struct tc_current {
  std::uint64_t heap_id;  // the last heap used; 0 = none
  struct tc_heap_cache* cache;
  std::uint8_t live_state;  // state::kLive | this thread's tag << state::kTagShift
  // This thread's tag's bias (core/tag_bias.h) if it holds the tag alone;
  // null otherwise: its frees then always exchange.
  tag_bias* bias;
  bool revoking;  // inside revoke_bias (core/tag_bias.cc)
  std::uint64_t other_heap_id;  // the one used before it; 0 = none
  struct tc_heap_cache* other_cache;
};
extern __thread tc_current t_current __attribute__((tls_model("initial-exec")));

}  // namespace dropalloc::core
