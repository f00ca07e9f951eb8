// Growing a large block where it is: realloc of a block with a mapping of its
// own extends the mapping (mremap, not moved) instead of copying every byte
// into fresh pages and faulting them in. A block that grows 1.5x at a time
// from 256 KiB to 1 MiB would otherwise copy 1.5 MiB on the way.
//
// The block keeps its address but gets a new header: the old one's page
// arrays are sized for the old span, and lock-free readers (check(), the
// free fast path, usable_size) may be reading the old header right now, so
// it is not changed but replaced, and unmapped after a grace period.
//
//   1. Claim the block: its state goes live -> free by compare-and-exchange,
//      as a free would. Only a live block never observed is claimed (a
//      handle to this life could otherwise outlive it), and from here on a
//      racing free is refused as a double free and generation() finds no
//      live block, as for a block being freed. If its mapping already holds
//      the new size (a cached mapping reused for a smaller request), only
//      its request grows, and it is live again under the same header; the
//      steps below are for a mapping that must grow.
//   2. Raise the generation floor above every generation of the old header:
//      the new header's generations start above it, so a handle to an
//      earlier life of these addresses never matches (as after unmapping).
//   3. Build the new header (its metadata and map leaves), then extend the
//      mapping. Either may fail: the new header is unmapped (nobody saw it),
//      the block is made live again, and the caller copies.
//   4. Publish: the new header replaces the old in the map and in all_; the
//      old one is unmapped after a grace period, with the next batch of
//      retired segments (segment.h, retire::batched), not waited for here.
#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/core/segment.h"

namespace dropalloc::core {

bool heap::grow_large_in_place(void* p, std::size_t bytes) noexcept {
  if (p == nullptr || bytes == 0 || bytes > kMaxRequest) return false;
  // The old header goes after a grace period, which never waits for the
  // caller's own section (a signal handler's realloc interrupting one):
  // the caller copies instead.
  if (in_read_section()) return false;
  const std::size_t span = (bytes + kPage - 1) / kPage * kPage;
  segment* old = nullptr;
  {
    // The header may be one being unmapped (a foreign or freed pointer).
    read_section reading;
    segment* s = segment_of(p);
    if (s == nullptr || s->owner != this || s->cls != kLargeClass || s->base != p) return false;
    std::uint8_t live = state::kLive;  // large blocks carry no thread tag
    if (!s->state[0].compare_exchange_strong(live, state::kFree, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
      return false;  // observed, sealed, dropped, free, or racing a free
    }
    // Claimed: the fields below are the holder's, and a racing free is refused.
    if (span <= s->large_request) {
      s->state[0].store(state::kLive, std::memory_order_release);
      return false;  // not a growth
    }
    if (span <= s->span) {
      // A reused mapping larger than the request: the block grows into the
      // rest of it (kept resident, or released and reading as zeros) under
      // the same header. Never observed, so no handle to this life exists
      // that a new one would have to make stale. Copying it instead (as
      // realloc did) faulted fresh pages for all of it each time.
      s->large_request = span;
      shrink_large_tail(s, s->span - span);
      s->state[0].store(state::kLive, std::memory_order_release);
      return true;
    }
    old = s;  // a claimed block is in no cache and on no list of free ones: its header stays
  }
  raise_generation_floor(old);
  int err = 0;
  segment* grown = large_header(*os_, this, old->base, span, &err);
  if (grown != nullptr && os_->extend_arena(old->base, old->span, span) != 0) {
    os_->unmap_metadata(grown->meta_base, grown->meta_bytes);
    grown = nullptr;
  }
  if (grown == nullptr) {
    old->state[0].store(state::kLive, std::memory_order_release);  // claimed: nobody else wrote it
    return false;
  }
  {
    lock_guard guard(segments_lock_);
    unlink_all_locked(old);
    link_all_locked(grown);
    // Under the lock, so that whoever walks all_ under it (seal_all, stats)
    // finds the block where the map does.
    publish_segment(grown);
  }
  forget_large_tail(old);  // the request now covers the old tail, and the new header has none
  large_live_bytes_.fetch_add(grown->span - old->span, std::memory_order_relaxed);
  retire_header(*os_, old);  // unmapped after a grace period, with the next batch
  return true;
}

}  // namespace dropalloc::core
