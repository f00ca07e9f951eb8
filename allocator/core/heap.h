// The heap: size-classed arenas, per-thread caches, generations and the drop
// check. One heap per droppable_resource; the pmr, cache and C front ends are
// thin layers over this class.
//
// Fast paths (allocate/deallocate of cached small blocks) are inline below and
// take no lock; everything else is in heap.cc behind a noinline slow path.
#pragma once

#include <cstddef>
#include <cstdint>
#include "allocator/core/mutex.h"

#include "allocator/core/advice_queue.h"
#include "allocator/core/cpu_features.h"
#include "allocator/core/grace.h"
#include "allocator/core/segment.h"
#include "allocator/core/tag_bias.h"
#include "allocator/core/thread_cache.h"
#include "allocator/core/types.h"
#include "allocator/os/os.h"

#if defined(__GNUC__)
#define DROPALLOC_LIKELY(x) __builtin_expect(!!(x), 1)
#define DROPALLOC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DROPALLOC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DROPALLOC_ALWAYS_INLINE inline
#define DROPALLOC_LIKELY(x) (x)
#define DROPALLOC_UNLIKELY(x) (x)
#endif

namespace dropalloc::core {

struct heap_options {
  os::os_interface* os = nullptr;        // nullptr: os::system_os()
  bool thread_cache = true;              // false: every call takes a class lock
  // Free memory unused this long is handed back: empty arenas and cached large
  // mappings unmapped, pages holding only free blocks released (see decay()).
  std::uint64_t empty_arena_decay_ms = 1000;
  // Also hand it back on a clock, from a background thread (core/purger.h),
  // so that it goes back while the program makes no further call. Without it
  // decay happens on later frees, and on trim().
  bool background_decay = false;
  // Whether a free may start that thread. Not the malloc replacement's: the C
  // library calls free() while holding locks of its own that creating a
  // thread takes again (core/purger.h). Its thread starts on the next
  // allocation slow path instead.
  bool purger_starts_on_free = true;
  // What statistics call this heap ("malloc", "resource"); static storage.
  const char* name = nullptr;
};

// One size class's share of a heap (heap::stats with per_class).
struct class_usage {
  std::uint64_t blocks_live = 0;
  std::uint64_t arenas = 0;
  std::uint64_t bytes_mapped = 0;
};

enum class alloc_error : std::uint8_t { none, out_of_memory, too_large, bad_alignment };
const char* to_string(alloc_error e) noexcept;

// Largest request accepted: beyond this the address space cannot hold it.
inline constexpr std::size_t kMaxRequest = std::size_t{1} << 46;

// Tails of reused mappings left resident in live large blocks (ordinary
// memory only). Releasing a tail with resident pages flushes every CPU's
// TLB (about 60 us here), and a realloc that grows the block into it faults
// the pages back: a reuse keeps its tail while the kept tails stay under
// kLargeTailKeptMaxBytes, and releases it past that (so blocks of many MiB
// still give theirs back). mstress: 16 MiB ran as fast as no bound, 8 MiB
// about 7% slower; peak RSS within 1 MiB of releasing every tail.
inline constexpr std::size_t kLargeTailKeptMaxBytes = 16u << 20;

// A freed large mapping enters the large cache with its pages. If the cached
// mappings that kept theirs, it included, then add up to more than half the
// bytes live in large blocks (or this floor if that is more), it is marked
// due: its pages go back to the OS (it keeps its address and header, and
// reads as zeros when reused) before the heap maps a new large block, or at
// the next decay pass, unless a reuse takes it first with its pages warm. A
// heap without a purger thread, where no decay pass would come, releases
// them at the free.
// The rule is applied as each mapping comes in: live bytes that fall later
// leave the kept ones as they are, until the decay time hands the cache back.
// Churn among many large blocks (bench malloc_large: 5-25 MiB, up to 20
// live) keeps reusing warm pages, while freed growth buffers that nothing
// reuses (a vector doubling) no longer add to the peak: containers 35.7 ->
// 33.7 MiB (medians), the same with a 1 MiB floor. Releasing them as they
// were freed cost mstress, which frees thousands of large blocks and reuses
// most of them, a system call and a TLB flush each (0.69 -> 0.76 s);
// deferred, it makes 923 releases instead of 1796 (0.635 -> 0.59 s, its
// peak 19.4 -> 20.0 MiB; medians of 10).
// Releasing every cached mapping's pages gave containers 31.8 MiB, but
// malloc_large then ran 2.2x as long.
inline constexpr std::size_t kLargeCacheResidentFloorBytes = 4u << 20;

struct sweep_result {
  std::uint64_t intact = 0, unsealed = 0, dropped = 0;
};

class heap {
 public:
  explicit heap(const heap_options& options = {});
  ~heap();  // unmaps every arena, whatever is still live
  heap(const heap&) = delete;
  heap& operator=(const heap&) = delete;

  // Returns nullptr and sets *err on failure. alignment must be a power of two.
  void* allocate(std::size_t bytes, std::size_t alignment, alloc_error* err) noexcept;
  // allocate() with the first `bytes` zeroed; fresh mappings are not touched.
  void* allocate_zeroed(std::size_t bytes, std::size_t alignment, alloc_error* err) noexcept;
  // Frees a block; double, foreign and interior frees are refused and reported.
  void deallocate(void* p) noexcept;
  // realloc's cheap case: the live large block starting at p, never
  // observed, grows to hold `bytes` where it is. Within its mapping (a
  // reused mapping may be up to four times the request) only the block's
  // request grows; past it the mapping is extended (nothing is copied, and
  // the new bytes read as zeros). False, with the block as it was, when that
  // cannot be done: not such a block, `bytes` not above its request, the
  // address space after it taken, or no memory for its new metadata. The
  // caller then copies (or keeps the block, for a shrink). Extended, the
  // block keeps its address but starts a new life under a new header:
  // handles to its earlier lives read stale, as after a free.
  bool grow_large_in_place(void* p, std::size_t bytes) noexcept;

  // The fast paths alone, for front ends that keep their own slow path out of
  // line: nullptr / false means "call allocate() / deallocate()", not failure.
  void* allocate_cached(std::size_t bytes, std::size_t alignment) noexcept;
  // The same for a size class already looked up (small_class_for or
  // malloc_class_for; kNoClass and classes no thread cache holds: nullptr).
  void* allocate_cached_class(std::size_t cls) noexcept;
  bool deallocate_cached(void* p) noexcept;
  // Makes this the heap whose cache the fast paths above find (they serve
  // only the heap the calling thread used last): out-of-line paths call it
  // and retry the fast path, so a thread using two heaps in turn stays fast.
  void make_current() noexcept { (void)thread_cache(); }

  std::uint64_t generation(const void* p) const noexcept;  // 0 unless p is a live block
  std::size_t usable_size(const void* p) const noexcept;   // 0 unless p is a live block
  bool owns(const void* p) const noexcept;
  // Checked builds' sized free: false (and the misuse reported) when a live
  // block at p cannot hold `bytes` or is not aligned to `alignment`.
  bool sized_free_matches(const void* p, std::size_t bytes, std::size_t alignment) noexcept;

  // The transitions of the block state machine (core/types.h, namespace
  // state). seal: live or sealed -> sealed, except that a sealed block that
  // lost a page since its seal becomes dropped (returned) instead; a dropped
  // block stays dropped.
  // Every seal of a block already sealed or dropped gives it a new generation:
  // a generation names one sealed version of the contents. If *sealed_gen is
  // given, it receives the generation the block was sealed at (0 if it was
  // not sealed), and the answer is the check of that generation.
  // expected_gen (0: any) makes the call answer `stale` and do nothing
  // unless it is the block's generation, decided under the block's seal lock,
  // so that no free and reuse of the address can come between (handles).
  block_state seal(void* p, std::uint64_t* sealed_gen = nullptr, std::uint64_t expected_gen = 0) noexcept;
  // seal() that also takes a dropped block back to sealed: only for callers
  // that rewrote every byte.
  block_state seal_rewritten(void* p, std::uint64_t* sealed_gen = nullptr, std::uint64_t expected_gen = 0) noexcept;
  // seal() of n blocks, with one translation barrier for all of them, made
  // first: the caller wrote them all before the call, as for seal_all(). Per
  // block i, answers[i] is what seal(blocks[i], &sealed_gens[i],
  // expected_gens[i]) would answer; sealed_gens and expected_gens may be null
  // (no generations wanted; any generation). If the barrier cannot be made,
  // each block is sealed as seal() would be, with a barrier of its own.
  // Returns how many answers are `intact`.
  std::size_t seal_many(void* const* blocks, std::size_t n, block_state* answers,
                        std::uint64_t* sealed_gens = nullptr, const std::uint64_t* expected_gens = nullptr) noexcept;
  // Copies src[0, n) into the block, zeroes the rest of it, seals it and
  // compares it with what was written before anyone can see it sealed: all
  // under the block's seal lock, so a free waits for it, and with the block
  // unsealed from the first byte written (a reader checking meanwhile gets
  // `unsealed`). A block sealed or dropped before gets a new generation, so
  // a reader who copied it during the write reads `stale` afterwards, never
  // `intact` over half-written bytes. A live block keeps its generation (the
  // first seal of a fresh block keeps allocate_block's, whatever path seals
  // it): readers must not be given a fresh block's handle before its first
  // seal has returned.
  // From any state but free: live, sealed or dropped -> sealed, or -> dropped
  // if the comparison failed (a page went meanwhile). n must not exceed the
  // block's usable size (checked under the lock: `stale` otherwise, nothing
  // written).
  // *gen receives the block's generation afterwards (0 if nothing written).
  // src is read under the seal lock and inside a read section: it must be
  // memory that reads without waiting for another thread (the pmr front end
  // passes a private copy of the caller's bytes).
  block_state write_and_seal(void* p, const void* src, std::size_t n, std::uint64_t* gen,
                             std::uint64_t expected_gen = 0) noexcept;
  // Frees the block only if expected_gen is its generation (decided under the
  // block's seal lock); otherwise refuses and reports it.
  void deallocate_generation(void* p, std::uint64_t expected_gen) noexcept;
  // Seals every live, unsealed block; leaves sealed and dropped ones alone.
  // Returns how many it sealed.
  std::size_t seal_all() noexcept;
  block_state check(const void* p, std::uint64_t generation) noexcept;
  sweep_result check_all() noexcept;

  // Zeroes the pages of [p, p + bytes) as a kernel drop would; EINVAL (and
  // nothing touched) unless every page lies in this heap's arenas.
  int drop_for_testing(void* p, std::size_t bytes) noexcept;
  void drop_all_for_testing() noexcept;
  // Hands back what stayed unused for the decay time, or everything with
  // `all`: transfer-cache blocks to their arenas, empty arenas and cached
  // large mappings to the OS, and the pages of free blocks in partly used
  // arenas (released: they read as zeros until reused). Returns the bytes
  // unmapped or released.
  std::size_t decay(bool all) noexcept;
  // Changes the decay settings of heap_options. For the heap's creator,
  // before other threads use it (the malloc shim, once the environment can
  // be read).
  void set_decay(std::uint64_t decay_ms, bool background) noexcept {
    options_.empty_arena_decay_ms = decay_ms;
    options_.background_decay = background;
  }
  // Whether a decay() would find something (or something not yet old enough).
  bool has_decay_work() const noexcept { return decay_pending_.load(std::memory_order_acquire); }
  // decay(true), after handing back the calling thread's cached blocks (other
  // threads' caches keep theirs), then waits (up to about 100 ms) for this
  // heap's retired mappings that another thread's batch holds (segment.h,
  // retire::batched). Returns the bytes handed back.
  std::size_t trim() noexcept;
  // In a forked child: decay work pending from the parent asks the (new)
  // purger again, since note_decay_work() asks only when work first appears.
  static void resume_decay_after_fork() noexcept;
  // In a forked child: cached large mappings that a thread of the parent had
  // out of the cache's slots while it released their pages go back in
  // (that thread does not exist here to do it).
  static void restore_large_cache_after_fork() noexcept;
  // In a forked child: every heap's count of retired segments recounted from
  // what waits on the stack (segment.h), the batches threads of the parent
  // were unmapping when it forked put back on it.
  static void recount_retired_after_fork() noexcept;
  // Segments of this heap retired but not yet unmapped (segment.cc counts
  // them, from their retirement until their unmap has returned). Signed: in
  // a forked child it may end below 0 (segment.h, recount_deferred_after_fork),
  // which counts as none.
  std::atomic<std::int64_t>& retired_waiting() noexcept { return retired_waiting_; }
  // One pass of the background purger over every heap with
  // options.background_decay. Returns whether any still has decay work.
  static bool decay_background_heaps() noexcept;

  // per_class, if given, has kNumClasses entries and is added to.
  resource_stats stats(class_usage* per_class = nullptr) const noexcept;
  const char* name() const noexcept { return options_.name != nullptr ? options_.name : "heap"; }
  // Calls fn for every heap of the process with its statistics, while no heap
  // can be created or destroyed (the registry lock is held: fn must not
  // create, destroy or ask a heap for its stats).
  static void visit_heaps(void (*fn)(const heap& h, const resource_stats& st, const class_usage* per_class,
                                     void* ctx),
                          void* ctx, bool per_class) noexcept;
  backing arena_backing() const noexcept { return os_->arena_backing(); }

 private:
  // The arena of this heap and the index of the block that starts at p, or
  // nullptr: not a block start in one of our arenas. Call inside a read
  // section (the arena stays mapped while the caller looks at it).
  segment* find_block(const void* p, std::uint32_t* idx) const noexcept {
    segment* s = segment_of(p);
    return s != nullptr && s->owner == this && block_index(s, p, idx) ? s : nullptr;
  }
  struct alignas(64) class_state {
    mutex lock;
    segment* avail = nullptr;  // arenas with free blocks and live blocks
    segment* empty = nullptr;  // arenas with no live block, newest first
    // Free blocks passed between thread caches in whole batches (tcmalloc's
    // transfer cache): a batch freed on one thread refills another, or the
    // same one, without touching arena bitmaps. Mapped on first use; blocks
    // here still count as live in their arenas.
    cached_block* transfer = nullptr;
    std::atomic<std::uint32_t> transfer_count{0};  // written under lock, read by stats
    std::uint64_t transfer_used_ms = 0;            // last time a batch went in or out
    std::uint32_t arenas = 0;                      // mapped arenas of this class (sizes the next)
    std::uint64_t purged_ms = 0;                   // last purge of free pages by a free
  };

  void* allocate_slow(std::size_t bytes, std::size_t alignment, std::size_t cls,
                      alloc_error* err) noexcept;
  void* allocate_large(std::size_t bytes, std::size_t alignment, alloc_error* err,
                       bool zero = false) noexcept;
  void deallocate_retired(segment* s, std::uint32_t idx, void* p, std::uint8_t st) noexcept;
  void deallocate_checked(void* p) noexcept;
  void report_misuse(const char* what, const void* p) noexcept;
  tc_heap_cache* thread_cache() noexcept;
  // The calling thread's cache if this is the heap it used last, else
  // nullptr (then the slow paths call thread_cache()).
  tc_heap_cache* current_cache() const noexcept;
  void give_back_cache(tc_heap_cache* c) noexcept;

  std::uint32_t take_blocks(std::uint32_t cls, cached_block* out, std::uint32_t want, int* err) noexcept;
  void give_back(std::uint32_t cls, const cached_block* items, std::uint32_t n) noexcept;
  void return_to_arenas(class_state& c, const cached_block* items, std::uint32_t n) noexcept;
  bool drain_transfer(class_state& c, std::uint64_t now, bool all) noexcept;  // true: blocks left
  std::size_t release_empty(class_state& c, bool all, bool* more) noexcept;
  std::size_t purge_free_pages(segment* s, std::uint64_t now, bool all, bool* more) noexcept;
  void note_decay_work() noexcept;
  // Without a background purger: a free's decay of its class, at most once a
  // quarter of the decay time (under the class lock).
  void decay_class_on_free(class_state& c, std::uint64_t now) noexcept;
  void link_all(segment* s) noexcept;
  void link_all_locked(segment* s) noexcept;
  void unlink_all(segment* s) noexcept;
  void unlink_all_locked(segment* s) noexcept;
  // unsettled: no translation barrier could be made, so nothing was sealed:
  // the block is left dropped (at a new generation if its contents changed).
  enum class seal_outcome : std::uint8_t { sealed, lost, skipped, not_live, unsettled };
  enum class seal_from : std::uint8_t { live_only, any_but_dropped, rewritten, written_here };
  // What seal_block does: how it may leave each state, which generation it
  // requires (0: any), and for written_here the bytes it writes and verifies.
  struct seal_request {
    seal_from from = seal_from::any_but_dropped;
    std::uint64_t expected_gen = 0;
    const std::byte* src = nullptr;
    std::size_t n = 0;
    // The caller made a translation barrier after the last write of the
    // contents (seal_all: one for all it seals), so the seal needs none.
    bool settled = false;
  };
  seal_outcome seal_block(segment* s, std::uint32_t idx, const seal_request& req,
                          std::uint64_t* sealed_gen = nullptr) noexcept;
  // MADV_FREE for the pages of block idx, sealed at generation gen: only
  // while it still is (it may have been freed and reused since), and in the
  // private fallback, a shared page only while its other blocks are sealed.
  void advise_sealed(segment* s, std::uint32_t idx, std::uint64_t gen) noexcept;
  // In the private fallback, a block just found dropped: its pages are
  // advised again, on advise_sealed's terms. Reading a page the kernel
  // reclaimed faults it back in, and on kernels that map no shared zero page
  // for a read fault (some virtual machines' kernels) that is a fresh page of
  // ordinary memory, which no one would give back until the block is freed:
  // the drop check's own reads of a lost block's witnesses, and the caller's
  // reads before its check, would pin one page per page lost.
  void readvise_dropped(segment* s, std::uint32_t idx) noexcept;
  block_state seal(void* p, const seal_request& req, std::uint64_t* sealed_gen) noexcept;
  block_state seal_in_section(void* p, const seal_request& req, std::uint64_t* sealed_gen) noexcept;
  // Deferred seal advice (core/advice.cc, queue in core/advice_queue.h). In
  // MAP_DROPPABLE arenas a seal's MADV_FREE only ranks its pages for reclaim
  // (any page there may go at any time, advised or not), so it can wait:
  // seals queue (block, generation) and the queue is advised in one pass,
  // adjacent pages in one call, when it is full (128 entries or 1 MiB of
  // pages; a block sealed within 63 after the last entry's, in its arena,
  // is a bit of that entry), when its oldest entry is 10 ms old (at the
  // next seal), and on seal_all(), decay() and trim(); a queue that starts
  // counts as decay work, so a heap's purger thread flushes it when no
  // further seal comes. Until then the pages are dirty droppable pages,
  // which the kernel may drop as readily as unsealed ones. The private
  // fallback advises at once (advise_sealed): there the advice decides what
  // the kernel may take, and takes the neighbours' seal locks.
  void advise_later(segment* s, std::uint32_t idx, std::uint64_t gen) noexcept;
  void flush_advice() noexcept;
  void give_advice(pending_advice* batch, int n) noexcept;
  static bool witnesses_lost(const segment* s, std::uint32_t idx, std::uint64_t m) noexcept;
  // check() for everything but the common case (an intact block within one
  // page, read without a retry), which check() answers itself: check_pages
  // answers intact blocks over several pages, check_slow every other case.
  block_state check_pages(const void* p, std::uint64_t generation) noexcept;
  block_state check_slow(const void* p, std::uint64_t generation) noexcept;

  static bool retire(segment* s, std::uint32_t idx, std::uint8_t* was) noexcept;

  friend void retire_table(tc_table* t, bool unlinked) noexcept;
  friend void prefork_all() noexcept;
  friend void postfork_all() noexcept;
  void lock_all() noexcept;
  void unlock_all() noexcept;

  heap* next_heap_ = nullptr;  // every live heap (guarded by the registry lock)
  heap* prev_heap_ = nullptr;

  os::os_interface* os_;
  heap_options options_;
  std::uint64_t id_;  // unique for the process lifetime, never 0
  int slot_;          // registry slot for thread caches, -1 for none
  class_state classes_[kNumClasses];
  mutable mutex segments_lock_;
  segment* all_ = nullptr;  // every arena of this heap (guarded by segments_lock_)
  // Recently freed large mappings kept for reuse (guarded by segments_lock_):
  // growing vectors and other large churn would otherwise pay munmap, mmap and
  // a page fault per page every time. Still registered and in all_, state free.
  static constexpr int kLargeCacheSlots = 16;
  static constexpr std::size_t kLargeCacheMaxBytes = 64u << 20;
  // Of those, a mapping keeps its pages if, as it comes in, the ones that
  // did stay within large_cache_resident_bound() (kLargeCacheResidentFloorBytes);
  // otherwise it is due (segment::large_release_due).
  std::atomic<std::size_t> large_live_bytes_{0};  // spans of the live large blocks
  // Cached mappings marked due: written under segments_lock_, read without
  // it to skip release_due_large's lock when there are none.
  std::atomic<int> large_cache_due_{0};
  // Hands back the pages of every due mapping in the cache: each leaves its
  // slot while its pages go (outside the lock: a reuse must not write to
  // them meanwhile) and comes back released, or is unmapped if the cache
  // filled up meanwhile. Returns the bytes released.
  std::size_t release_due_large() noexcept;
  // Puts c, out of the cache's slots, back in one (or unlinks it from all_
  // for the caller to unmap: false). Notes decay work.
  bool recache_large_locked(segment* c, std::uint64_t cached_ms) noexcept;
  std::size_t large_cache_resident_bound() const noexcept;
  segment* large_cache_[kLargeCacheSlots] = {};
  std::uint64_t large_cached_ms_[kLargeCacheSlots] = {};
  std::size_t large_cache_bytes_ = 0;
  // Bytes of cached mappings whose pages were kept, due ones included
  // (guarded by segments_lock_).
  std::size_t large_cache_resident_bytes_ = 0;
  void uncache_large_locked(segment* s) noexcept;  // the byte counts, as s leaves the cache
  segment* reuse_large(std::size_t span, std::size_t alignment) noexcept;
  // Bytes of reused mappings' tails kept resident in live large blocks (see
  // kLargeTailKeptMaxBytes).
  std::atomic<std::size_t> large_tail_kept_bytes_{0};
  bool keep_large_tail(segment* s, std::size_t bytes) noexcept;  // false: over the bound
  void forget_large_tail(segment* s) noexcept;                   // s's block is freed or regrown
  void shrink_large_tail(segment* s, std::size_t bytes) noexcept;  // its request grew into the tail
  bool cache_large(segment* s) noexcept;  // false: not kept, caller unmaps
  // Removes entry i from the cache and from all_ (under segments_lock_); the
  // caller unmaps it, after the lock is released (destroy_segments).
  segment* take_cached_large(int i) noexcept;
  // Returns the bytes unmapped; *more set when entries are kept (not yet old).
  std::size_t release_large_cache(bool all, bool* more = nullptr) noexcept;
  advice_queue advice_;  // seal advice waiting to be given (advise_later)
  // See retired_waiting(). A retired segment's unmap goes through os_ and
  // may be made by any thread (whichever fills or ends a batch): the
  // destructor waits for it to reach 0 before the heap, and perhaps its OS
  // layer, go away.
  std::atomic<std::int64_t> retired_waiting_{0};
  // Unmaps what this heap has waiting, and waits for its segments that
  // another thread's batch holds; `bounded`: for at most about 100 ms.
  // Nothing inside a read section (no grace period can be waited for there).
  void wait_for_retired(bool bounded) noexcept;
  std::atomic<bool> decay_pending_{false};  // something for decay() to hand back
  std::atomic<std::uint64_t> drops_detected_{0};
  std::atomic<std::uint64_t> misuse_refused_{0};
  // Address space and metadata of all_, now and at most (guarded by
  // segments_lock_): peaks cost nothing on the paths that map arenas.
  std::uint64_t mapped_now_ = 0, mapped_peak_ = 0, meta_now_ = 0, meta_peak_ = 0;
  resource_stats stats_impl(class_usage* per_class, bool registry_held) const noexcept;
};

// fork() from a multi-threaded process: take every allocator lock before the
// fork and release them after it in parent and child, so the child never
// inherits a lock held by a thread that does not exist there. Registered with
// pthread_atfork by install_fork_handlers().
void prefork_all() noexcept;
void postfork_all() noexcept;

// Registers the fork handlers, once per process; later calls return at once,
// as does a call made by the registration itself (pthread_atfork may come
// back through the malloc shim's __register_atfork). Called when the library
// loads, and by the malloc shim before any other library's handlers are
// registered: glibc runs prepare handlers in the reverse order of their
// registration and the others in that order, so handlers registered before
// these ones that allocate would run while these hold every allocator lock.
void install_fork_handlers() noexcept;

// ---- fast paths ------------------------------------------------------------

// Moves a block to its next generation, atomically with respect to a sealer
// that exchanges the same word (a lost update could bring a generation back).
DROPALLOC_ALWAYS_INLINE void bump_generation(std::atomic<std::uint64_t>& word) noexcept {
  std::uint64_t m = word.load(std::memory_order_relaxed);
  while (!word.compare_exchange_weak(m, meta::make(meta::gen(m) + 1, 0), std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
  }
}

// Marks a block free; false if it already was (a double free, perhaps racing
// ours: exactly one of two frees wins). *was gets the state before. If a
// generation of it was handed out, a new one makes every outstanding
// (pointer, generation) stale. The state changes by compare-and-exchange, so
// that generation() marking the block observed and this free are ordered:
// either the free sees the mark and moves the generation, or generation()
// sees a free block. The generation moves after the block is free (a handle
// taken meanwhile reads stale) and before anyone can allocate it (it is in no
// bin yet). An observed block is freed under its seal lock: a sealer between
// its meta-word and state-byte exchanges must not see the block freed and
// handed out again in between (it would seal the new life over the freed
// one's witnesses). Only the slow path frees observed blocks.
// expected_gen (0: any): retire only the life of that generation (false,
// *was = 0xff, if the block is live with another).
bool retire_observed(segment* s, std::uint32_t idx, std::uint8_t* was, std::uint64_t expected_gen = 0) noexcept;

DROPALLOC_ALWAYS_INLINE bool heap::retire(segment* s, std::uint32_t idx, std::uint8_t* was) noexcept {
  auto& sb = s->state[idx];
  std::uint8_t st = sb.load(std::memory_order_relaxed);
  do {
    if ((st & state::kMask) == state::kFree) return false;
    if ((st & state::kObserved) != 0) return retire_observed(s, idx, was);
    if (!before_state_write(sb, st)) return false;  // a handler inside this block's free: freed already
  } while (!sb.compare_exchange_weak(st, state::kFree, std::memory_order_acq_rel, std::memory_order_relaxed));
  *was = st;
  return true;
}

// The owner's free of its own live, never-observed block (its state read
// `now`) while its tag is biased: plain stores, bracketed by in_free
// (core/tag_bias.h, steps 1-4). True once freed; false, nothing written,
// when the tag is not biased or the state moved meanwhile (then the caller
// exchanges). Called only inside deallocate_cached's fast read section, so
// in_free is always clear on entry: a signal handler that interrupts a
// biased free finds that section open, and a free it makes leaves the fast
// path before it gets here (fast_read_section does not nest).
DROPALLOC_ALWAYS_INLINE bool free_biased(std::atomic<std::uint8_t>* st, std::uint8_t now) noexcept {
  tag_bias* b = t_current.bias;
  if (b == nullptr || b->mode.load(std::memory_order_relaxed) != bias::kBiased) return false;
  b->freeing.store(st, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // a handler that sees in_free sees this byte
  b->in_free.store(1, std::memory_order_relaxed);
  // Step 1 before step 2 for the compiler (the CPU may still reorder them:
  // see tag_bias.h), and before the state is read again: a signal handler
  // that ran since `now` was read, and wrote this byte, shows here; one that
  // runs from here on finds the byte in `freeing` and leaves it alone.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const bool plain = b->mode.load(std::memory_order_relaxed) == bias::kBiased &&
                     st->load(std::memory_order_relaxed) == now;
  if (plain) st->store(state::kFree, std::memory_order_release);
  b->in_free.store(0, std::memory_order_release);
  return plain;
}

DROPALLOC_ALWAYS_INLINE tc_heap_cache* heap::current_cache() const noexcept {
  return DROPALLOC_LIKELY(t_current.heap_id == id_) ? t_current.cache : nullptr;
}

DROPALLOC_ALWAYS_INLINE void* heap::allocate_cached(std::size_t bytes, std::size_t alignment) noexcept {
  return allocate_cached_class(small_class_for(bytes, alignment));
}

DROPALLOC_ALWAYS_INLINE void* heap::allocate_cached_class(std::size_t cls) noexcept {
  if (DROPALLOC_UNLIKELY(cls >= kNumCachedClasses)) return nullptr;
  tc_heap_cache* c = current_cache();
  if (DROPALLOC_UNLIKELY(c == nullptr)) return nullptr;
  tc_bin& bin = c->bins[cls];
  std::uint32_t n = bin.count.load(std::memory_order_relaxed);
  if (DROPALLOC_UNLIKELY(n == 0)) return nullptr;
  cached_block* items = c->items[cls];
  cached_block b = items[n - 1];
  bin.count.store(n - 1, std::memory_order_relaxed);
  // Callers write to what they get, and metadata is out of band, so nothing
  // else brings a block into cache before that first store: fetch the block
  // this bin hands out next now. In batch workloads that spread over many
  // classes, "next" is dozens of allocations away, time enough for a miss.
  // Not for blocks of a page or more: there the next block is a page of its own
  // that may never have been touched, and a prefetch of a page not yet
  // faulted in costs a failed page walk on every call (a malloc(4096)/free
  // loop ran at 120 ns a pair with it, 33 ns without, here).
  if (n >= 2 && cls < kNumSmallClasses - 1) __builtin_prefetch(items[n - 2].ptr, 1);
  b.state->store(t_current.live_state, std::memory_order_release);
  return b.ptr;
}

DROPALLOC_ALWAYS_INLINE void* heap::allocate(std::size_t bytes, std::size_t alignment, alloc_error* err) noexcept {
  if (void* p = allocate_cached(bytes, alignment)) return p;
  return allocate_slow(bytes, alignment, class_for(bytes, alignment), err);
}

// Only the common case: a live small block of this heap, never observed,
// freed on a thread whose bin has room. Everything else (including every kind
// of misuse) returns false and goes to deallocate_checked, which validates
// again and reports.
DROPALLOC_ALWAYS_INLINE bool heap::deallocate_cached(void* p) noexcept {
  tc_heap_cache* c = current_cache();
  if (DROPALLOC_UNLIKELY(c == nullptr)) return false;
  tc_bin* bin;
  cached_block* items;
  std::atomic<std::uint8_t>* st;
  std::uint32_t n, limit;
  bool set_aside;
  {
    // A double free may name an arena that decay or trim is unmapping right
    // now: the lookup, the header reads and the exchange run in a read
    // section (core/grace.h), so the arena's metadata stays mapped meanwhile.
    // Once the exchange has succeeded the block is ours, and a block that is
    // not free keeps its arena from being unmapped.
    fast_read_section reading;  // not entered (first use, nested): the slow path
    if (DROPALLOC_UNLIKELY(!reading.entered())) return false;
    // The map indices are masked rather than range-checked: an address outside
    // the map's range lands on some entry, and the offset check below rejects it.
    std::uint64_t off;
    segment* s = segment_and_offset(reinterpret_cast<std::uintptr_t>(p), &off);
    if (DROPALLOC_UNLIKELY(s == nullptr || s->owner != this)) return false;
    // Arenas of classes above 64 KiB (no thread cache holds them) and large
    // blocks have fast_capacity 0: the slow path. No separate check of off
    // against the span: an index below fast_capacity whose block starts at
    // off puts off inside the arena (i < 2^24 and block_size < 2^18, so
    // i * block_size cannot wrap), and a wrapped off (p below base) gives an
    // i whose product misses it.
    const std::uint64_t i = (off * s->magic) >> 40;
    if (DROPALLOC_UNLIKELY(i >= s->fast_capacity || i * s->block_size != off)) return false;
    auto idx = static_cast<std::uint32_t>(i);
    st = &s->state[idx];
    // Ask for the state's cache line in exclusive state before reading it:
    // a block another thread allocated has its state line in that thread's
    // cache, and a plain read then fetches it shared and the exchange below
    // fetches it again to own it (two transfers). With prefetchw it is one.
    prefetch_for_write(st);
    const std::uint8_t now = st->load(std::memory_order_relaxed);
    bin = &c->bins[s->cls];
    items = c->items[s->cls];
    n = bin->count.load(std::memory_order_relaxed);
    limit = bin->limit.load(std::memory_order_relaxed);
    if (DROPALLOC_UNLIKELY(n >= limit)) return false;
    // Live and never observed (owned by this thread, or by another: see
    // state::kTagShift). Anything else (observed, sealed, dropped, free) takes
    // the slow path.
    // Another thread's block: its owner's bias must be revoked first, which
    // the slow path does (a system call: kept off this path).
    const bool other_thread = now != t_current.live_state;
    if (other_thread &&
        ((now & (state::kMask | state::kObserved)) != state::kLive || !owner_never_plain(now))) {
      return false;
    }
    // Compare-and-exchange, not a store, unless this thread's tag is biased:
    // a racing generation() may have marked the block observed since we read
    // `now` (then the slow path moves its generation), and of two racing
    // frees only one may win.
    std::uint8_t expected = now;
    const bool freed_plain = !other_thread && free_biased(st, now);
    if (!freed_plain &&
        DROPALLOC_UNLIKELY(!st->compare_exchange_strong(expected, state::kFree, std::memory_order_acq_rel,
                                                        std::memory_order_relaxed))) {
      return false;
    }
    set_aside = other_thread && blocks_share_lines(s->block_size);
  }
  if (DROPALLOC_UNLIKELY(set_aside)) {
    // Another thread's block whose class's blocks can share a cache line:
    // set it aside at the top of the bin, to be passed on.
    items[limit - 1] = cached_block{p, st};
    bin->limit.store(limit - 1, std::memory_order_relaxed);
    return true;
  }
  items[n] = cached_block{p, st};
  bin->count.store(n + 1, std::memory_order_relaxed);
  return true;
}

DROPALLOC_ALWAYS_INLINE void heap::deallocate(void* p) noexcept {
  if (DROPALLOC_LIKELY(deallocate_cached(p))) return;
  deallocate_checked(p);
}

}  // namespace dropalloc::core
