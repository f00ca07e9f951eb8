// dropalloc::droppable_resource: a std::pmr::memory_resource whose blocks live
// in droppable memory, with generation tags and a drop check per block.
//
// Thread-safe. Blocks must go back to the resource that gave them out
// (do_is_equal is identity). Destroying the resource unmaps all its memory,
// like std::pmr pool resources.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory_resource>
#include <new>
#include <span>

#include "allocator/core/heap.h"
#include "allocator/core/types.h"
#include "allocator/os/os.h"

namespace dropalloc {

struct resource_options {
  // Use ordinary private memory even where MAP_DROPPABLE works (the environment
  // variable DROPALLOC_FORCE_FALLBACK=1 does the same for every resource).
  bool force_fallback = false;
  // Per-thread caches of free blocks. Turn off for short-lived resources that
  // a single thread uses, e.g. one per cached object.
  bool thread_cache = true;
  // Free memory unused this long goes back to the OS: arenas that hold no
  // block are unmapped, pages that hold only free blocks released.
  std::uint64_t empty_arena_decay_ms = 1000;
  // Hand that memory back from a background thread (one per process, shared
  // by every resource and the malloc shim), even while the program makes no
  // further call. false: only on later frees and on trim(). Always false
  // with a test OS layer (`os` below).
  bool background_decay = true;
  // Tests only: the OS layer to use (nullptr: the real one).
  os::os_interface* os = nullptr;
  // What print_stats calls this resource; must outlive it (a string literal).
  const char* name = "resource";
};

// std::bad_alloc saying why an allocation failed.
class allocation_error : public std::bad_alloc {
 public:
  allocation_error(std::size_t bytes, std::size_t alignment, core::alloc_error reason) noexcept;
  const char* what() const noexcept override { return message_; }
  core::alloc_error reason() const noexcept { return reason_; }

 private:
  core::alloc_error reason_;
  char message_[160];
};

// A block and the generation it had when it was handed out.
struct block_ref {
  void* ptr = nullptr;
  std::uint64_t generation = 0;
};

class droppable_resource final : public std::pmr::memory_resource {
 public:
  droppable_resource() : droppable_resource(resource_options{}) {}
  explicit droppable_resource(const resource_options& options);
  ~droppable_resource() override = default;
  droppable_resource(const droppable_resource&) = delete;
  droppable_resource& operator=(const droppable_resource&) = delete;

  // allocate() plus the block's generation, in one call.
  block_ref allocate_block(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t));
  // Frees the block of a handle; a handle whose generation is no longer the
  // block's (freed since, perhaps handed out again) is refused and reported
  // as a double free would be, freeing nothing.
  void deallocate(const block_ref& b) noexcept;
  // std::pmr::memory_resource::deallocate, not hidden by the overload above.
  // Its pointer is declared nonnull by the standard library, so passing
  // nullptr is undefined behaviour there; should one arrive anyway (through
  // do_deallocate), nothing is done and nothing reported, as free(NULL).
  using std::pmr::memory_resource::deallocate;

  // The generation of a live block (0 if p is not a live block of ours).
  std::uint64_t generation(const void* p) const noexcept { return heap_.generation(p); }

  // Declares the block fully written: records a witness word per page (in
  // ordinary memory) and advises the kernel (MADV_FREE) so that under pressure
  // it drops sealed pages oldest first instead of everything at once. From
  // then on `intact` means the block holds exactly what it held when seal()
  // read it. A page dropped *before* the seal, while you were still writing,
  // reads as zeros and is sealed as zeros: seal() cannot see that; use
  // write_and_seal() or verify a checksum of your own after sealing.
  // Transitions (core/types.h): live -> sealed; sealed -> sealed (re-seal
  // after a write), except that a sealed block whose witness word reads zero
  // becomes `dropped` instead and seal() returns `dropped` (a page was lost
  // since the seal, or your write put a zero over the witness word; the two
  // look alike). A dropped block stays dropped for seal(): whoever learnt of
  // the loss (any thread's check()), a call that may be a mere repeat must not
  // revive it. Use write_and_seal(), seal_rewritten() after rewriting all of
  // it, or free it and allocate a new one. So no seal() can turn a lost page
  // into `intact`. A re-seal (sealed -> sealed) gives the block a new
  // generation: a generation names one sealed version, so read generation(p)
  // again after it, or use seal(block_ref&), which does. Returns the check
  // right after sealing: intact, dropped (a page went meanwhile), stale (not a
  // live block) or foreign (not ours). `dropped` also if the seal could not
  // be made safely (the kernel refused the barrier every seal makes): the
  // block is then taken as lost, as if a page had gone (a block sealed
  // before gets a new generation); rewrite it as for any dropped block.
  block_state seal(void* p) noexcept { return heap_.seal(p); }
  // seal() through a handle: `stale` (nothing sealed) unless its generation
  // is still the block's, so an old handle never seals a later block that
  // took the same address. On return the handle names what was sealed: a
  // re-seal (of a block sealed before) gives the block a new generation, so
  // that a reader holding the old one, who may have copied bytes from before
  // or during the rewrite, reads `stale` instead of `intact` once the seal
  // has returned. Before that the plain writes are invisible here: a check
  // answers for the old seal, also over a copy holding zeros of a page your
  // write has since put back. Keep readers from checking until the seal has
  // returned, or use write_and_seal(), during which checks read `unsealed`.
  block_state seal(block_ref& b) noexcept {
    return through_handle(b, [this](void* p, std::uint64_t* gen, std::uint64_t expected) {
      return heap_.seal(p, gen, expected);
    });
  }
  // seal() for a block you have rewritten *entirely* since it was found
  // dropped: it also takes a dropped block back to sealed. It vouches for what
  // it reads, as seal() does; a byte you did not rewrite would be certified as
  // it reads now (zeros), so prefer write_and_seal(), which verifies.
  // Reviving a dropped block starts a new life: it gets a new generation
  // (generation(p)), so a handle from before reads `stale` and any reader who
  // copied the block while it was dropped finds out on its check.
  block_state seal_rewritten(void* p) noexcept { return heap_.seal_rewritten(p); }
  // seal_rewritten() through a handle: `stale` (nothing sealed) unless its
  // generation is still the block's; on return the handle names the block's
  // current life (a revival moved its generation).
  block_state seal_rewritten(block_ref& b) noexcept {
    return through_handle(b, [this](void* p, std::uint64_t* gen, std::uint64_t expected) {
      return heap_.seal_rewritten(p, gen, expected);
    });
  }
  // seal() of many blocks at once, for about the price of one: every seal
  // makes a system call (a barrier against the kernel's stale page
  // translations, see seal()), and here one call serves the whole batch, made
  // first. So write every block, then seal them together; a block still being
  // written during the call is sealed as it reads, as by seal(). answers[i]
  // receives what seal(blocks[i]) would answer (null, foreign and duplicate
  // pointers included: a second seal of a block is a re-seal). Returns how
  // many answers are `intact`. Throws std::invalid_argument, sealing nothing,
  // if answers is shorter than blocks.
  std::size_t seal_many(std::span<void* const> blocks, std::span<block_state> answers);
  // seal_many() through handles: each as seal(block_ref&), so a handle whose
  // generation is no longer its block's seals nothing (`stale`), and on
  // return each handle names what was sealed. One barrier per 128 handles.
  std::size_t seal_many(std::span<block_ref> blocks, std::span<block_state> answers);
  // Makes the block hold n bytes copied from ordinary memory and zeros after
  // them (to usable_size(p)), and seals it: `intact` only if it was found to
  // hold exactly that after sealing, which covers the time before the seal
  // too. From the first byte written until then the block reads `unsealed`,
  // and it is sealed only once verified; a free of it waits. Works on a
  // live, sealed or dropped block (a revival). A block that was sealed or
  // dropped before gets a new generation (see seal()), so a reader who copied
  // it during the write reads `stale`, never `intact` over a half-written or
  // half-lost copy; the block_ref overload takes the new generation into the
  // handle. A fresh block's first seal, this one included, keeps the
  // generation allocate_block gave: nothing could tell a reader who copied
  // it mid-write, so give readers a fresh block's handle only once this
  // call has returned. `dropped`: a page went meanwhile, the block is
  // dropped (write again), so a later check() never says intact; also if
  // the seal could not be made safely (see seal()). `stale` /
  // `foreign`: p is not a live block of this resource, nothing was written.
  // Throws std::length_error if n exceeds usable_size(p), and
  // std::invalid_argument if src is null with n > 0, writing nothing. src is
  // copied to private memory before any lock is taken (it costs n bytes of
  // ordinary memory: kept per thread up to 1 MiB, for the call above that).
  block_state write_and_seal(void* p, const void* src, std::size_t n) {
    std::uint64_t gen = 0;
    return write_and_seal(p, src, n, &gen);
  }
  // write_and_seal() through a handle: `stale` (nothing written) unless its
  // generation is still the block's; on return the handle names what was
  // sealed (a re-seal or a revival moved the generation).
  block_state write_and_seal(block_ref& b, const void* src, std::size_t n) {
    return through_handle(b, [&](void* p, std::uint64_t* gen, std::uint64_t expected) {
      return write_and_seal(p, src, n, gen, expected);
    });
  }
  // Seals every live block of this resource that is not sealed yet, with one
  // madvise per run of pages. Sealed and dropped blocks are left alone (a
  // dropped block stays dropped). Call it when no thread is still writing an
  // unsealed block of this resource: it seals what each block holds at that
  // moment. Returns how many blocks it sealed.
  std::size_t seal_all() noexcept { return heap_.seal_all(); }

  // Whether (p, generation) is still whole: a few loads per page, no system
  // call. Safe read protocol: check, read what you need, check again; only if
  // the second check says `intact` is what you read valid (a page can be
  // dropped while you read it). A `dropped` answer is sticky until resealed.
  // Never crashes: any pointer may be asked about, also one whose arena is
  // being returned to the OS by another thread. nullptr and pointers that were
  // never blocks with that generation read `foreign`.
  block_state check(const void* p, std::uint64_t generation) noexcept {
    return heap_.check(p, generation);
  }
  block_state check(const block_ref& b) noexcept { return heap_.check(b.ptr, b.generation); }
  bool is_intact(const void* p, std::uint64_t generation) noexcept {
    return heap_.check(p, generation) == block_state::intact;
  }
  bool is_intact(const block_ref& b) noexcept { return is_intact(b.ptr, b.generation); }
  // Checks every live block.
  core::sweep_result check_all() noexcept { return heap_.check_all(); }

  std::size_t usable_size(const void* p) const noexcept { return heap_.usable_size(p); }
  bool owns(const void* p) const noexcept { return heap_.owns(p); }
  resource_stats stats() const noexcept { return heap_.stats(); }
  // The statistics for people (README.md, "Statistics"): live bytes and
  // blocks, address space and metadata now and at their peak, resident
  // memory, in KiB/MiB/GiB, each figure explained; per_class adds a line per
  // size class. The process-wide report is dropalloc::print_stats below.
  void print_stats(std::ostream& out, bool per_class = false) const;
  backing arena_backing() const noexcept { return heap_.arena_backing(); }
  // Hands free memory back to the OS now instead of after the decay: arenas
  // that hold no block, cached large mappings, pages holding only free
  // blocks. Blocks freed on the calling thread count; blocks other threads
  // freed may still sit in those threads' caches. Returns the bytes handed back.
  std::size_t trim() noexcept { return heap_.trim(); }

  // Tests: zero the pages of [p, p + bytes) now, as a kernel drop would.
  // Returns 0, or EINVAL (touching nothing) unless all of it is our memory.
  int drop_for_testing(void* p, std::size_t bytes) noexcept { return heap_.drop_for_testing(p, bytes); }
  void drop_all_for_testing() noexcept { heap_.drop_all_for_testing(); }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

 private:
  static core::heap_options heap_options_for(const resource_options& options);
  [[gnu::noinline]] void* allocate_or_throw(std::size_t bytes, std::size_t alignment);
  [[gnu::noinline]] void deallocate_slow(void* p) noexcept;
  // `intact` if b names the current life of a block of ours; otherwise why
  // not: `foreign` (not ours) or `stale` (freed, or a later life).
  // write_and_seal; *gen receives the generation the block now has (the
  // one sealed, or the one marked dropped), 0 if nothing was written.
  block_state write_and_seal(void* p, const void* src, std::size_t n, std::uint64_t* gen,
                             std::uint64_t expected_gen = 0);
  // A call through a handle: `call(p, &gen, expected)` acts only on the life
  // whose generation is `expected` (decided under the block's seal lock) and
  // reports the generation the block has afterwards, which the handle takes.
  // A handle with generation 0 names no life (the core takes 0 as "any
  // generation", so it must not get there).
  template <class Call>
  block_state through_handle(block_ref& b, Call&& call) {
    if (b.generation == 0) {
      return b.ptr == nullptr || !heap_.owns(b.ptr) ? block_state::foreign : block_state::stale;
    }
    std::uint64_t gen = 0;
    block_state s = call(b.ptr, &gen, b.generation);
    if (gen != 0) b.generation = gen;
    return s;
  }
  core::heap heap_;
};

// Statistics of every dropalloc heap of the process (the malloc
// replacement's, when it is the process's malloc, and every resource), with
// the process id, the time since it started and its resident set. The same
// report as C's dropalloc_stats_print and DROPALLOC_STATS=1 at exit.
void print_stats(std::ostream& out, bool per_class = false);

}  // namespace dropalloc
