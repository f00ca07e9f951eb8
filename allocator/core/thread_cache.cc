// Per-thread caches: the registry of heaps and threads, each thread's table
// and tags, the exit handler that hands a dying thread's blocks back, and the
// fork handlers.
#include <errno.h>
#include <pthread.h>
#include <sched.h>

#include "allocator/core/mutex.h"
#include "allocator/core/thread_exit.h"

#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"
#include "allocator/core/grace.h"
#include "allocator/core/purger.h"
#include "allocator/core/stats_report.h"
#include "allocator/core/tag_bias.h"

namespace dropalloc::core {

__thread tc_table* t_cache_table __attribute__((tls_model("initial-exec"))) = nullptr;
__thread tc_current t_current __attribute__((tls_model("initial-exec"))) = {0, nullptr, state::kLive, nullptr, false, 0, nullptr};

namespace internal {

registry_t& registry() {
  static registry_t r;  // constant-initialised members; never destroyed before use ends
  return r;
}

}  // namespace internal

using internal::registry;
using internal::registry_t;

namespace {

// A tag no live thread holds, or (all taken) one shared round-robin, whose
// bias is then revoked for good (core/tag_bias.h).
std::uint32_t take_thread_tag(registry_t& r, bool* exclusive) {
  for (std::uint32_t tag = 1; tag <= state::kTags; ++tag) {
    if ((r.tags_in_use & (1u << tag)) == 0) {
      r.tags_in_use |= 1u << tag;
      *exclusive = true;  // left revoked: its owner biases it later
      return tag;
    }
  }
  *exclusive = false;
  const std::uint32_t tag = 1 + r.next_shared_tag++ % state::kTags;
  bias_tag_shared(tag);
  return tag;
}

}  // namespace

// ---- thread caches -----------------------------------------------------------

// Empties every bin of a thread's cache for this heap into the heap.
void heap::give_back_cache(tc_heap_cache* c) noexcept {
  for (std::uint32_t cls = 0; cls < kNumCachedClasses; ++cls) {
    tc_bin& bin = c->bins[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    std::uint32_t limit = bin.limit.load(std::memory_order_relaxed);
    if (n != 0) give_back(cls, c->items[cls], n);
    if (limit < kBinCapacity[cls]) give_back(cls, c->items[cls] + limit, kBinCapacity[cls] - limit);
    bin.count.store(0, std::memory_order_relaxed);
    bin.limit.store(kBinCapacity[cls], std::memory_order_relaxed);
  }
}

// Tables of exited threads kept for new ones. A new thread's first
// allocation of each size class faults in a page of its cache's slots (a
// page of counts, one of slots per class used: dozens of faults of about
// 5 us each here); a program that starts a thread per task (mstress starts
// 101) paid them for every thread. A kept table keeps the caches of heaps
// that still exist, emptied, while all the caches kept stay under
// kSpareResidentBytes resident (a cache used in every class holds 384 KiB;
// mstress's malloc cache about 150 KiB); its other caches are unmapped.
// Kept until new threads take them, or trim() or the destruction of a heap
// hands them all back (internal::release_spare_tables).
constexpr std::uint32_t kSpareTables = 4;
constexpr std::size_t kSpareResidentBytes = std::size_t{1} << 20;

// Takes t off the registry's list (the registry lock held).
void unlink_table(registry_t& r, tc_table* t) noexcept {
  if (r.reap_next == t) r.reap_next = t->next;
  if (t->prev != nullptr) t->prev->next = t->next; else r.tables = t->next;
  if (t->next != nullptr) t->next->prev = t->prev;
}

// Hands a thread's cached blocks back to their heaps and takes its table
// off the registry (unless `unlinked`: taken off already, by the caller,
// under the lock); then keeps the table as a spare, or unmaps it.
void retire_table(tc_table* t, bool unlinked) noexcept {
  // Measured before the lock (a system call each): the caches are this
  // thread's, and nobody else writes them.
  std::size_t resident[kMaxCachedHeaps] = {};
  for (int slot = 0; slot < kMaxCachedHeaps; ++slot) {
    if (tc_heap_cache* c = t->caches[slot].load(std::memory_order_acquire)) {
      // A cache in use has its page of counts resident: 0 is an error, and
      // counts as all of it.
      const std::size_t bytes = os::system_os().resident_bytes(c, sizeof(tc_heap_cache));
      resident[slot] = bytes != 0 ? bytes : sizeof(tc_heap_cache);
    }
  }
  registry_t& r = registry();
  bool kept;
  {
    lock_guard guard(r.lock);
    kept = r.spare_count < kSpareTables;
    std::size_t kept_bytes = 0;
    for (int slot = 0; slot < kMaxCachedHeaps; ++slot) {
      tc_heap_cache* c = t->caches[slot].load(std::memory_order_acquire);
      if (c == nullptr) continue;
      const bool alive = r.heaps[slot] != nullptr && r.ids[slot] == c->heap_id.load(std::memory_order_relaxed);
      if (alive) r.heaps[slot]->give_back_cache(c);  // leaves every bin empty
      if (alive && kept && r.spare_resident_bytes + kept_bytes + resident[slot] <= kSpareResidentBytes) {
        kept_bytes += resident[slot];
        continue;
      }
      os::system_os().unmap_metadata(c, sizeof(tc_heap_cache));
      t->caches[slot].store(nullptr, std::memory_order_relaxed);
    }
    if (!unlinked) unlink_table(r, t);
    // A shared tag stays marked: another live thread may still hold it.
    bool shared = false;
    for (tc_table* o = r.tables; o != nullptr; o = o->next) shared = shared || o->tag == t->tag;
    if (!shared) r.tags_in_use &= ~(1u << t->tag);
    bias_tag_released(t->tag, shared);
    if (kept) {
      t->kept_resident = kept_bytes;
      r.spare_resident_bytes += kept_bytes;
      t->prev = nullptr;
      t->next = r.spare_tables;
      r.spare_tables = t;
      ++r.spare_count;
    }
  }
  if (!kept) os::system_os().unmap_metadata(t, sizeof(tc_table));
}

namespace internal {

void release_spare_tables(bool wait) noexcept {
  tc_table* spares;
  {
    registry_t& r = registry();
    if (wait) {
      r.lock.lock();
    } else if (!r.lock.try_lock()) {
      return;
    }
    spares = r.spare_tables;
    r.spare_tables = nullptr;
    r.spare_count = 0;
    r.spare_resident_bytes = 0;
    r.lock.unlock();
  }
  while (spares != nullptr) {
    tc_table* t = spares;
    spares = t->next;
    for (auto& slot : t->caches) {
      if (tc_heap_cache* c = slot.load(std::memory_order_relaxed)) os::system_os().unmap_metadata(c, sizeof(tc_heap_cache));
    }
    os::system_os().unmap_metadata(t, sizeof(tc_table));
  }
}

// Tables whose thread exited without handing them back: a thread whose first
// allocator call came after glibc had run its thread-exit work (its only
// calls were frees glibc made while the thread exited: glibc frees the
// thread-local storage of other threads' cached stacks there; or a first
// call in the last round of key destructors; and every thread but the main
// one when the allocator has no thread-exit key; see thread_exit.h). Each such
// table kept its tag (after 31, every new thread shares one and loses biased
// frees), a cache mapping and the blocks freed into it: 4000 rounds of 8
// detached threads left 231. The owner's robust mutex tells, without a
// system call and without thread ids (which the OS reuses): a trylock
// answers EOWNERDEAD once the kernel has marked it at the owner's exit,
// EBUSY while the owner lives, and succeeds only while the owner is handing
// the table back itself (flush_at_thread_exit unlocks first). A new table
// pays for two looks, trim() for a look at every table.
constexpr int kTablesLookedAtPerNewTable = 2;

void reap_exited_tables(const tc_table* mine, bool whole_list, bool wait) noexcept {
  registry_t& r = registry();
  for (int looked = 0;; ++looked) {
    if (!whole_list && looked == kTablesLookedAtPerNewTable) return;
    if (wait) {
      r.lock.lock();
    } else if (!r.lock.try_lock()) {
      return;
    }
    if (whole_list && looked == 0) r.reap_next = r.tables;
    tc_table* t = r.reap_next != nullptr ? r.reap_next : (whole_list ? nullptr : r.tables);
    tc_table* gone = nullptr;
    if (t != nullptr) {
      r.reap_next = t->next;
      const int held = t != mine ? pthread_mutex_trylock(&t->owner_alive) : EBUSY;
      if (held == EOWNERDEAD) {
        // Ours now, and on this thread's robust list: off it before the
        // table is reused or unmapped. Off the registry's list in this
        // same hold: a fork() (a signal handler's) before retire_table
        // below must not give a child that retires it as well.
        pthread_mutex_consistent(&t->owner_alive);
        unlink_table(r, t);
        gone = t;
      }
      if (held == 0 || held == EOWNERDEAD) pthread_mutex_unlock(&t->owner_alive);
    }
    r.lock.unlock();
    if (t == nullptr) return;
    if (gone != nullptr) retire_table(gone, /*unlinked=*/true);
  }
}

}  // namespace internal

namespace {

// A table for a new thread: a spare if one is kept, else a new mapping; not
// yet on the registry's list. A spare's caches belong to heaps that existed
// when it was kept, their bins empty; thread_cache() resets any whose heap
// has gone since (heap ids are never reused).
tc_table* new_table() noexcept {
  registry_t& r = registry();
  {
    lock_guard guard(r.lock);
    if (tc_table* t = r.spare_tables) {
      r.spare_tables = t->next;
      --r.spare_count;
      r.spare_resident_bytes -= t->kept_resident;
      t->next = nullptr;
      return t;
    }
  }
  int err = 0;
  return static_cast<tc_table*>(os::system_os().map_metadata(sizeof(tc_table), &err));
}

}  // namespace

namespace {
__thread bool t_exited = false;

// Marks t as held by the calling thread (tc_table::owner_alive). t is on no
// thread's robust list: new, a spare (unlocked when kept), or the forking
// thread's in a child (see postfork_child).
void hold_table(tc_table* t) noexcept {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&t->owner_alive, &attr);
  pthread_mutexattr_destroy(&attr);
  pthread_mutex_lock(&t->owner_alive);
}
}  // namespace

namespace {

// Runs at the thread's exit (call_at_thread_exit): its cached blocks go back.
// Once: the main thread may get a second call (see thread_exit.h), whose
// table another thread may own by then.
//
// Only for the thread's own table. glibc does not clear a key's value set
// after the thread's last round of key destructors, and a new thread that
// reuses the exited thread's cached stack inherits that value (its static
// TLS, t_cache_table included, starts afresh): its key destructor then gets
// the exited thread's table, which reap_exited_tables may have handed back,
// or unmapped, and a third thread may own since. Not read, then: the looks
// hand it back.
void flush_at_thread_exit(void* arg) {
  if (t_exited || arg != t_cache_table) return;
  auto* table = static_cast<tc_table*>(arg);
  t_exited = true;
  // Off this thread's robust list before the table can be reused or
  // unmapped (a look that finds it unlocked meanwhile leaves it to us).
  pthread_mutex_unlock(&table->owner_alive);
  // No more plain frees, and no block of ours from now on: the tag goes back
  // to the registry below, and a thread that takes it next owns its blocks.
  t_current.bias = nullptr;
  t_current.live_state = state::kLive;
  t_current.heap_id = 0;
  t_current.cache = nullptr;
  t_current.other_heap_id = 0;
  t_current.other_cache = nullptr;
  t_cache_table = nullptr;
  retire_table(table, /*unlinked=*/false);
}

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
    t = new_table();
    if (t == nullptr) return nullptr;
    hold_table(t);
    registry_t& r = registry();
    std::uint32_t tag;
    bool exclusive = false;
    {
      lock_guard guard(r.lock);
      tag = take_thread_tag(r, &exclusive);
      t->tag = tag;
      t->next = r.tables;
      if (r.tables != nullptr) r.tables->prev = t;
      r.tables = t;
    }
    t_cache_table = t;
    // Not registered (no key, glibc out of memory): a look finds the table
    // once the thread has exited (reap_exited_tables).
    (void)call_at_thread_exit(flush_at_thread_exit, t);
    t_current.live_state = static_cast<std::uint8_t>(state::kLive | tag << state::kTagShift);
    t_current.bias = exclusive ? &g_tag_bias[tag] : nullptr;
    internal::reap_exited_tables(t, /*whole_list=*/false, /*wait=*/true);
  }
  tc_heap_cache* c = t->caches[slot_].load(std::memory_order_relaxed);
  if (c == nullptr) {
    int err = 0;
    c = static_cast<tc_heap_cache*>(os::system_os().map_metadata(sizeof(tc_heap_cache), &err));
    if (c == nullptr) return nullptr;
    t->caches[slot_].store(c, std::memory_order_release);  // stats() on another thread reads *c
  }
  if (c->heap_id.load(std::memory_order_relaxed) != id_) {
    // Left by a heap that no longer exists: its arenas are gone, forget them.
    for (std::uint32_t cls = 0; cls < kNumCachedClasses; ++cls) {
      c->bins[cls].count.store(0, std::memory_order_relaxed);
      c->bins[cls].limit.store(kBinCapacity[cls], std::memory_order_relaxed);
    }
    c->heap_id.store(id_, std::memory_order_relaxed);
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
  advice_.lock();  // a leaf: held only to copy the queue
}

void heap::unlock_all() noexcept {
  advice_.unlock();
  segments_lock_.unlock();
  for (auto& c : classes_) c.lock.unlock();
}

// Lock order everywhere: registry, then class locks, then a heap's segments
// lock, then its advice lock (sealers inside a read section only try it),
// then the readers' overflow lock, then the seal locks, then the
// segment-map initialisation lock.
void prefork_all() noexcept {
  registry_t& r = registry();
  r.lock.lock();
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) h->lock_all();
  lock_readers_for_fork();
  internal::lock_seal_stripes();
  segment_map_init_lock().lock();
}

void postfork_all() noexcept {
  registry_t& r = registry();
  segment_map_init_lock().unlock();
  internal::unlock_seal_stripes();
  unlock_readers_after_fork();
  for (heap* h = r.all_heaps; h != nullptr; h = h->next_heap_) h->unlock_all();
  r.lock.unlock();
}

namespace {
// In a forked child only the forking thread exists: the other threads' caches
// would hold their blocks, and their tags, for good. Hand them back.
void postfork_child() noexcept {
  postfork_all();
  purger::forget_after_fork();
  stats_report_after_fork();
  heap::resume_decay_after_fork();
  reset_readers_after_fork();
  bias_after_fork(grace_internal::g_asymmetric.load(std::memory_order_relaxed));
  heap::recount_retired_after_fork();
  heap::restore_large_cache_after_fork();  // after the readers' reset: it may unmap
  registry_t& r = registry();
  tc_table* mine = t_cache_table;
  // glibc empties the child's robust list: the table's mutex, still marked
  // as the parent thread's, is on no list now. Take it again.
  if (mine != nullptr) hold_table(mine);
  for (;;) {
    tc_table* gone = nullptr;
    {
      lock_guard guard(r.lock);
      for (tc_table* t = r.tables; t != nullptr && gone == nullptr; t = t->next) {
        if (t != mine) gone = t;
      }
    }
    if (gone == nullptr) break;
    retire_table(gone, /*unlinked=*/false);
  }
}

std::atomic<int> g_fork_handlers{0};  // 0 none, 1 being registered, 2 registered
thread_local bool t_registering_fork_handlers = false;

__attribute__((constructor)) void install_fork_handlers_at_load() { install_fork_handlers(); }
}  // namespace

void install_fork_handlers() noexcept {
  if (g_fork_handlers.load(std::memory_order_acquire) == 2 || t_registering_fork_handlers) return;
  int none = 0;
  if (!g_fork_handlers.compare_exchange_strong(none, 1, std::memory_order_acq_rel)) {
    // Another thread registers them: wait, so that what our caller registers
    // next comes after them.
    while (g_fork_handlers.load(std::memory_order_acquire) != 2) sched_yield();
    return;
  }
  t_registering_fork_handlers = true;
  pthread_atfork(prefork_all, postfork_all, postfork_child);
  t_registering_fork_handlers = false;
  g_fork_handlers.store(2, std::memory_order_release);
}

}  // namespace dropalloc::core
