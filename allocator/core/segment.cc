#include "allocator/core/segment.h"

#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/core/thread_cache.h"

#include <errno.h>

#include "allocator/core/mutex.h"
#include <new>

namespace dropalloc::core {

std::atomic<map_leaf*> g_segment_map[kRootEntries] = {};
std::atomic<segment*> g_segment_fold[kFoldEntries] = {};

namespace {

mutex g_map_init_lock;  // constant-initialised: usable before main

// Generations of a new segment start above every generation any earlier
// segment used, so a stale (pointer, generation) never matches a block that
// later occupies the same address.
std::atomic<std::uint64_t> g_gen_floor{1};

// Metadata mappings are page-aligned, so headers placed at offset 0 would all
// fall into the same L1 set (and state arrays likewise): a free touching the
// headers of more than a dozen classes in turn would then miss every time.
// Successive segments start their header one cache line further on.
std::atomic<std::uint32_t> g_colour{0};
constexpr std::uint32_t kColours = kPage / 64;

// Maps the leaves that the entries for [base, base + span) live in.
bool ensure_leaves(os::os_interface& os, const std::byte* base, std::size_t span, int* err) {
  auto first = reinterpret_cast<std::uintptr_t>(base) >> (kSegmentShift + kLeafBits);
  auto last = (reinterpret_cast<std::uintptr_t>(base) + span - 1) >> (kSegmentShift + kLeafBits);
  if (last >= kRootEntries) {  // beyond the 47-bit user address space
    *err = ENOMEM;
    return false;
  }
  for (auto i = first; i <= last; ++i) {
    if (g_segment_map[i].load(std::memory_order_acquire) != nullptr) continue;
    lock_guard guard(g_map_init_lock);
    if (g_segment_map[i].load(std::memory_order_acquire) != nullptr) continue;
    auto* leaf = static_cast<map_leaf*>(os.map_metadata(sizeof(map_leaf), err));
    if (leaf == nullptr) return false;
    g_segment_map[i].store(leaf, std::memory_order_release);
  }
  return true;
}

// Registers s (value == s) or unregisters it (nullptr) for every 4 MiB step
// of its span. In the table, value replaces what the step named: nothing, s
// itself, or the header s replaces (a large block grown in place gets a new
// one, whose old one is unmapped after a grace period, never unregistered).
// In the fold, value replaces the entry if it was free or named what the
// table did: the fold never names a segment the table no longer does, so it
// never outlives the grace period that precedes an unmap.
void set_map(segment* s, segment* value) {
  auto first = reinterpret_cast<std::uintptr_t>(s->base) >> kSegmentShift;
  auto last = (reinterpret_cast<std::uintptr_t>(s->base) + s->span - 1) >> kSegmentShift;
  for (auto i = first; i <= last; ++i) {
    map_leaf* leaf = g_segment_map[i >> kLeafBits].load(std::memory_order_acquire);
    segment* previous = (*leaf)[i & (kLeafEntries - 1)].exchange(value, std::memory_order_acq_rel);
    // After the table: a reader that misses in the fold finds value there.
    std::atomic<segment*>& fold = g_segment_fold[i & (kFoldEntries - 1)];
    segment* named = fold.load(std::memory_order_acquire);
    if (named == previous || named == nullptr) {
      fold.compare_exchange_strong(named, value, std::memory_order_acq_rel, std::memory_order_relaxed);
    }
  }
}

constexpr std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

// Lays out the segment header and its arrays in one metadata mapping.
segment* build(os::os_interface& os, std::byte* base, std::size_t span, heap* owner,
               std::uint32_t cls, std::uint32_t block_size, std::uint32_t capacity, int* err) {
  std::size_t colour = g_colour.fetch_add(1, std::memory_order_relaxed) % kColours * 64;
  std::size_t pages = span / kPage;
  std::size_t off_state = colour + round_up(sizeof(segment), 64);
  std::size_t off_meta = round_up(off_state + capacity, 64);
  std::size_t off_witness = off_meta + capacity * sizeof(std::uint64_t);
  std::size_t off_count = round_up(off_witness + pages * sizeof(std::uint16_t), 8);
  std::size_t off_bits = round_up(off_count + pages * sizeof(std::uint32_t), 8);
  std::size_t bytes = round_up(off_bits + (capacity + 63) / 64 * 8, kPage);
  auto* raw = static_cast<std::byte*>(os.map_metadata(bytes, err));
  if (raw == nullptr) return nullptr;
  auto* s = new (raw + colour) segment{};
  s->meta_base = raw;
  s->base = base;
  s->span = span;
  s->meta_bytes = bytes;
  s->owner = owner;
  s->cls = cls;
  s->block_size = block_size;
  s->capacity = capacity;
  // Every class a thread cache holds: its frees take the inline fast path.
  s->fast_capacity = cls < kNumCachedClasses ? capacity : 0;
  s->magic = capacity > 1 ? ((std::uint64_t{1} << 40) + block_size - 1) / block_size : 0;
  s->gen_base = g_gen_floor.load(std::memory_order_acquire);
  // Zero-filled memory is a valid state for these arrays: all blocks free,
  // generation 0, no witnesses, no free bits.
  s->state = reinterpret_cast<std::atomic<std::uint8_t>*>(raw + off_state);
  s->meta = reinterpret_cast<std::atomic<std::uint64_t>*>(raw + off_meta);
  s->page_witness = reinterpret_cast<std::atomic<std::uint16_t>*>(raw + off_witness);
  s->seal_count = reinterpret_cast<std::atomic<std::uint32_t>*>(raw + off_count);
  s->free_bits = reinterpret_cast<std::uint64_t*>(raw + off_bits);
  return s;
}

}  // namespace

mutex& segment_map_init_lock() { return g_map_init_lock; }

std::uint64_t next_gen_base() { return g_gen_floor.load(std::memory_order_acquire); }

std::size_t arena_span(std::uint32_t cls, std::uint32_t arenas) {
  constexpr std::size_t kFirstSpan = 64 * 1024;
  std::size_t size = kSizeClasses[cls].size;
  std::size_t first = size * 4 > kFirstSpan ? size * 4 : kFirstSpan;  // at least 4 blocks
  first = round_up(first, kPage);
  std::size_t span = first << (arenas < 8 ? arenas : 8);
  return span < kSegmentSize ? span : kSegmentSize;
}

segment* create_segment(os::os_interface& os, heap* owner, std::uint32_t cls, std::size_t span, int* err) {
  auto* base = static_cast<std::byte*>(os.map_arena(span, kSegmentSize, err));
  if (base == nullptr) return nullptr;
  if (!ensure_leaves(os, base, span, err)) {
    os.unmap_arena(base, span);
    return nullptr;
  }
  std::uint32_t size = kSizeClasses[cls].size;
  auto capacity = static_cast<std::uint32_t>(span / size);
  segment* s = build(os, base, span, owner, cls, size, capacity, err);
  if (s == nullptr) {
    os.unmap_arena(base, span);
    return nullptr;
  }
  set_map(s, s);
  return s;
}

segment* create_large(os::os_interface& os, heap* owner, std::size_t bytes, std::size_t alignment,
                      int* err) {
  std::size_t span = round_up(bytes == 0 ? 1 : bytes, kPage);
  std::size_t align = alignment > kSegmentSize ? alignment : kSegmentSize;
  auto* base = static_cast<std::byte*>(os.map_arena(span, align, err));
  if (base == nullptr) return nullptr;
  segment* s = large_header(os, owner, base, span, err);
  if (s == nullptr) {
    os.unmap_arena(base, span);
    return nullptr;
  }
  set_map(s, s);
  return s;
}

segment* large_header(os::os_interface& os, heap* owner, std::byte* base, std::size_t span, int* err) {
  if (span / kPage > 0xffffffffu) {  // page numbers are 32-bit
    *err = ENOMEM;
    return nullptr;
  }
  if (!ensure_leaves(os, base, span, err)) return nullptr;
  segment* s = build(os, base, span, owner, kLargeClass,
                     static_cast<std::uint32_t>(span > 0xffffffffu ? 0 : span), 1, err);
  if (s == nullptr) return nullptr;
  s->bump = 1;
  s->live = 1;
  s->large_request = span;
  s->state[0].store(state::kLive, std::memory_order_relaxed);
  return s;
}

void raise_generation_floor(const segment* s) {
  std::uint64_t max_gen = 0;
  for (std::uint32_t i = 0; i < s->capacity; ++i) {
    std::uint64_t g = meta::gen(s->meta[i].load(std::memory_order_relaxed));
    if (g > max_gen) max_gen = g;
  }
  std::uint64_t floor = s->gen_base + max_gen + 1;
  std::uint64_t cur = g_gen_floor.load(std::memory_order_relaxed);
  while (cur < floor && !g_gen_floor.compare_exchange_weak(cur, floor, std::memory_order_acq_rel)) {
  }
}

void publish_segment(segment* s) { set_map(s, s); }

void unregister_segment(segment* s) {
  raise_generation_floor(s);
  set_map(s, nullptr);
}

void unmap_segment(os::os_interface& os, segment* s) {
  os.unmap_arena(s->base, s->span);
  os.unmap_metadata(s->meta_base, s->meta_bytes);
}

namespace {

// Segments unregistered but not yet unmapped, each waiting for a grace period
// that began after its unregistration: those unregistered by a thread inside
// a read section of its own (a free or trim() made by a signal handler, or by
// code a seal calls, whose interrupted section may still read them: a grace
// period never waits for its caller's section), and those retired in a batch
// (retire::batched) or now. Off every list but this one; the next grace
// period a thread starts outside every section covers them all. A lock-free
// stack: a signal handler may push.
std::atomic<segment*> g_deferred{nullptr};
// What the stack holds, for the batch bound (retire::batched): segments, and
// bytes of their mappings (arena and metadata; a header alone: its
// metadata). Not what a flush took off it.
std::atomic<std::size_t> g_deferred_count{0};
std::atomic<std::size_t> g_deferred_bytes{0};

// Batches a flush took off the stack and is unmapping, one slot each: the
// rest of the batch, moved past each segment before that segment's unmap
// begins, and the flushing thread (the address of a thread-local of its own;
// claimed first, given up last). A child forked meanwhile puts the batches
// of other threads, which do not exist there, back on the stack
// (recount_deferred_after_fork): it loses at most the segment each was
// unmapping, and a batch whose flush found no free slot, or was forked
// between taking the stack and filling its slot. The forking thread's own
// batch, when it forked from a signal handler that interrupted its flush,
// stays that flush's, which goes on once the handler returns.
constexpr int kFlushSlots = 8;
std::atomic<segment*> g_flushing[kFlushSlots] = {};
std::atomic<const void*> g_flushing_thread[kFlushSlots] = {};
thread_local char t_flush_id;

std::size_t deferred_bytes_of(const segment* s) {
  return s->deferred_header_only ? s->meta_bytes : s->span + s->meta_bytes;
}

void push_deferred(segment* first, segment* last) {
  segment* top = g_deferred.load(std::memory_order_relaxed);
  do {
    last->deferred_next = top;
  } while (!g_deferred.compare_exchange_weak(top, first, std::memory_order_release, std::memory_order_relaxed));
}

void defer_unmap(os::os_interface& os, segment* s, bool header_only) {
  s->deferred_os = &os;
  s->deferred_header_only = header_only;
  s->owner->retired_waiting().fetch_add(1, std::memory_order_relaxed);
  g_deferred_count.fetch_add(1, std::memory_order_relaxed);
  g_deferred_bytes.fetch_add(deferred_bytes_of(s), std::memory_order_relaxed);
  push_deferred(s, s);
}

void unmap_all(segment* list, std::atomic<segment*>* slot) {
  while (list != nullptr) {
    segment* s = list;
    list = s->deferred_next;
    if (slot != nullptr) slot->store(list, std::memory_order_release);
    // Read before the header goes with the metadata. Its heap, and the OS
    // layer, stay until the count reaches 0 (heap::wait_for_retired): the
    // count goes down only once the unmap has returned, and nothing here
    // touches either after that.
    std::atomic<std::int64_t>& waiting = s->owner->retired_waiting();
    if (s->deferred_header_only) {
      s->deferred_os->unmap_metadata(s->meta_base, s->meta_bytes);
    } else {
      unmap_segment(*s->deferred_os, s);
    }
    waiting.fetch_sub(1, std::memory_order_release);
  }
}

// Everything on the stack, after one grace period. Those pushed before it
// began were unregistered before it, and their sections began before it.
void unmap_deferred_now() {
  segment* list = g_deferred.exchange(nullptr, std::memory_order_acquire);
  if (list == nullptr) return;
  int claimed = -1;
  for (int i = 0; i < kFlushSlots && claimed < 0; ++i) {
    const void* none = nullptr;
    if (g_flushing_thread[i].compare_exchange_strong(none, &t_flush_id, std::memory_order_acq_rel)) claimed = i;
  }
  std::atomic<segment*>* slot = claimed >= 0 ? &g_flushing[claimed] : nullptr;
  if (slot != nullptr) slot->store(list, std::memory_order_release);
  std::size_t count = 0, bytes = 0;
  for (segment* s = list; s != nullptr; s = s->deferred_next) {
    ++count;
    bytes += deferred_bytes_of(s);
  }
  g_deferred_count.fetch_sub(count, std::memory_order_relaxed);
  g_deferred_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  wait_for_readers();
  unmap_all(list, slot);  // leaves the slot empty
  if (claimed >= 0) g_flushing_thread[claimed].store(nullptr, std::memory_order_release);
}

bool batch_over_bound() {
  return g_deferred_count.load(std::memory_order_relaxed) >= kRetiredBatchSegments ||
         g_deferred_bytes.load(std::memory_order_relaxed) >= kRetiredBatchBytes;
}

}  // namespace

void destroy_segment(os::os_interface& os, segment* s) { destroy_segments(os, &s, 1); }

void destroy_segments(os::os_interface& os, segment* const* list, int n, retire when) {
  if (n == 0) return;
  for (int i = 0; i < n; ++i) unregister_segment(list[i]);
  for (int i = 0; i < n; ++i) defer_unmap(os, list[i], false);
  if (in_read_section()) return;
  // Now: these and whatever waits, under one grace period.
  if (when == retire::now || batch_over_bound()) unmap_deferred_now();
}

void retire_header(os::os_interface& os, segment* old) {
  defer_unmap(os, old, true);
  if (!in_read_section() && batch_over_bound()) unmap_deferred_now();
}

void recount_deferred_after_fork() noexcept {
  for (int i = 0; i < kFlushSlots; ++i) {
    if (g_flushing_thread[i].load(std::memory_order_acquire) == &t_flush_id) continue;  // ours: see above
    segment* rest = g_flushing[i].exchange(nullptr, std::memory_order_acq_rel);
    g_flushing_thread[i].store(nullptr, std::memory_order_release);
    if (rest == nullptr) continue;
    segment* last = rest;
    while (last->deferred_next != nullptr) last = last->deferred_next;
    push_deferred(rest, last);
  }
  std::size_t count = 0, bytes = 0;
  for (segment* s = g_deferred.load(std::memory_order_acquire); s != nullptr; s = s->deferred_next) {
    ++count;
    bytes += deferred_bytes_of(s);
    s->owner->retired_waiting().fetch_add(1, std::memory_order_relaxed);
  }
  g_deferred_count.store(count, std::memory_order_relaxed);
  g_deferred_bytes.store(bytes, std::memory_order_relaxed);
}

void unmap_deferred_segments() noexcept {
  if (g_deferred.load(std::memory_order_relaxed) == nullptr || in_read_section()) return;
  unmap_deferred_now();
}

}  // namespace dropalloc::core
