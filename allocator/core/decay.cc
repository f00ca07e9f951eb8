// Handing memory back: blocks idle in transfer caches go back to their
// arenas, empty arenas and cached large mappings are unmapped, and the pages
// of free blocks in partly used arenas are released (MADV_DONTNEED), each
// once it stayed unused for the decay time. decay() runs on later operations,
// on the background purger's clock (core/purger.h) and, with `all`, on trim().
#include <time.h>

#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"
#include "allocator/core/purger.h"

namespace dropalloc::core {

using internal::now_ms;
using internal::read_counter;
using internal::unlink;

namespace {

// Whether bits [first, first + count) of `bits` are all set.
bool all_set(const std::uint64_t* bits, std::uint32_t first, std::uint32_t count) {
  while (count != 0) {
    std::uint32_t in_word = first % 64;
    std::uint32_t n = count < 64 - in_word ? count : 64 - in_word;
    std::uint64_t mask = (n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1)) << in_word;
    if ((bits[first / 64] & mask) != mask) return false;
    first += n;
    count -= n;
  }
  return true;
}

}  // namespace

void heap::note_decay_work() noexcept {
  if (decay_pending_.load(std::memory_order_relaxed) || decay_pending_.exchange(true, std::memory_order_acq_rel)) {
    return;
  }
  if (options_.background_decay) purger::request(options_.empty_arena_decay_ms / 4);
}

void heap::resume_decay_after_fork() noexcept {
  internal::registry_t& r = internal::registry();
  lock_guard guard(r.lock);
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) {
    if (h->options_.background_decay && h->decay_pending_.load(std::memory_order_acquire)) {
      purger::request(h->options_.empty_arena_decay_ms / 4);
    }
  }
}

void heap::decay_class_on_free(class_state& c, std::uint64_t now) noexcept {
  if (options_.background_decay && !purger::unavailable()) return;  // the purger's job
  if (now - c.purged_ms < options_.empty_arena_decay_ms / 4 + 1) return;
  c.purged_ms = now;
  bool more = false;
  for (segment* s = c.avail; s != nullptr; s = s->next) purge_free_pages(s, now, false, &more);
  for (segment* s = c.empty; s != nullptr; s = s->next) purge_free_pages(s, now, false, &more);
}

std::size_t heap::release_large_cache(bool all, bool* more) noexcept {
  std::size_t released = 0;
  segment* evicted[kLargeCacheSlots];
  int n_evicted = 0;
  {
    lock_guard guard(segments_lock_);
    std::uint64_t now = now_ms();
    for (int i = 0; i < kLargeCacheSlots; ++i) {
      segment* c = large_cache_[i];
      if (c == nullptr) continue;
      if (!all && now - large_cached_ms_[i] < options_.empty_arena_decay_ms) {
        if (more != nullptr) *more = true;
        continue;
      }
      released += c->span;
      evicted[n_evicted++] = take_cached_large(i);
    }
  }
  destroy_segments(*os_, evicted, n_evicted);  // outside the lock, one grace period
  return released;
}

// Blocks unused in the transfer cache for the decay time go back to their
// arenas, so that arenas can empty and be unmapped.
bool heap::drain_transfer(class_state& c, std::uint64_t now, bool all) noexcept {
  std::uint32_t have = c.transfer_count.load(std::memory_order_relaxed);
  if (have == 0) return false;
  if (!all && now - c.transfer_used_ms < options_.empty_arena_decay_ms) return true;
  c.transfer_count.store(0, std::memory_order_relaxed);
  return_to_arenas(c, c.transfer, have);
  return false;
}

// Unmaps empty arenas of a class that stayed empty for the decay time. The
// newest stays as a spare (its pages released by purge_free_pages) for ten
// decay times, unless `all` is set. Returns the bytes unmapped; *more is set
// when an empty arena is left.
std::size_t heap::release_empty(class_state& c, bool all, bool* more) noexcept {
  if (c.empty == nullptr) return 0;
  std::size_t released = 0;
  std::uint64_t now = now_ms();
  segment* s = all ? c.empty : c.empty->next;
  while (s != nullptr) {
    segment* next = s->next;
    if (all || now - s->empty_since_ms >= options_.empty_arena_decay_ms) {
      unlink(&c.empty, s);
      unlink_all(s);
      released += s->span;
      --c.arenas;
      destroy_segment(*os_, s);
    }
    s = next;
  }
  if (!all && c.empty != nullptr && now - c.empty->empty_since_ms >= 10 * options_.empty_arena_decay_ms + 1) {
    s = c.empty;
    unlink(&c.empty, s);
    unlink_all(s);
    released += s->span;
    --c.arenas;
    destroy_segment(*os_, s);
  }
  if (c.empty != nullptr && more != nullptr) *more = true;
  return released;
}

// Releases runs of pages that hold only free blocks (blocks in the free bits,
// or never handed out) once no block came back to the arena for the decay time.
// Under the class lock: no block on such a page is live or in any cache, so
// nobody can be writing it, and a stale handle to one of its blocks reads
// `stale` from its state byte, whatever the page holds.
std::size_t heap::purge_free_pages(segment* s, std::uint64_t now, bool all, bool* more) noexcept {
  if (s->last_freed_ms == 0) return 0;
  if (!all && now - s->last_freed_ms < options_.empty_arena_decay_ms) {
    *more = true;
    return 0;
  }
  s->last_freed_ms = 0;
  const std::uint32_t bump = read_counter(&s->bump);
  // Pages up to the one holding the end of block bump - 1: the only ones ever
  // touched. A page may go only if every block touching it is free (blocks
  // straddle pages, so a page's first block may start in the page before).
  if (bump == 0) return 0;
  const auto pages = static_cast<std::uint32_t>(block_pages(s, bump - 1).last + 1);
  auto page_free = [&](std::uint32_t page) {
    const block_run on = page_blocks(s, page);
    const std::uint64_t last = on.last < bump ? on.last : bump - 1;  // blocks from bump: never handed out
    if (on.first > last) return true;
    return all_set(s->free_bits, static_cast<std::uint32_t>(on.first), static_cast<std::uint32_t>(last - on.first + 1));
  };
  std::size_t released = 0;
  std::uint32_t run = pages;  // start of the current run of free pages, `pages` = none
  for (std::uint32_t page = 0; page <= pages; ++page) {
    bool free = page < pages && page_free(page);
    if (free && run == pages) run = page;
    if (!free && run != pages) {
      std::size_t bytes = std::size_t{page - run} * kPage;
      if (os_->release_pages(s->base + std::size_t{run} * kPage, bytes) == 0) released += bytes;
      run = pages;
    }
  }
  return released;
}

std::size_t heap::decay(bool all) noexcept {
  flush_advice();  // before any arena goes: its queued blocks need no advice then
  decay_pending_.store(false, std::memory_order_release);
  bool more = false;
  std::size_t released = release_large_cache(all, &more);
  released += release_due_large();  // whatever their age: cached ones unmapped first
  std::uint64_t now = now_ms();
  for (auto& c : classes_) {
    lock_guard guard(c.lock);
    more = drain_transfer(c, now, all) || more;
    released += release_empty(c, all, &more);
    for (segment* s = c.avail; s != nullptr; s = s->next) released += purge_free_pages(s, now, all, &more);
    for (segment* s = c.empty; s != nullptr; s = s->next) released += purge_free_pages(s, now, all, &more);
  }
  // Mappings retired in a batch (segment.h, retire::batched) wait for the
  // batch to fill: a decay pass, idle or trim, ends the wait.
  unmap_deferred_segments();
  if (more) decay_pending_.store(true, std::memory_order_release);
  return released;
}

std::size_t heap::trim() noexcept {
  // The calling thread's cached blocks first (other threads' caches are
  // theirs to touch): they keep their arenas from counting as empty.
  tc_table* t = t_cache_table;
  tc_heap_cache* mine = t != nullptr && slot_ >= 0 ? t->caches[slot_].load(std::memory_order_acquire) : nullptr;
  if (mine != nullptr && mine->heap_id.load(std::memory_order_relaxed) == id_) give_back_cache(mine);
  // Tables of exited threads that never handed them back hold blocks.
  internal::reap_exited_tables(t, /*whole_list=*/true, /*wait=*/false);
  // Exited threads' tables kept for new threads hold no blocks, only pages
  // (process-wide ones: not counted as this heap's).
  internal::release_spare_tables(/*wait=*/false);
  const std::size_t released = decay(true);
  wait_for_retired(/*bounded=*/true);
  return released;
}

void heap::wait_for_retired(bool bounded) noexcept {
  if (in_read_section()) return;
  // Ours waiting on the stack go now; those another thread took off it are
  // unmapped by that thread after its grace period: a short wait, unless it
  // was preempted. Unbounded for the destructor, for which no new ones come.
  constexpr std::uint64_t kMaxWaitMs = 100;
  const std::uint64_t since = now_ms();
  while (retired_waiting_.load(std::memory_order_acquire) > 0) {
    unmap_deferred_segments();
    if (retired_waiting_.load(std::memory_order_acquire) <= 0 || (bounded && now_ms() - since >= kMaxWaitMs)) break;
    const timespec pause = {0, 50 * 1000};
    nanosleep(&pause, nullptr);
  }
}

void heap::recount_retired_after_fork() noexcept {
  internal::registry_t& r = internal::registry();
  lock_guard guard(r.lock);
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) h->retired_waiting_.store(0, std::memory_order_relaxed);
  recount_deferred_after_fork();
}

bool heap::decay_background_heaps() noexcept {
  internal::registry_t& r = internal::registry();
  lock_guard guard(r.lock);  // heaps cannot go away meanwhile
  bool more = false;
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) {
    if (!h->options_.background_decay || !h->decay_pending_.load(std::memory_order_acquire)) continue;
    h->decay(false);
    more = more || h->decay_pending_.load(std::memory_order_acquire);
  }
  return more;
}

}  // namespace dropalloc::core
