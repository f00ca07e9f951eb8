// OS layer: the only code in dropalloc that calls mmap/madvise/mincore or reads
// /proc and /sys. Everything above it talks to an `os_interface`, so the core can
// be tested against a fake that injects failures and drops pages on demand.
//
// Contract for every primitive (mimalloc's prim.h habit):
//   * addresses and lengths are multiples of kPageSize unless stated otherwise;
//   * failures return nullptr / a positive errno value and never throw;
//   * nothing here allocates through malloc (the LD_PRELOAD shim sits on top).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace dropalloc {

// What memory the arenas are carved from.
enum class backing : std::uint8_t {
  droppable,         // MAP_DROPPABLE: the kernel may zero any page under pressure.
  private_fallback,  // MAP_PRIVATE + MADV_WIPEONFORK: kernel without MAP_DROPPABLE,
                     // or the fallback was forced. Sealed pages (MADV_FREE) can
                     // still be reclaimed and read back as zeros.
  ordinary,          // plain MAP_PRIVATE memory that is never dropped and survives
                     // fork: for general-purpose malloc (the LD_PRELOAD shim).
};

const char* to_string(backing b) noexcept;

namespace os {

inline constexpr std::size_t kPageSize = 4096;  // drop and witness granularity

// ---- stale translations --------------------------------------------------------
// Linux takes a page out of the page tables (MADV_DONTNEED, munmap, reclaim
// dropping a droppable or MADV_FREE page) in two steps: the page-table entry
// is cleared under the page-table lock, and the TLB flush that makes the other
// CPUs forget the old page comes later, after that lock is released (mmu_gather
// for zaps, the batched flush of reclaim). In between, a thread may fault a
// new page in at the address and write it, while another CPU still reads the
// old page through its TLB: it sees the contents from before the drop, not
// zeros and not what was just written. A seal taken then would vouch for
// bytes that some CPU does not see: its witness words, read through the same
// stale translation, hold the old contents and look intact.
//
// Returns once no CPU can read, through a translation cached before the call,
// a page that the page tables no longer map. It is madvise(MADV_FREE) of one
// clean private page mapped for the purpose: the kernel ends every such call
// with a flush of the whole address space if another thread's unmap is still
// waiting for its flush (mm_tlb_flush_nested in tlb_finish_mmu), and begins
// its page-table walk by flushing any batched reclaim flush still pending
// (flush_tlb_batched_pending). Neither costs a flush otherwise, so it is one
// system call (well under a microsecond), against an MADV_FREE of dirty pages
// that always flushes. Returns 0 or an errno value (the page could not be
// mapped: then no barrier was made, and a seal must not be published).
int translation_barrier() noexcept;
// Maps the page translation_barrier() needs, if not yet done, so that a seal
// later never finds it missing for want of memory. Returns 0 or ENOMEM.
// Heaps call it when they are made; the page stays mapped for good.
int prepare_translation_barrier() noexcept;

class os_interface {
 public:
  virtual ~os_interface() = default;

  // Maps `bytes` of arena memory (droppable where possible) aligned to
  // `alignment` (a power of two >= kPageSize). On failure returns nullptr and
  // stores an errno value in *err.
  virtual void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept = 0;
  virtual void unmap_arena(void* p, std::size_t bytes) noexcept = 0;
  // Grows the arena mapping [p, p + old_bytes) to new_bytes in place
  // (mremap without moving it): its pages stay where they are, and the new
  // ones read as zeros. Fails when the address space after it is taken.
  // Returns 0, or an errno value with the mapping unchanged. The default is
  // a layer that cannot (callers then copy instead).
  virtual int extend_arena(void*, std::size_t, std::size_t) noexcept { return ENOSYS; }

  // Ordinary zero-filled private memory for metadata. Never droppable.
  virtual void* map_metadata(std::size_t bytes, int* err) noexcept = 0;
  virtual void unmap_metadata(void* p, std::size_t bytes) noexcept = 0;

  // MADV_FREE over the whole OS pages inside [p, p + bytes): such "sealed" pages
  // are reclaimed least recently used first instead of all at once. Returns 0 or
  // an errno value. A later write to a page un-seals it.
  virtual int seal_pages(void* p, std::size_t bytes) noexcept = 0;

  // Hands the pages of [p, p + bytes) back to the OS now (MADV_DONTNEED): the
  // range stays mapped, reads as zeros and is faulted in again on the next
  // write. For pages that hold only free blocks. Returns 0 or an errno value.
  virtual int release_pages(void* p, std::size_t bytes) noexcept = 0;

  // Test hook: zero [p, p + bytes) now, exactly as a kernel drop would.
  virtual int drop_pages(void* p, std::size_t bytes) noexcept = 0;

  // Bytes of [p, p + bytes) currently resident (mincore). Returns 0 on error.
  virtual std::size_t resident_bytes(const void* p, std::size_t bytes) noexcept = 0;

  // The backing arenas get; settles (probing the kernel once) on first use.
  virtual backing arena_backing() noexcept = 0;

  // errno of the failed MAP_DROPPABLE probe that caused the fallback (0 if
  // none, -1 if the fallback was forced).
  virtual int fallback_reason() noexcept = 0;
  // translation_barrier() below: a sealer calls it after the block's bytes
  // were written and before its seal can be seen. Fakes override it to watch
  // the order; they should still call translation_barrier(), since their
  // drops are real MADV_DONTNEEDs.
  virtual int settle_translations() noexcept { return translation_barrier(); }
};

// The process-wide Linux implementation: probes MAP_DROPPABLE once and falls
// back to private memory for good when the kernel refuses it. Setting
// DROPALLOC_FORCE_FALLBACK=1 in the environment forces the fallback.
os_interface& system_os() noexcept;

// A Linux implementation that always uses the private fallback backing.
os_interface& fallback_os() noexcept;

// Ordinary private memory for general-purpose allocation: no MAP_DROPPABLE, no
// wipe-on-fork; seal_pages() does nothing, since sealed malloc memory could
// be reclaimed under a program that cannot survive that.
os_interface& ordinary_os() noexcept;

// ---- the process ---------------------------------------------------------------
// The process's peak resident set (VmHWM in /proc/self/status), 0 if unknown.
std::uint64_t peak_resident_bytes() noexcept;
// The process's resident set now (VmRSS), 0 if unknown.
std::uint64_t resident_bytes_now() noexcept;
// Milliseconds since the process started (/proc/self/stat), 0 if unknown.
std::uint64_t process_age_ms() noexcept;

// ---- process-wide memory barrier ----------------------------------------------
// Lets lock-free readers pay nothing for the rare writer that must know they
// are gone (the core's grace periods before unmapping metadata).
//
// Registers the process for membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
// (Linux 4.14+). Returns true if process_barrier() will work; then a reader's
// plain store followed by a compiler barrier is ordered against a writer that
// calls process_barrier() between its store and its loads. A forked child is
// not registered: call it again there.
bool register_process_barrier() noexcept;
// Makes every running thread of the process execute a full memory barrier
// before it returns. Returns 0 or an errno value (EPERM: not registered).
int process_barrier() noexcept;

}  // namespace os
}  // namespace dropalloc
