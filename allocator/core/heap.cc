// Slow paths of the heap: arenas per class, the thread-cache registry, sealing
// and checking, statistics.
#include "allocator/core/heap.h"

#include <errno.h>
#include <pthread.h>
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

__thread tc_table* t_cache_table __attribute__((tls_model("initial-exec"))) = nullptr;
__thread tc_current t_current __attribute__((tls_model("initial-exec"))) = {0, nullptr, state::kLive, 0, nullptr};

namespace {

std::uint64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

// Heaps that own a thread-cache slot, and every thread's table.
struct registry_t {
  std::mutex lock;
  heap* heaps[kMaxCachedHeaps] = {};
  std::uint64_t ids[kMaxCachedHeaps] = {};
  tc_table* tables = nullptr;
  heap* all_heaps = nullptr;
  // Thread tags (state::kTagShift) held by live threads, bit t for tag t:
  // distinct while at most state::kTags threads have caches, shared beyond.
  std::uint32_t tags_in_use = 0;
  std::uint32_t next_shared_tag = 0;
};

// A tag no live thread holds, or (all taken) one shared round-robin.
std::uint32_t take_thread_tag(registry_t& r) {
  for (std::uint32_t tag = 1; tag <= state::kTags; ++tag) {
    if ((r.tags_in_use & (1u << tag)) == 0) {
      r.tags_in_use |= 1u << tag;
      return tag;
    }
  }
  return 1 + r.next_shared_tag++ % state::kTags;
}

registry_t& registry() {
  static registry_t r;  // constant-initialised members; never destroyed before use ends
  return r;
}

std::atomic<std::uint64_t> g_next_heap_id{1};

bool misuse_aborts() {
  static const bool aborts = [] {
    const char* v = getenv("DROPALLOC_ABORT_ON_MISUSE");
    return v != nullptr && v[0] == '1';
  }();
  return aborts;
}

// Reads one 8-byte word of droppable memory. Atomic, so the compiler makes no
// assumption that it keeps its value: the kernel may zero it at any instant.
inline std::uint64_t load_word(const std::byte* p) {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(p), __ATOMIC_RELAXED);
}

// Orders earlier loads before later ones. TSan does not model fences (and
// gcc rejects them under -fsanitize=thread); a compiler barrier is what the
// fence amounts to on x86 anyway.
inline void load_fence() {
#if defined(__SANITIZE_THREAD__)
  asm volatile("" ::: "memory");
#else
  std::atomic_thread_fence(std::memory_order_acquire);
#endif
}

// 1 + index of the first non-zero word in [p, p + bytes), 0 if all are zero.
std::uint64_t first_nonzero_word(const std::byte* p, std::size_t bytes) {
  std::size_t words = bytes / 8;
  for (std::size_t i = 0; i < words; ++i) {
    if (load_word(p + i * 8) != 0) return i + 1;
  }
  return 0;
}

// `live` and `bump` change under the class lock but are read without it by
// stats, seal_all and check_all: single-writer atomic stores keep that defined.
inline void set_counter(std::uint32_t* field, std::uint32_t value) {
  __atomic_store_n(field, value, __ATOMIC_RELAXED);
}
inline std::uint32_t read_counter(const std::uint32_t* field) {
  return __atomic_load_n(field, __ATOMIC_RELAXED);
}

// Bytes from a block's start to the next block's start.
inline std::size_t block_stride(const segment* s) {
  return s->per_page != 0 ? s->block_size : std::size_t{s->pages_per_block} * kPage;
}

void unlink(segment** head, segment* s) {
  if (s->prev != nullptr) s->prev->next = s->next; else *head = s->next;
  if (s->next != nullptr) s->next->prev = s->prev;
  s->next = s->prev = nullptr;
  s->list = kListNone;
}

void push(segment** head, segment* s, std::uint8_t list) {
  s->prev = nullptr;
  s->next = *head;
  if (*head != nullptr) (*head)->prev = s;
  *head = s;
  s->list = list;
}

}  // namespace

// ---- thread caches -----------------------------------------------------------

// Empties every bin of a thread's cache for this heap into the heap.
void heap::give_back_cache(tc_heap_cache* c) noexcept {
  for (std::uint32_t cls = 0; cls < kNumCachedClasses; ++cls) {
    tc_bin& bin = c->bins[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
    if (n != 0) give_back(cls, bin.items, n);
    if (limit < kBinCapacity[cls]) give_back(cls, bin.items + limit, kBinCapacity[cls] - limit);
    bin.count.store(0, std::memory_order_relaxed);
    bin.limit.store(kBinCapacity[cls], std::memory_order_relaxed);
  }
}

// Hands a dying thread's cached blocks back to their heaps.
void flush_thread_caches(tc_table* t) noexcept {
  registry_t& r = registry();
  std::lock_guard<std::mutex> guard(r.lock);
  for (int slot = 0; slot < kMaxCachedHeaps; ++slot) {
    tc_heap_cache* c = t->caches[slot];
    if (c == nullptr) continue;
    if (r.heaps[slot] != nullptr && r.ids[slot] == c->heap_id) r.heaps[slot]->give_back_cache(c);
    os::system_os().unmap_metadata(c, sizeof(tc_heap_cache));
    t->caches[slot] = nullptr;
  }
  if (t->prev != nullptr) t->prev->next = t->next; else r.tables = t->next;
  if (t->next != nullptr) t->next->prev = t->prev;
  // A shared tag stays marked: another live thread may still hold it.
  bool shared = false;
  for (tc_table* o = r.tables; o != nullptr; o = o->next) shared = shared || o->tag == t->tag;
  if (!shared) r.tags_in_use &= ~(1u << t->tag);
}

namespace {
__thread bool t_exited = false;
}  // namespace

struct thread_exit_flusher {
  tc_table* table = nullptr;
  ~thread_exit_flusher() {
    if (table == nullptr) return;
    t_exited = true;
    t_current.heap_id = 0;
    t_current.cache = nullptr;
    t_current.other_heap_id = 0;
    t_current.other_cache = nullptr;
    t_cache_table = nullptr;
    flush_thread_caches(table);
    os::system_os().unmap_metadata(table, sizeof(tc_table));
  }
};

namespace {
thread_local thread_exit_flusher t_flusher;
}  // namespace

tc_heap_cache* heap::thread_cache() noexcept {
  if (t_current.heap_id == id_) return t_current.cache;
  if (t_current.other_heap_id == id_) {  // two heaps used in turn: swap them
    tc_heap_cache* c = t_current.other_cache;
    t_current.other_heap_id = t_current.heap_id;
    t_current.other_cache = t_current.cache;
    t_current.heap_id = id_;
    t_current.cache = c;
    return c;
  }
  if (slot_ < 0 || t_exited) return nullptr;
  tc_table* t = t_cache_table;
  if (t == nullptr) {
    int err = 0;
    t = static_cast<tc_table*>(os::system_os().map_metadata(sizeof(tc_table), &err));
    if (t == nullptr) return nullptr;
    registry_t& r = registry();
    std::uint32_t tag;
    {
      std::lock_guard<std::mutex> guard(r.lock);
      tag = take_thread_tag(r);
      t->tag = tag;
      t->next = r.tables;
      if (r.tables != nullptr) r.tables->prev = t;
      r.tables = t;
    }
    t_cache_table = t;
    t_flusher.table = t;  // first use registers the exit handler
    t_current.live_state = static_cast<std::uint8_t>(state::kLive | tag << state::kTagShift);
  }
  tc_heap_cache* c = t->caches[slot_];
  if (c == nullptr) {
    int err = 0;
    c = static_cast<tc_heap_cache*>(os::system_os().map_metadata(sizeof(tc_heap_cache), &err));
    if (c == nullptr) return nullptr;
    t->caches[slot_] = c;
  }
  if (c->heap_id != id_) {
    // Left by a heap that no longer exists: its arenas are gone, forget them.
    for (std::uint32_t cls = 0; cls < kNumCachedClasses; ++cls) {
      c->bins[cls].count.store(0, std::memory_order_relaxed);
      c->bins[cls].limit.store(kBinCapacity[cls], std::memory_order_relaxed);
    }
    c->heap_id = id_;
  }
  if (t_current.heap_id != id_) {
    t_current.other_heap_id = t_current.heap_id;
    t_current.other_cache = t_current.cache;
    t_current.heap_id = id_;
    t_current.cache = c;
  }
  return c;
}

// ---- fork ----------------------------------------------------------------------

void heap::lock_all() noexcept {
  for (auto& c : classes_) c.lock.lock();
  segments_lock_.lock();
}

void heap::unlock_all() noexcept {
  segments_lock_.unlock();
  for (auto& c : classes_) c.lock.unlock();
}

// Lock order everywhere: registry, then class locks, then a heap's segments
// lock, then the segment-map initialisation lock.
void prefork_all() noexcept {
  registry_t& r = registry();
  r.lock.lock();
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) h->lock_all();
  segment_map_init_lock().lock();
}

void postfork_all() noexcept {
  registry_t& r = registry();
  segment_map_init_lock().unlock();
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) h->unlock_all();
  r.lock.unlock();
}

namespace {
// In a forked child only the forking thread exists: the other threads' caches
// would hold their blocks, and their tags, for good. Hand them back.
void postfork_child() noexcept {
  postfork_all();
  registry_t& r = registry();
  tc_table* mine = t_cache_table;
  for (;;) {
    tc_table* gone = nullptr;
    {
      std::lock_guard<std::mutex> guard(r.lock);
      for (tc_table* t = r.tables; t != nullptr && gone == nullptr; t = t->next) {
        if (t != mine) gone = t;
      }
    }
    if (gone == nullptr) break;
    flush_thread_caches(gone);
    os::system_os().unmap_metadata(gone, sizeof(tc_table));
  }
}

__attribute__((constructor)) void register_fork_handlers() {
  pthread_atfork(prefork_all, postfork_all, postfork_child);
}
}  // namespace

// ---- construction ------------------------------------------------------------

heap::heap(const heap_options& options)
    : os_(options.os != nullptr ? options.os : &os::system_os()),
      options_(options),
      id_(g_next_heap_id.fetch_add(1, std::memory_order_relaxed)),
      slot_(-1) {
  registry_t& r = registry();
  std::lock_guard<std::mutex> guard(r.lock);
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
    std::lock_guard<std::mutex> guard(r.lock);
    if (slot_ >= 0) {
      r.heaps[slot_] = nullptr;
      r.ids[slot_] = 0;
    }
    if (prev_heap_ != nullptr) prev_heap_->next_heap_ = next_heap_; else r.all_heaps = next_heap_;
    if (next_heap_ != nullptr) next_heap_->prev_heap_ = prev_heap_;
  }
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    if (classes_[cls].transfer != nullptr) {
      os_->unmap_metadata(classes_[cls].transfer, kTransferCapacity[cls] * sizeof(cached_block));
    }
  }
  std::lock_guard<std::mutex> guard(segments_lock_);
  while (all_ != nullptr) {
    segment* s = all_;
    all_ = s->all_next;
    destroy_segment(*os_, s);
  }
}

void heap::link_all(segment* s) noexcept {
  std::lock_guard<std::mutex> guard(segments_lock_);
  s->all_prev = nullptr;
  s->all_next = all_;
  if (all_ != nullptr) all_->all_prev = s;
  all_ = s;
}

void heap::unlink_all(segment* s) noexcept {
  std::lock_guard<std::mutex> guard(segments_lock_);
  unlink_all_locked(s);
}

void heap::unlink_all_locked(segment* s) noexcept {
  if (s->all_prev != nullptr) s->all_prev->all_next = s->all_next; else all_ = s->all_next;
  if (s->all_next != nullptr) s->all_next->all_prev = s->all_prev;
}

// ---- allocation slow paths ---------------------------------------------------

void* heap::allocate_slow(std::size_t bytes, std::size_t alignment, std::size_t cls,
                          alloc_error* err) noexcept {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    *err = alloc_error::bad_alignment;
    return nullptr;
  }
  if (cls == kNoClass) return allocate_large(bytes, alignment, err);
  cached_block b{nullptr, nullptr};
  int os_err = 0;
  tc_heap_cache* c = cls < kNumCachedClasses ? thread_cache() : nullptr;
  if (c != nullptr) {
    tc_bin& bin = c->bins[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    if (n == 0) {
      std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
      if (limit == 0) {  // all room taken by other threads' blocks: pass them on
        give_back(static_cast<std::uint32_t>(cls), bin.items, kBinCapacity[cls]);
        limit = kBinCapacity[cls];
        bin.limit.store(limit, std::memory_order_relaxed);
      }
      std::uint32_t want = kBinCapacity[cls] / 2;
      n = take_blocks(static_cast<std::uint32_t>(cls), bin.items, want < limit ? want : limit, &os_err);
    }
    if (n != 0) {
      b = bin.items[n - 1];
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
  if (bytes > kMaxRequest || alignment > kMaxRequest) {
    *err = alloc_error::too_large;
    return nullptr;
  }
  std::size_t span = (bytes == 0 ? kPage : (bytes + kPage - 1) / kPage * kPage);
  if (segment* cached = reuse_large(span, alignment)) {
    if (zero) memset(cached->base, 0, bytes);  // a recycled mapping holds old data
    return cached->base;
  }
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
  return s->base;
}

// A cached mapping fits if it is big enough but not wastefully so (at most
// twice the request) and aligned as asked.
segment* heap::reuse_large(std::size_t span, std::size_t alignment) noexcept {
  std::lock_guard<std::mutex> guard(segments_lock_);
  int best = -1;
  for (int i = 0; i < kLargeCacheSlots; ++i) {
    segment* s = large_cache_[i];
    if (s == nullptr || s->span < span || s->span / 2 > span) continue;
    if (reinterpret_cast<std::uintptr_t>(s->base) % alignment != 0) continue;
    if (best < 0 || s->span < large_cache_[best]->span) best = i;
  }
  if (best < 0) return nullptr;
  segment* s = large_cache_[best];
  large_cache_[best] = nullptr;
  large_cache_bytes_ -= s->span;
  set_counter(&s->live, 1);
  s->state[0].store(state::kLive, std::memory_order_release);
  return s;
}

bool heap::cache_large(segment* s) noexcept {
  std::lock_guard<std::mutex> guard(segments_lock_);
  if (s->span > kLargeCacheMaxBytes / 2) return false;
  std::uint64_t now = now_ms();
  // Make room: drop expired entries, then the oldest, until this one fits.
  for (int i = 0; i < kLargeCacheSlots; ++i) {
    segment* c = large_cache_[i];
    if (c != nullptr && now - large_cached_ms_[i] >= options_.empty_arena_decay_ms) {
      large_cache_[i] = nullptr;
      large_cache_bytes_ -= c->span;
      unlink_all_locked(c);
      destroy_segment(*os_, c);
    }
  }
  int slot = -1;
  while (true) {
    int oldest = -1;
    for (int i = 0; i < kLargeCacheSlots; ++i) {
      if (large_cache_[i] == nullptr) slot = i;
      else if (oldest < 0 || large_cached_ms_[i] < large_cached_ms_[oldest]) oldest = i;
    }
    if (slot >= 0 && large_cache_bytes_ + s->span <= kLargeCacheMaxBytes) break;
    if (oldest < 0) return false;
    segment* c = large_cache_[oldest];
    large_cache_[oldest] = nullptr;
    large_cache_bytes_ -= c->span;
    unlink_all_locked(c);
    destroy_segment(*os_, c);
  }
  set_counter(&s->live, 0);
  large_cache_[slot] = s;
  large_cached_ms_[slot] = now;
  large_cache_bytes_ += s->span;
  return true;
}

std::size_t heap::release_large_cache(bool all) noexcept {
  std::size_t released = 0;
  std::lock_guard<std::mutex> guard(segments_lock_);
  std::uint64_t now = now_ms();
  for (int i = 0; i < kLargeCacheSlots; ++i) {
    segment* c = large_cache_[i];
    if (c == nullptr || (!all && now - large_cached_ms_[i] < options_.empty_arena_decay_ms)) continue;
    large_cache_[i] = nullptr;
    large_cache_bytes_ -= c->span;
    released += c->span;
    unlink_all_locked(c);
    destroy_segment(*os_, c);
  }
  return released;
}

std::uint32_t heap::take_blocks(std::uint32_t cls, cached_block* out, std::uint32_t want, int* err) noexcept {
  class_state& c = classes_[cls];
  std::lock_guard<std::mutex> guard(c.lock);
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
        s = create_segment(*os_, this, cls, err);
        if (s == nullptr) break;
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
  std::lock_guard<std::mutex> guard(c.lock);
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
      return;
    }
  }
  return_to_arenas(c, items, n);
  drain_transfer(c, now, false);
  release_empty(c, false);
}

// Blocks unused in the transfer cache for the decay time go back to their
// arenas, so that arenas can empty and be unmapped.
void heap::drain_transfer(class_state& c, std::uint64_t now, bool all) noexcept {
  std::uint32_t have = c.transfer_count.load(std::memory_order_relaxed);
  if (have == 0 || (!all && now - c.transfer_used_ms < options_.empty_arena_decay_ms)) return;
  c.transfer_count.store(0, std::memory_order_relaxed);
  return_to_arenas(c, c.transfer, have);
}

void heap::return_to_arenas(class_state& c, const cached_block* items, std::uint32_t n) noexcept {
  for (std::uint32_t i = 0; i < n; ++i) {
    segment* s = segment_of(items[i].ptr);
    std::uint32_t idx = block_index_of(s, items[i].ptr);
    s->free_bits[idx / 64] |= std::uint64_t{1} << (idx % 64);
    ++s->free_count;
    if (idx / 64 < s->scan_word) s->scan_word = idx / 64;
    bool was_full = s->list == kListNone;
    set_counter(&s->live, s->live - 1);
    if (s->live == 0) {
      if (!was_full) unlink(&c.avail, s);
      s->empty_since_ns = now_ms();
      push(&c.empty, s, kListEmpty);
    } else if (was_full) {
      push(&c.avail, s, kListAvail);
    }
  }
}

// Unmaps empty arenas of a class that stayed empty for the decay time. The
// newest stays as a spare unless `all` is set.
void heap::release_empty(class_state& c, bool all) noexcept {
  if (c.empty == nullptr) return;
  std::uint64_t now = now_ms();
  segment* s = all ? c.empty : c.empty->next;
  while (s != nullptr) {
    segment* next = s->next;
    if (all || now - s->empty_since_ns >= options_.empty_arena_decay_ms) {
      unlink(&c.empty, s);
      unlink_all(s);
      destroy_segment(*os_, s);
    }
    s = next;
  }
  if (!all && c.empty != nullptr && now - c.empty->empty_since_ns >= 10 * options_.empty_arena_decay_ms + 1) {
    s = c.empty;
    unlink(&c.empty, s);
    unlink_all(s);
    destroy_segment(*os_, s);
  }
}

void heap::trim() noexcept {
  // The calling thread's cached blocks first (other threads' caches are
  // theirs to touch): they keep their arenas from counting as empty.
  tc_table* t = t_cache_table;
  tc_heap_cache* mine = t != nullptr && slot_ >= 0 ? t->caches[slot_] : nullptr;
  if (mine != nullptr && mine->heap_id == id_) give_back_cache(mine);
  release_large_cache(true);
  std::uint64_t now = now_ms();
  for (auto& c : classes_) {
    std::lock_guard<std::mutex> guard(c.lock);
    drain_transfer(c, now, true);
    release_empty(c, true);
  }
}

// ---- free slow path ------------------------------------------------------------

void heap::deallocate_checked(void* p) noexcept {
  segment* s = segment_of(p);
  std::uint32_t idx;
  if (s == nullptr || s->owner != this || !block_index(s, p, &idx)) {
    return report_misuse("not a block of this resource", p);
  }
  if (s->state[idx].load(std::memory_order_relaxed) == state::kFree) {
    return report_misuse("double free", p);
  }
  deallocate_slow(s, idx, p);
}

void heap::deallocate_slow(segment* s, std::uint32_t idx, void* p) noexcept {
  std::uint8_t st = s->state[idx].load(std::memory_order_relaxed);
  if (s->cls == kLargeClass) {
    // The mapping goes away: let exactly one of two racing frees do it. Its
    // generations need no bump: destroy_segment raises the global floor.
    if (st == state::kFree || !s->state[idx].compare_exchange_strong(st, state::kFree)) {
      return report_misuse("double free", p);
    }
    // The mapping may be reused at the same address: outstanding handles must
    // go stale, as for any block.
    auto& word = s->meta[0];
    word.store(meta::make(meta::gen(word.load(std::memory_order_relaxed)) + 1, 0), std::memory_order_release);
    if (cache_large(s)) return;
    unlink_all(s);
    destroy_segment(*os_, s);
    return;
  }
  retire(s, idx, st);
  cached_block b{p, &s->state[idx]};
  tc_heap_cache* c = s->cls < kNumCachedClasses ? thread_cache() : nullptr;
  if (c == nullptr) {
    give_back(s->cls, &b, 1);
    return;
  }
  tc_bin& bin = c->bins[s->cls];
  const std::uint32_t cap = kBinCapacity[s->cls];
  std::uint32_t n = bin.count.load(std::memory_order_relaxed);
  std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
  if (n >= limit && limit < cap) {
    // Full, partly with other threads' blocks: pass those on first.
    give_back(s->cls, bin.items + limit, cap - limit);
    limit = cap;
    bin.limit.store(limit, std::memory_order_relaxed);
  }
  const std::uint8_t tag = st & state::kTagMask;
  if (tag != (t_current.live_state & state::kTagMask) && blocks_share_lines(s->block_size)) {
    // Another thread allocated it: keep it from this thread's allocations.
    if (n >= limit) {
      std::uint32_t half = cap / 2;
      give_back(s->cls, bin.items + (n - half), half);
      n -= half;
      bin.count.store(n, std::memory_order_relaxed);
    }
    bin.items[limit - 1] = b;
    bin.limit.store(limit - 1, std::memory_order_relaxed);
    return;
  }
  if (n >= limit) {
    // Full: hand the top half back. Keeping the most recently freed (warmest)
    // blocks instead would cost moving the rest down on every flush.
    std::uint32_t half = cap / 2;
    give_back(s->cls, bin.items + (n - half), half);
    n -= half;
  }
  bin.items[n] = b;
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
  segment* s = segment_of(p);
  std::uint32_t idx;
  // Not a live block of ours: deallocate() itself refuses and reports that.
  if (s == nullptr || s->owner != this || !block_index(s, p, &idx) ||
      s->state[idx].load(std::memory_order_acquire) == state::kFree) {
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
  char what[128];
  snprintf(what, sizeof what, "sized free of %zu bytes aligned to %zu, block holds %zu aligned to %zu",
           bytes, alignment, usable, align);
  report_misuse(what, p);
  return false;
}

// ---- queries ---------------------------------------------------------------------

bool heap::owns(const void* p) const noexcept {
  segment* s = segment_of(p);
  std::uint32_t idx;
  return s != nullptr && s->owner == this && block_index(s, p, &idx);
}

std::uint64_t heap::generation(const void* p) const noexcept {
  segment* s = segment_of(p);
  std::uint32_t idx;
  if (s == nullptr || s->owner != this || !block_index(s, p, &idx)) return 0;
  auto& sb = s->state[idx];
  std::uint8_t st = sb.load(std::memory_order_acquire);
  if (st == state::kFree) return 0;
  // From now on a handle to this life may exist: its free must bump the generation.
  if ((st & state::kObserved) == 0) sb.fetch_or(state::kObserved, std::memory_order_acq_rel);
  return s->generation_of(s->meta[idx].load(std::memory_order_acquire));
}

std::size_t heap::usable_size(const void* p) const noexcept {
  segment* s = segment_of(p);
  std::uint32_t idx;
  if (s == nullptr || s->owner != this || !block_index(s, p, &idx)) return 0;
  if (s->state[idx].load(std::memory_order_acquire) == state::kFree) return 0;
  return s->cls == kLargeClass ? s->span : s->block_size;
}

// ---- seal and check ----------------------------------------------------------------

// Records the witnesses of block idx (read from its current contents) and
// marks it sealed. Returns false if the block was free (or freed meanwhile).
bool heap::seal_witnesses(segment* s, std::uint32_t idx) noexcept {
  auto& sb = s->state[idx];
  std::uint8_t st = sb.load(std::memory_order_acquire);
  if (st == state::kFree) return false;
  auto& word = s->meta[idx];
  std::uint64_t gen = meta::gen(word.load(std::memory_order_relaxed));
  const std::byte* start = block_start(s, idx);
  if (s->per_page != 0) {
    word.store(meta::make(gen, first_nonzero_word(start, s->block_size)), std::memory_order_release);
  } else {
    std::size_t first = static_cast<std::size_t>(idx) * s->pages_per_block;
    for (std::size_t k = 0; k < s->pages_per_block; ++k) {
      auto w = static_cast<std::uint16_t>(first_nonzero_word(start + k * kPage, kPage));
      s->page_witness[first + k].store(w, std::memory_order_relaxed);
    }
    word.store(meta::make(gen, 0), std::memory_order_release);
  }
  // The release publishes the witnesses together with the sealed state.
  return sb.compare_exchange_strong(
      st, static_cast<std::uint8_t>((st & state::kTagMask) | state::kSealed | state::kObserved),
      std::memory_order_acq_rel);
}

block_state heap::seal(void* p) noexcept {
  segment* s = segment_of(p);
  std::uint32_t idx;
  if (s == nullptr || s->owner != this || !block_index(s, p, &idx)) return block_state::foreign;
  if (!seal_witnesses(s, idx)) return block_state::stale;
  // Small blocks share their page with others; sealing the whole page is
  // harmless (a later write to any block on it un-seals it again).
  std::byte* from = s->base + (static_cast<std::byte*>(p) - s->base) / kPage * kPage;
  std::size_t len = s->per_page != 0 ? kPage : block_stride(s);
  os_->seal_pages(from, len);
  // A page may have gone while we read it or before the advice: look again.
  return check(p, s->generation_of(s->meta[idx].load(std::memory_order_acquire)));
}

std::size_t heap::seal_all() noexcept {
  std::size_t sealed = 0;
  std::lock_guard<std::mutex> guard(segments_lock_);
  for (segment* s = all_; s != nullptr; s = s->all_next) {
    std::uint32_t used = 0;
    std::uint32_t bump = read_counter(&s->bump);
    for (std::uint32_t i = 0; i < bump; ++i) {
      if (s->state[i].load(std::memory_order_relaxed) == state::kFree) continue;
      if (seal_witnesses(s, i)) {
        ++sealed;
        used = i + 1;
      }
    }
    if (used != 0) {
      std::byte* end = block_start(s, used - 1) + block_stride(s);
      os_->seal_pages(s->base, static_cast<std::size_t>((end - s->base + kPage - 1) / kPage * kPage));
    }
  }
  return sealed;
}

block_state heap::check(const void* p, std::uint64_t generation) noexcept {
  // Orders the caller's reads of the block before the witness reads below:
  // the safe read protocol is read, then check.
  load_fence();
  segment* s = segment_of(p);
  if (s == nullptr) return block_state::stale;
  std::uint32_t idx;
  if (s->owner != this || !block_index(s, p, &idx)) {
    // A generation from before this arena existed (the floor is process-wide):
    // the handle named a block of an arena since unmapped, whose addresses
    // this one, of any heap, reuses.
    return generation != 0 && generation < s->gen_base ? block_state::stale : block_state::foreign;
  }
  auto& sb = s->state[idx];
  auto& word = s->meta[idx];
  std::uint8_t st = sb.load(std::memory_order_acquire);
  std::uint64_t m = word.load(std::memory_order_acquire);
  std::uint8_t kind = st & state::kMask;
  if (kind == state::kFree || s->generation_of(m) != generation) return block_state::stale;
  if (kind == state::kLive) return block_state::unsealed;
  if (kind == state::kDropped) return block_state::dropped;
  const std::byte* start = block_start(s, idx);
  bool lost = false;
  if (s->per_page != 0) {
    std::uint64_t w = meta::witness(m);
    lost = w != 0 && load_word(start + (w - 1) * 8) == 0;
  } else {
    std::size_t first = static_cast<std::size_t>(idx) * s->pages_per_block;
    for (std::size_t k = 0; k < s->pages_per_block && !lost; ++k) {
      std::uint16_t w = s->page_witness[first + k].load(std::memory_order_relaxed);
      lost = w != 0 && load_word(start + k * kPage + (w - 1u) * 8u) == 0;
    }
  }
  if (lost) {
    std::uint8_t dropped = static_cast<std::uint8_t>((st & ~state::kMask) | state::kDropped);
    if (word.load(std::memory_order_acquire) == m &&
        sb.compare_exchange_strong(st, dropped, std::memory_order_acq_rel)) {
      drops_detected_.fetch_add(1, std::memory_order_relaxed);
      return block_state::dropped;
    }
    return check(p, generation);  // freed or resealed meanwhile: answer afresh
  }
  // Witnesses read while state and meta word stayed put belong to this seal
  // (every free of an observed block changes the meta word).
  if (sb.load(std::memory_order_acquire) != st || word.load(std::memory_order_acquire) != m) {
    return check(p, generation);
  }
  return block_state::intact;
}

sweep_result heap::check_all() noexcept {
  sweep_result r;
  std::lock_guard<std::mutex> guard(segments_lock_);
  for (segment* s = all_; s != nullptr; s = s->all_next) {
    std::uint32_t bump = read_counter(&s->bump);
    for (std::uint32_t i = 0; i < bump; ++i) {
      if (s->state[i].load(std::memory_order_acquire) == state::kFree) continue;
      switch (check(block_start(s, i), s->generation_of(s->meta[i].load(std::memory_order_acquire)))) {
        case block_state::intact: ++r.intact; break;
        case block_state::unsealed: ++r.unsealed; break;
        case block_state::dropped: ++r.dropped; break;
        default: break;  // freed by another thread while we looked
      }
    }
  }
  return r;
}

int heap::drop_for_testing(void* p, std::size_t bytes) noexcept {
  // Only pages of our own arenas: zeroing anyone else's memory would corrupt it.
  auto first = reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{kPage} - 1);
  auto end = reinterpret_cast<std::uintptr_t>(p) + (bytes == 0 ? 1 : bytes);
  for (auto a = first; a < end;) {
    segment* s = segment_of(reinterpret_cast<void*>(a));
    if (s == nullptr || s->owner != this) return EINVAL;
    auto seg_end = reinterpret_cast<std::uintptr_t>(s->base) + s->span;
    if (a < reinterpret_cast<std::uintptr_t>(s->base) || a >= seg_end) return EINVAL;
    a = seg_end;
  }
  return os_->drop_pages(p, bytes);
}

void heap::drop_all_for_testing() noexcept {
  std::lock_guard<std::mutex> guard(segments_lock_);
  for (segment* s = all_; s != nullptr; s = s->all_next) os_->drop_pages(s->base, s->span);
}

// ---- statistics ------------------------------------------------------------------------

resource_stats heap::stats() const noexcept {
  resource_stats st;
  std::uint64_t cached_blocks[kNumCachedClasses] = {};
  if (slot_ >= 0) {
    registry_t& r = registry();
    std::lock_guard<std::mutex> guard(r.lock);
    for (tc_table* t = r.tables; t != nullptr; t = t->next) {
      tc_heap_cache* c = t->caches[slot_];
      if (c == nullptr || c->heap_id != id_) continue;
      for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
        cached_blocks[cls] += c->bins[cls].count.load(std::memory_order_relaxed) + kBinCapacity[cls] -
                              c->bins[cls].limit.load(std::memory_order_relaxed);
      }
    }
  }
  for (std::size_t cls = 0; cls < kNumCachedClasses; ++cls) {
    cached_blocks[cls] += classes_[cls].transfer_count.load(std::memory_order_relaxed);
  }
  std::uint64_t out_blocks[kNumClasses] = {};
  {
    std::lock_guard<std::mutex> guard(segments_lock_);
    for (segment* s = all_; s != nullptr; s = s->all_next) {
      ++st.arenas_mapped;
      st.bytes_mapped += s->span;
      st.metadata_bytes += s->meta_bytes;
      st.bytes_resident += os_->resident_bytes(s->base, s->span);
      if (s->cls == kLargeClass) {
        if (read_counter(&s->live) != 0) {
          ++st.blocks_live;
          st.bytes_live += s->span;
        }
      } else {
        out_blocks[s->cls] += read_counter(&s->live);
      }
    }
  }
  for (std::size_t cls = 0; cls < kNumClasses; ++cls) {
    std::uint64_t cached = cls < kNumCachedClasses ? cached_blocks[cls] : 0;
    std::uint64_t live = out_blocks[cls] > cached ? out_blocks[cls] - cached : 0;
    st.blocks_live += live;
    st.bytes_live += live * kSizeClasses[cls].size;
  }
  st.drops_detected = drops_detected_.load(std::memory_order_relaxed);
  st.misuse_refused = misuse_refused_.load(std::memory_order_relaxed);
  st.droppable = os_->arena_backing() == backing::droppable;
  return st;
}

}  // namespace core
}  // namespace dropalloc
