// Slow paths of the heap: arenas per class, the transfer caches, large
// blocks, frees, queries and statistics. Thread caches and fork handling are
// in thread_cache.cc, sealing and the drop check in seal_check.cc.
#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"
#include "allocator/core/grace.h"
#include "allocator/core/purger.h"
#include "allocator/os/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <new>
#include <utility>

namespace dropalloc {

const char* to_string(block_state s) noexcept {
  switch (s) {
    case block_state::intact: return "intact";
    case block_state::unsealed: return "unsealed";
    case block_state::dropped: return "dropped";
    case block_state::stale: return "stale";
    case block_state::foreign: return "foreign";
  }
  return "?";
}

namespace core {

const char* to_string(alloc_error e) noexcept {
  switch (e) {
    case alloc_error::none: return "no error";
    case alloc_error::out_of_memory: return "the kernel refused to map more memory";
    case alloc_error::too_large: return "request larger than the address space allows";
    case alloc_error::bad_alignment: return "alignment is not a power of two";
  }
  return "?";
}

namespace {

std::atomic<std::uint64_t> g_next_heap_id{1};

// DROPALLOC_ABORT_ON_MISUSE, read once (0: not yet). Threads racing to read
// it first compute the same answer.
std::atomic<int> g_misuse_aborts{0};

bool misuse_aborts() {
  int v = g_misuse_aborts.load(std::memory_order_relaxed);
  if (v == 0) {
    v = os::option_flag(os::option::abort_on_misuse) ? 2 : 1;
    g_misuse_aborts.store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

}  // namespace

using internal::now_ms;
using internal::push;
using internal::unlink;
using internal::read_counter;
using internal::registry;
using internal::registry_t;
using internal::set_counter;

// ---- construction ------------------------------------------------------------

heap::heap(const heap_options& options)
    : os_(options.os != nullptr ? options.os : &os::system_os()),
      options_(options),
      id_(g_next_heap_id.fetch_add(1, std::memory_order_relaxed)),
      slot_(-1) {
  // Seals need the barrier's page: mapped now, a seal never lacks it later.
  (void)os::prepare_translation_barrier();
  registry_t& r = registry();
  lock_guard guard(r.lock);
  next_heap_ = r.all_heaps;
  if (r.all_heaps != nullptr) r.all_heaps->prev_heap_ = this;
  r.all_heaps = this;
  if (!options.thread_cache) return;
  for (int i = 0; i < kMaxCachedHeaps; ++i) {
    if (r.heaps[i] == nullptr) {
      r.heaps[i] = this;
      r.ids[i] = id_;
      slot_ = i;
      break;
    }
  }
}

heap::~heap() {
  {
    registry_t& r = registry();
    lock_guard guard(r.lock);
    if (slot_ >= 0) {
      r.heaps[slot_] = nullptr;
      r.ids[slot_] = 0;
    }
    if (prev_heap_ != nullptr) prev_heap_->next_heap_ = next_heap_; else r.all_heaps = next_heap_;
    if (next_heap_ != nullptr) next_heap_->prev_heap_ = prev_heap_;
  }
  // Tables kept from exited threads may hold an (empty) cache of this heap,
  // which nothing would unmap until a new thread took the table and exited.
  if (slot_ >= 0) internal::release_spare_tables(/*wait=*/true);
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    if (classes_[cls].transfer != nullptr) {
      os_->unmap_metadata(classes_[cls].transfer, kTransferCapacity[cls] * sizeof(cached_block));
    }
  }
  wait_for_retired(/*bounded=*/false);
  lock_guard guard(segments_lock_);
  // One grace period for all: unregister every arena, wait, then unmap.
  for (segment* s = all_; s != nullptr; s = s->all_next) unregister_segment(s);
  wait_for_readers();
  while (all_ != nullptr) {
    segment* s = all_;
    all_ = s->all_next;
    unmap_segment(*os_, s);
  }
}

void heap::link_all(segment* s) noexcept {
  lock_guard guard(segments_lock_);
  link_all_locked(s);
}

void heap::link_all_locked(segment* s) noexcept {
  s->all_prev = nullptr;
  s->all_next = all_;
  if (all_ != nullptr) all_->all_prev = s;
  all_ = s;
  mapped_now_ += s->span;
  meta_now_ += s->meta_bytes;
  if (mapped_now_ > mapped_peak_) mapped_peak_ = mapped_now_;
  if (meta_now_ > meta_peak_) meta_peak_ = meta_now_;
}

void heap::unlink_all(segment* s) noexcept {
  lock_guard guard(segments_lock_);
  unlink_all_locked(s);
}

void heap::unlink_all_locked(segment* s) noexcept {
  if (s->all_prev != nullptr) s->all_prev->all_next = s->all_next; else all_ = s->all_next;
  if (s->all_next != nullptr) s->all_next->all_prev = s->all_prev;
  mapped_now_ -= s->span;
  meta_now_ -= s->meta_bytes;
}

// ---- allocation slow paths ---------------------------------------------------

void* heap::allocate_slow(std::size_t bytes, std::size_t alignment, std::size_t cls,
                          alloc_error* err) noexcept {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    *err = alloc_error::bad_alignment;
    return nullptr;
  }
  if (cls == kNoClass) return allocate_large(bytes, alignment, err);  // which starts the purger itself
  // No lock held here, nor a C library lock that creating a thread takes (as
  // a free may be called under one: purger.h).
  purger::start_if_requested();
  cached_block b{nullptr, nullptr};
  int os_err = 0;
  tc_heap_cache* c = cls < kNumCachedClasses ? thread_cache() : nullptr;
  if (c != nullptr) {
    maybe_rebias(t_current.bias);
    tc_bin& bin = c->bins[cls];
    cached_block* items = c->items[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    if (n == 0) {
      std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
      if (limit == 0) {  // all room taken by other threads' blocks: pass them on
        give_back(static_cast<std::uint32_t>(cls), items, kBinCapacity[cls]);
        limit = kBinCapacity[cls];
        bin.limit.store(limit, std::memory_order_relaxed);
      }
      std::uint32_t want = kBinCapacity[cls] / 2;
      n = take_blocks(static_cast<std::uint32_t>(cls), items, want < limit ? want : limit, &os_err);
    }
    if (n != 0) {
      b = items[n - 1];
      bin.count.store(n - 1, std::memory_order_relaxed);
    }
  } else {
    take_blocks(static_cast<std::uint32_t>(cls), &b, 1, &os_err);
  }
  if (b.ptr == nullptr) {
    *err = alloc_error::out_of_memory;
    return nullptr;
  }
  b.state->store(t_current.live_state, std::memory_order_release);
  return b.ptr;
}

void* heap::allocate_zeroed(std::size_t bytes, std::size_t alignment, alloc_error* err) noexcept {
  if (class_for(bytes, alignment) != kNoClass || alignment == 0 || (alignment & (alignment - 1)) != 0) {
    void* p = allocate(bytes, alignment, err);
    if (p != nullptr) memset(p, 0, bytes);
    return p;
  }
  return allocate_large(bytes, alignment, err, /*zero=*/true);
}

void* heap::allocate_large(std::size_t bytes, std::size_t alignment, alloc_error* err,
                           bool zero) noexcept {
  purger::start_if_requested();  // as allocate_slow() does for small blocks
  if (bytes > kMaxRequest || alignment > kMaxRequest) {
    *err = alloc_error::too_large;
    return nullptr;
  }
  std::size_t span = (bytes == 0 ? kPage : (bytes + kPage - 1) / kPage * kPage);
  if (segment* cached = reuse_large(span, alignment)) {
    // A recycled mapping may be up to four times the request. Its pages past
    // the request stay as they are while the tails kept so are few (see
    // keep_large_tail); past that they go back now, or they would stay
    // resident for as long as the block lives (5-25 MiB blocks: 480 MiB peak
    // with them, 403 without, for about 375 MiB live at most).
    // One whose pages went back as it entered the cache reads as zeros: no
    // tail to keep or release, nothing to clear.
    const bool zeroed = cached->large_released;
    cached->large_released = false;
    cached->large_request = span;
    const std::size_t tail = cached->span - span;
    if (tail != 0 && !zeroed && !keep_large_tail(cached, tail)) (void)os_->release_pages(cached->base + span, tail);
    if (zero && !zeroed) memset(cached->base, 0, bytes);  // a recycled mapping holds old data
    large_live_bytes_.fetch_add(cached->span, std::memory_order_relaxed);
    // Live only now: a seal_all() racing this allocation may seal the block
    // as soon as it is live, and its tail released after that seal would
    // read as a lost page (the block dropped before its owner had it).
    cached->state[0].store(state::kLive, std::memory_order_release);
    return cached->base;
  }
  // A new mapping's pages will be touched: hand back the cached ones that
  // are past the resident bound first, so that the peak does not hold both.
  (void)release_due_large();
  int os_err = 0;
  segment* s = create_large(*os_, this, bytes, alignment, &os_err);
  if (s == nullptr && release_large_cache(true) != 0) {
    s = create_large(*os_, this, bytes, alignment, &os_err);  // cached mappings freed: try again
  }
  if (s == nullptr) {
    *err = alloc_error::out_of_memory;
    return nullptr;
  }
  link_all(s);
  large_live_bytes_.fetch_add(s->span, std::memory_order_relaxed);
  return s->base;
}

bool heap::keep_large_tail(segment* s, std::size_t bytes) noexcept {
  // Only in ordinary memory. A droppable block's seal puts witnesses on every
  // page that holds data: an old life's tail would make a drop there count
  // against a block whose caller never wrote it. Released, it reads zero.
  if (os_->arena_backing() != backing::ordinary) return false;
  std::size_t kept = large_tail_kept_bytes_.load(std::memory_order_relaxed);
  do {
    if (kept + bytes > kLargeTailKeptMaxBytes) return false;
  } while (!large_tail_kept_bytes_.compare_exchange_weak(kept, kept + bytes, std::memory_order_relaxed));
  s->large_tail_kept = bytes;
  return true;
}

void heap::shrink_large_tail(segment* s, std::size_t bytes) noexcept {
  if (s->large_tail_kept <= bytes) return;
  large_tail_kept_bytes_.fetch_sub(s->large_tail_kept - bytes, std::memory_order_relaxed);
  s->large_tail_kept = bytes;
}

void heap::forget_large_tail(segment* s) noexcept { shrink_large_tail(s, 0); }

// A cached mapping fits if it is big enough but not wastefully so (at most
// four times the request: its pages past the request are released) and
// aligned as asked.
segment* heap::reuse_large(std::size_t span, std::size_t alignment) noexcept {
  lock_guard guard(segments_lock_);
  int best = -1;
  for (int i = 0; i < kLargeCacheSlots; ++i) {
    segment* s = large_cache_[i];
    if (s == nullptr || s->span < span || s->span / 4 > span) continue;
    if (reinterpret_cast<std::uintptr_t>(s->base) % alignment != 0) continue;
    if (best < 0 || s->span < large_cache_[best]->span) best = i;
  }
  if (best < 0) return nullptr;
  segment* s = large_cache_[best];
  large_cache_[best] = nullptr;
  uncache_large_locked(s);
  set_counter(&s->live, 1);
  // Still free: the caller makes it live once it is ready (allocate_large).
  // Out of the cache, nobody else hands it out meanwhile.
  return s;
}

segment* heap::take_cached_large(int i) noexcept {
  segment* c = large_cache_[i];
  large_cache_[i] = nullptr;
  uncache_large_locked(c);
  unlink_all_locked(c);
  return c;
}

std::size_t heap::large_cache_resident_bound() const noexcept {
  const std::size_t half_live = large_live_bytes_.load(std::memory_order_relaxed) / 2;
  return half_live > kLargeCacheResidentFloorBytes ? half_live : kLargeCacheResidentFloorBytes;
}

void heap::uncache_large_locked(segment* s) noexcept {
  large_cache_bytes_ -= s->span;
  if (!s->large_released) large_cache_resident_bytes_ -= s->span;
  if (s->large_release_due) {
    s->large_release_due = false;
    large_cache_due_.store(large_cache_due_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  }
}

std::size_t heap::release_due_large() noexcept {
  if (large_cache_due_.load(std::memory_order_relaxed) == 0) return 0;
  segment* due[kLargeCacheSlots];
  std::uint64_t cached_ms[kLargeCacheSlots];
  int n = 0;
  {
    lock_guard guard(segments_lock_);
    for (int i = 0; i < kLargeCacheSlots; ++i) {
      segment* c = large_cache_[i];
      if (c == nullptr || !c->large_release_due) continue;
      // Out of its slot, nobody takes it for reuse while its pages go; it
      // stays in all_ (its address still ours, its state free).
      large_cache_[i] = nullptr;
      uncache_large_locked(c);
      c->large_releasing = true;
      cached_ms[n] = large_cached_ms_[i];
      due[n++] = c;
    }
  }
  std::size_t released = 0;
  for (int i = 0; i < n; ++i) {
    // A release the OS refuses leaves the pages as they were: cached as kept.
    due[i]->large_released = os_->release_pages(due[i]->base, due[i]->span) == 0;
    if (due[i]->large_released) released += due[i]->span;
  }
  segment* unmapped[kLargeCacheSlots];
  int n_unmapped = 0;
  {
    lock_guard guard(segments_lock_);
    for (int i = 0; i < n; ++i) {
      if (!recache_large_locked(due[i], cached_ms[i])) unmapped[n_unmapped++] = due[i];
    }
  }
  destroy_segments(*os_, unmapped, n_unmapped);
  return released;
}

bool heap::recache_large_locked(segment* c, std::uint64_t cached_ms) noexcept {
  c->large_releasing = false;
  int slot = -1;
  for (int j = 0; j < kLargeCacheSlots && slot < 0; ++j) {
    if (large_cache_[j] == nullptr) slot = j;
  }
  if (slot < 0 || large_cache_bytes_ + c->span > kLargeCacheMaxBytes) {
    unlink_all_locked(c);  // the cache filled up meanwhile
    return false;
  }
  large_cache_[slot] = c;
  large_cached_ms_[slot] = cached_ms;  // it ages from its free, not from now
  large_cache_bytes_ += c->span;
  if (!c->large_released) large_cache_resident_bytes_ += c->span;
  // A decay pass that ran while it was out of its slot did not see it, and
  // may have found nothing left to do: it still has to be handed back.
  note_decay_work();
  return true;
}

void heap::restore_large_cache_after_fork() noexcept {
  internal::registry_t& r = internal::registry();
  lock_guard registry_guard(r.lock);
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) {
    segment* unmapped[kLargeCacheSlots];
    int n_unmapped = 0;
    {
      lock_guard guard(h->segments_lock_);
      for (segment* s = h->all_; s != nullptr && n_unmapped < kLargeCacheSlots; s = s->all_next) {
        if (s->cls != kLargeClass || !s->large_releasing) continue;
        // Its release may or may not have been made: cached as kept, so that
        // a calloc that reuses it clears it.
        s->large_released = false;
        if (!h->recache_large_locked(s, now_ms())) unmapped[n_unmapped++] = s;
      }
    }
    destroy_segments(*h->os_, unmapped, n_unmapped);
  }
}

bool heap::cache_large(segment* s) noexcept {
  // Mappings pushed out to make room are unmapped after the lock is released:
  // with it held, every other thread's large allocation and free would wait
  // for a grace period and the munmaps.
  segment* evicted[kLargeCacheSlots];
  int n_evicted = 0;
  bool kept = false, due = false;
  if (s->span > kLargeCacheMaxBytes / 2) return false;
  s->large_released = false;
  s->large_release_due = false;
  s->large_releasing = false;
  {
    lock_guard guard(segments_lock_);
    std::uint64_t now = now_ms();
    auto evict = [&](int i) { evicted[n_evicted++] = take_cached_large(i); };
    // Make room: drop expired entries, then the oldest, until this one fits.
    for (int i = 0; i < kLargeCacheSlots; ++i) {
      if (large_cache_[i] != nullptr && now - large_cached_ms_[i] >= options_.empty_arena_decay_ms) evict(i);
    }
    int slot = -1;
    while (true) {
      int oldest = -1;
      for (int i = 0; i < kLargeCacheSlots; ++i) {
        if (large_cache_[i] == nullptr) slot = i;
        else if (oldest < 0 || large_cached_ms_[i] < large_cached_ms_[oldest]) oldest = i;
      }
      if (slot >= 0 && large_cache_bytes_ + s->span <= kLargeCacheMaxBytes) break;
      if (oldest < 0) break;
      evict(oldest);
    }
    if (slot >= 0 && large_cache_bytes_ + s->span <= kLargeCacheMaxBytes) {
      set_counter(&s->live, 0);
      note_decay_work();
      large_cache_[slot] = s;
      large_cached_ms_[slot] = now;
      large_cache_bytes_ += s->span;
      // Past the resident bound its pages are due to go back (see
      // kLargeCacheResidentFloorBytes): not here, as a reuse may come first.
      large_cache_resident_bytes_ += s->span;
      if (large_cache_resident_bytes_ > large_cache_resident_bound()) {
        s->large_release_due = true;
        large_cache_due_.store(large_cache_due_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        due = true;
      }
      kept = true;
    }
  }
  // Batched: a program freeing large blocks of changing sizes evicts on most
  // frees, and a grace period each was a process barrier each.
  destroy_segments(*os_, evicted, n_evicted, retire::batched);
  // Without a purger thread no decay pass comes unless the program asks
  // (trim): hand the pages back now, as the free that made them due.
  if (due && (!options_.background_decay || purger::unavailable())) (void)release_due_large();
  return kept;
}

std::uint32_t heap::take_blocks(std::uint32_t cls, cached_block* out, std::uint32_t want, int* err) noexcept {
  class_state& c = classes_[cls];
  lock_guard guard(c.lock);
  std::uint32_t have = c.transfer_count.load(std::memory_order_relaxed);
  if (have != 0) {
    std::uint32_t n = have < want ? have : want;
    memcpy(out, c.transfer + (have - n), n * sizeof(cached_block));
    c.transfer_count.store(have - n, std::memory_order_relaxed);
    c.transfer_used_ms = now_ms();
    return n;
  }
  std::uint32_t got = 0;
  while (got < want) {
    segment* s = c.avail;
    if (s == nullptr) {
      s = c.empty;
      if (s != nullptr) {
        unlink(&c.empty, s);
      } else {
        s = create_segment(*os_, this, cls, arena_span(cls, c.arenas), err);
        if (s == nullptr) break;
        ++c.arenas;
        link_all(s);
      }
      push(&c.avail, s, kListAvail);
    }
    // Lowest free blocks first (address order keeps pages dense), then fresh ones.
    std::uint32_t words = (s->bump + 63) / 64;
    while (got < want && s->free_count != 0 && s->scan_word < words) {
      std::uint64_t& w = s->free_bits[s->scan_word];
      if (w == 0) {
        ++s->scan_word;
        continue;
      }
      int bit = __builtin_ctzll(w);
      w &= w - 1;
      --s->free_count;
      std::uint32_t idx = s->scan_word * 64 + static_cast<std::uint32_t>(bit);
      out[got++] = cached_block{block_start(s, idx), &s->state[idx]};
      set_counter(&s->live, s->live + 1);
    }
    while (got < want && s->bump < s->capacity) {
      out[got++] = cached_block{block_start(s, s->bump), &s->state[s->bump]};
      set_counter(&s->bump, s->bump + 1);
      set_counter(&s->live, s->live + 1);
    }
    if (s->free_count == 0 && s->bump == s->capacity) unlink(&c.avail, s);  // full
  }
  // Collected in ascending address order; callers pop from the end, so
  // reverse and they walk memory upwards (friendlier to prefetchers).
  for (std::uint32_t i = 0, j = got == 0 ? 0 : got - 1; i < j; ++i, --j) std::swap(out[i], out[j]);
  return got;
}

void heap::give_back(std::uint32_t cls, const cached_block* items, std::uint32_t n) noexcept {
  class_state& c = classes_[cls];
  lock_guard guard(c.lock);
  std::uint64_t now = now_ms();
  if (slot_ >= 0 && cls < kNumCachedClasses) {
    if (c.transfer == nullptr) {
      int err = 0;
      c.transfer = static_cast<cached_block*>(os_->map_metadata(kTransferCapacity[cls] * sizeof(cached_block), &err));
    }
    std::uint32_t have = c.transfer_count.load(std::memory_order_relaxed);
    if (c.transfer != nullptr && have + n <= kTransferCapacity[cls]) {
      memcpy(c.transfer + have, items, n * sizeof(cached_block));
      c.transfer_count.store(have + n, std::memory_order_relaxed);
      c.transfer_used_ms = now;
      note_decay_work();
      decay_class_on_free(c, now);
      return;
    }
  }
  return_to_arenas(c, items, n);
  drain_transfer(c, now, false);
  release_empty(c, false, nullptr);
  decay_class_on_free(c, now);
}

void heap::return_to_arenas(class_state& c, const cached_block* items, std::uint32_t n) noexcept {
  if (n != 0) note_decay_work();
  const std::uint64_t now = now_ms();
  for (std::uint32_t i = 0; i < n; ++i) {
    // The table alone, not segment_of: no read section here (the block is
    // live, so its own arena stays mapped), and the fold may name another
    // heap's arena, which may be being unmapped (core/segment.h).
    segment* s = segment_in_table(reinterpret_cast<std::uintptr_t>(items[i].ptr));
    std::uint32_t idx = block_index_of(s, items[i].ptr);
    s->free_bits[idx / 64] |= std::uint64_t{1} << (idx % 64);
    ++s->free_count;
    if (idx / 64 < s->scan_word) s->scan_word = idx / 64;
    s->last_freed_ms = now;  // pages are purged once no block came back for the decay time
    bool was_full = s->list == kListNone;
    set_counter(&s->live, s->live - 1);
    if (s->live == 0) {
      if (!was_full) unlink(&c.avail, s);
      s->empty_since_ms = now;
      push(&c.empty, s, kListEmpty);
    } else if (was_full) {
      push(&c.avail, s, kListAvail);
    }
  }
}

// ---- free slow path ------------------------------------------------------------

void heap::deallocate_checked(void* p) noexcept {
  segment* s;
  std::uint32_t idx = 0;
  std::uint8_t was = 0;
  const char* refused = nullptr;
  {
    // A double free may name an arena that another free of the same block is
    // unmapping: validate and retire inside a read section, so that of two
    // racing frees the loser never reads unmapped metadata. Once retired here
    // the block is ours: its arena stays mapped until we give it back, so the
    // rest needs no section (and may unmap, which a section must not). The
    // report waits until the section is closed: writing to a stderr pipe
    // nobody drains could block, and an open section holds up every unmap.
    read_section reading;
    s = find_block(p, &idx);
    if (s == nullptr) {
      refused = "not a block of this resource";
    } else if (!retire(s, idx, &was)) {
      refused = "double free";
    }
  }
  if (refused != nullptr) return report_misuse(refused, p);
  deallocate_retired(s, idx, p, was);
  // No lock held here (starting a thread allocates).
  if (options_.purger_starts_on_free) purger::start_if_requested();
}

void heap::deallocate_generation(void* p, std::uint64_t expected_gen) noexcept {
  segment* s;
  std::uint32_t idx = 0;
  std::uint8_t was = 0;
  const char* refused = nullptr;
  {
    read_section reading;  // as in deallocate_checked
    s = find_block(p, &idx);
    if (s == nullptr) {
      refused = "not a block of this resource";
    } else if (expected_gen == 0 || !retire_observed(s, idx, &was, expected_gen)) {
      refused = was == 0xff || expected_gen == 0 ? "the handle's generation is not the block's (freed since)"
                                                 : "double free";
    }
  }
  if (refused != nullptr) return report_misuse(refused, p);
  deallocate_retired(s, idx, p, was);
  if (options_.purger_starts_on_free) purger::start_if_requested();
}

// After retire(): the block is free and ours. `st` is its state before.
void heap::deallocate_retired(segment* s, std::uint32_t idx, void* p, std::uint8_t st) noexcept {
  if (s->cls == kLargeClass) {
    forget_large_tail(s);  // the whole mapping is free now: its tail is no longer a live block's
    large_live_bytes_.fetch_sub(s->span, std::memory_order_relaxed);
    // The mapping goes away or into the large cache. retire() moved the
    // generation of an observed block, so a reuse of the cached mapping
    // reads stale to old handles.
    if (cache_large(s)) return;
    unlink_all(s);
    destroy_segment(*os_, s);
    return;
  }
  cached_block b{p, &s->state[idx]};
  tc_heap_cache* c = s->cls < kNumCachedClasses ? thread_cache() : nullptr;
  if (c == nullptr) {
    give_back(s->cls, &b, 1);
    return;
  }
  tc_bin& bin = c->bins[s->cls];
  cached_block* items = c->items[s->cls];
  const std::uint32_t cap = kBinCapacity[s->cls];
  std::uint32_t n = bin.count.load(std::memory_order_relaxed);
  std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
  if (n >= limit && limit < cap) {
    // Full, partly with other threads' blocks: pass those on first.
    give_back(s->cls, items + limit, cap - limit);
    limit = cap;
    bin.limit.store(limit, std::memory_order_relaxed);
  }
  if (n >= limit) {
    // Full of this thread's own: hand the top half back. Keeping the most
    // recently freed (warmest) blocks instead would cost moving the rest down
    // on every flush.
    std::uint32_t half = cap / 2;
    give_back(s->cls, items + (n - half), half);
    n -= half;
    bin.count.store(n, std::memory_order_relaxed);
  }
  const std::uint8_t tag = st & state::kTagMask;
  if (tag != (t_current.live_state & state::kTagMask) && blocks_share_lines(s->block_size)) {
    // Another thread allocated it: keep it from this thread's allocations.
    items[limit - 1] = b;
    bin.limit.store(limit - 1, std::memory_order_relaxed);
    return;
  }
  items[n] = b;
  bin.count.store(n + 1, std::memory_order_relaxed);
}

void heap::report_misuse(const char* what, const void* p) noexcept {
  std::uint64_t count = misuse_refused_.fetch_add(1, std::memory_order_relaxed);
  if (count < 16 || misuse_aborts()) {
    char line[256];
    int len = snprintf(line, sizeof line, "dropalloc: deallocate(%p) refused: %s%s\n", p, what,
                       misuse_aborts() ? "" : " (ignored; nothing was freed)");
    // snprintf returns the untruncated length: never write past the buffer.
    if (len < 0) return;
    if (static_cast<std::size_t>(len) >= sizeof line) len = static_cast<int>(sizeof line - 1);
    ssize_t ignored = write(STDERR_FILENO, line, static_cast<std::size_t>(len));
    (void)ignored;
  }
  if (misuse_aborts()) abort();
}

bool heap::sized_free_matches(const void* p, std::size_t bytes, std::size_t alignment) noexcept {
  char what[128];
  {
    read_section reading;  // closed before reporting (see deallocate_checked)
    std::uint32_t idx = 0;
    segment* s = find_block(p, &idx);
    // Not a live block of ours: deallocate() itself refuses and reports that.
    if (s == nullptr || (s->state[idx].load(std::memory_order_acquire) & state::kMask) == state::kFree) {
      return true;
    }
    std::size_t usable = s->cls == kLargeClass ? s->span : s->block_size;
    auto addr = reinterpret_cast<std::uintptr_t>(p);
    // What the block guarantees: its class's alignment, or for a mapping of its
    // own, whatever its address has (at least the requested one).
    std::size_t align = s->cls == kLargeClass ? static_cast<std::size_t>(addr & (~addr + 1))
                                              : class_alignment(s->cls);
    bool pow2 = alignment != 0 && (alignment & (alignment - 1)) == 0;
    if (bytes <= usable && pow2 && alignment <= align) return true;
    snprintf(what, sizeof what, "sized free of %zu bytes aligned to %zu, block holds %zu aligned to %zu",
             bytes, alignment, usable, align);
  }
  report_misuse(what, p);
  return false;
}

// ---- queries ---------------------------------------------------------------------

// Every query below finds the segment without a lock: a read section keeps
// it mapped while we look (core/grace.h).

bool heap::owns(const void* p) const noexcept {
  read_section reading;
  std::uint32_t idx = 0;
  return find_block(p, &idx) != nullptr;
}

std::uint64_t heap::generation(const void* p) const noexcept {
  read_section reading;
  std::uint32_t idx = 0;
  segment* s = find_block(p, &idx);
  if (s == nullptr) return 0;
  auto& sb = s->state[idx];
  std::uint8_t st = sb.load(std::memory_order_acquire);
  for (;;) {
    if ((st & state::kMask) == state::kFree) return 0;
    // From now on a handle to this life may exist: its free must move the
    // generation. Compare-and-exchange against the free's own (retire), so
    // exactly one of them goes first.
    if ((st & state::kObserved) == 0 && !before_state_write(sb, st)) return 0;  // a handler inside its free
    if ((st & state::kObserved) == 0 &&
        !sb.compare_exchange_weak(st, static_cast<std::uint8_t>(st | state::kObserved), std::memory_order_acq_rel)) {
      continue;
    }
    st |= state::kObserved;
    std::uint64_t m = s->meta[idx].load(std::memory_order_acquire);
    // Still the same observed life: the generation read belongs to a life
    // live at this moment (a free that moved it since would show here).
    std::uint8_t again = sb.load(std::memory_order_acquire);
    if (again == st) return s->generation_of(m);
    st = again;
  }
}

std::size_t heap::usable_size(const void* p) const noexcept {
  read_section reading;
  std::uint32_t idx = 0;
  segment* s = find_block(p, &idx);
  if (s == nullptr) return 0;
  if ((s->state[idx].load(std::memory_order_acquire) & state::kMask) == state::kFree) return 0;
  return s->cls == kLargeClass ? s->span : s->block_size;
}

// ---- statistics ------------------------------------------------------------------------

resource_stats heap::stats(class_usage* per_class) const noexcept { return stats_impl(per_class, false); }

void heap::visit_heaps(void (*fn)(const heap&, const resource_stats&, const class_usage*, void*), void* ctx,
                       bool per_class) noexcept {
  registry_t& r = registry();
  lock_guard guard(r.lock);
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) {
    class_usage classes[kNumClasses];
    resource_stats st = h->stats_impl(per_class ? classes : nullptr, true);
    fn(*h, st, per_class ? classes : nullptr, ctx);
  }
}

resource_stats heap::stats_impl(class_usage* per_class, bool registry_held) const noexcept {
  resource_stats st;
  std::uint64_t cached_blocks[kNumCachedClasses] = {};
  if (slot_ >= 0) {
    registry_t& r = registry();
    if (!registry_held) r.lock.lock();
    for (tc_table* t = r.tables; t != nullptr; t = t->next) {
      tc_heap_cache* c = t->caches[slot_].load(std::memory_order_acquire);
      if (c == nullptr || c->heap_id.load(std::memory_order_relaxed) != id_) continue;
      for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
        cached_blocks[cls] += c->bins[cls].count.load(std::memory_order_relaxed) + kBinCapacity[cls] -
                              c->bins[cls].limit.load(std::memory_order_relaxed);
      }
    }
    if (!registry_held) r.lock.unlock();
  }
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    cached_blocks[cls] += classes_[cls].transfer_count.load(std::memory_order_relaxed);
  }
  std::uint64_t out_blocks[kNumClasses] = {};
  {
    lock_guard guard(segments_lock_);
    for (segment* s = all_; s != nullptr; s = s->all_next) {
      ++st.arenas_mapped;
      st.bytes_mapped += s->span;
      st.metadata_bytes += s->meta_bytes;
      st.bytes_resident += os_->resident_bytes(s->base, s->span);
      if (per_class != nullptr && s->cls != kLargeClass) {
        ++per_class[s->cls].arenas;
        per_class[s->cls].bytes_mapped += s->span;
      }
      if (s->cls == kLargeClass) {
        if (read_counter(&s->live) != 0) {
          ++st.blocks_live;
          st.bytes_live += s->span;
        }
      } else {
        out_blocks[s->cls] += read_counter(&s->live);
      }
    }
    st.bytes_mapped_peak = mapped_peak_;
    st.metadata_bytes_peak = meta_peak_;
  }
  for (std::size_t cls = 0; cls < kNumClasses; ++cls) {
    std::uint64_t cached = cls < kNumCachedClasses ? cached_blocks[cls] : 0;
    std::uint64_t live = out_blocks[cls] > cached ? out_blocks[cls] - cached : 0;
    st.blocks_live += live;
    st.bytes_live += live * kSizeClasses[cls].size;
    if (per_class != nullptr) per_class[cls].blocks_live += live;
  }
  st.drops_detected = drops_detected_.load(std::memory_order_relaxed);
  st.misuse_refused = misuse_refused_.load(std::memory_order_relaxed);
  st.droppable = os_->arena_backing() == backing::droppable;
  return st;
}

}  // namespace core
}  // namespace dropalloc
