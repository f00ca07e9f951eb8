// Biased frees: while no other thread writes the state bytes of a thread's
// live blocks, that thread frees its own blocks with a plain store instead of
// a compare-and-exchange (whose full fence was most of a free's time).
//
// Every change of a live block's state byte is otherwise a compare-and-
// exchange (core/types.h), so that racing writers (a free on another thread,
// generation() or a seal marking the block observed) are ordered against the
// owner's free. A plain store could overwrite such a write: a lost observed
// mark would let an old handle read `intact` on the block's next life, and
// two frees that both won would put one block in two bins. So the owner
// stores plainly only while its tag is *biased*, and a thread about to write
// the state byte of another thread's live, unobserved block first *revokes*
// that bias, then writes as before:
//
//   owner's free              1. in_free = 1        revoker          a. mode = revoking
//   (plain stores and loads)  2. mode == biased?                     b. process barrier
//                             3. state = free                        c. wait for in_free == 0
//                             4. in_free = 0                         d. mode = revoked
//
// The process barrier (membarrier) runs a full fence on every thread of the
// process, at some point of the owner's free. If step 2 comes after that
// point, the owner sees `revoking` and takes the compare-and-exchange. If it
// comes before, so does step 1, and the revoker sees in_free set (or already
// cleared, with the store of step 3 visible) and waits until step 3 is
// visible before it writes. Either way the revoker's exchange sees the free.
// The cost falls on the rare side: a revocation is a system call, and a tag
// revoked stays revoked for kRebiasAfterMs, so a program that keeps freeing
// across threads pays it a few times a second at most (and frees as before).
//
// Only the owning thread re-biases its tag, from its allocation slow path
// (no lock held, no read section open): mode = rebiasing, then a grace period
// (core/grace.h), then biased. Every writer that found its tag `revoked` did
// so inside a read section and wrote in that same section, so the grace
// period waits for it; a writer that starts later finds `rebiasing` or
// `biased` and revokes again.
//
// A signal handler on the owner thread is the one writer that program order
// does not put before or after the owner's free: the free records the byte it
// frees (`freeing`) and reads the state again after in_free is set, and a
// handler that finds its own thread freeing that byte answers as for a free
// block instead of writing it (before_state_write). A handler never waits for
// a revocation either (revoke_bias refuses inside this thread's own free or
// revocation): the code it interrupted, or another thread's handler in the
// same spot, could be what it waits for. It answers as for a free block.
//
// Biasing needs the process barrier (a kernel with membarrier, and not under
// TSan, which cannot see what it orders: core/grace.cc) and a tag held by one
// thread only; a tag shared by several threads (more than state::kTags at
// once) is never biased.
#pragma once

#include <atomic>
#include <cstdint>

#include "allocator/core/thread_cache.h"
#include "allocator/core/types.h"

namespace dropalloc::core {

namespace bias {
inline constexpr std::uint8_t kBiased = 0;     // the owner frees with plain stores
inline constexpr std::uint8_t kRevoking = 1;   // a revoker waits for the owner's free in flight
inline constexpr std::uint8_t kRevoked = 2;    // every writer uses compare-and-exchange
inline constexpr std::uint8_t kRebiasing = 3;  // the owner waits out writers that saw kRevoked
inline constexpr std::uint8_t kShared = 4;     // held by several threads: revoked until all let go
// How long a revoked tag stays revoked before its owner biases it again.
inline constexpr std::uint64_t kRebiasAfterMs = 100;
}  // namespace bias

// One per thread tag, each on a cache line of its own: the owner writes
// in_free around each biased free; other threads only read mode unless they
// revoke.
struct alignas(64) tag_bias {
  std::atomic<std::uint8_t> mode{bias::kRevoked};
  std::atomic<std::uint8_t> in_free{0};       // written by the owner only
  // The state byte the owner's free in flight is freeing (valid while
  // in_free is set): a signal handler on the owner thread that interrupts
  // that free must not write it (before_state_write).
  std::atomic<std::atomic<std::uint8_t>*> freeing{nullptr};
  std::atomic<std::uint64_t> revoked_ms{0};   // when the last revocation ended
};

extern tag_bias g_tag_bias[state::kTags + 1];  // by tag; [0] unused (tag 0 = no owner)

// Revokes the bias of `tag`; returns once its owner writes its blocks' state
// bytes only by compare-and-exchange, leaving the tag in mode `to` (kRevoked,
// or kShared, which only the tag's release ends). Waits for nothing but the
// owner's free in flight (a few instructions), so it may be called with
// locks held. False, having done nothing, when called from a signal handler
// that interrupted this thread's own biased free or revocation: waiting
// there could wait for the interrupted code itself, or for another thread
// whose handler waits for this one.
bool revoke_bias(std::uint32_t tag, std::uint8_t to = bias::kRevoked) noexcept;

// Whether the thread that allocated a block whose state reads `st` never
// frees with a plain store now: no tag, or its bias is revoked (or shared).
inline bool owner_never_plain(std::uint8_t st) noexcept {
  const std::uint32_t tag = st >> state::kTagShift;
  if (tag == 0) return true;
  const std::uint8_t m = g_tag_bias[tag].mode.load(std::memory_order_acquire);
  return m == bias::kRevoked || m == bias::kShared;
}

// Before a thread writes the state byte sb, which read `st`. Another
// thread's live, never-observed block (the only kind its owner frees with a
// plain store): the owner's bias is revoked first. This thread's own such
// block: fine, its frees are ordered with this write by program order,
// unless this is a signal handler that interrupted the free of that very
// block. False in that case, and when a signal handler cannot revoke (see
// revoke_bias): do not write, answer as for a free block (generation 0, a
// seal `stale`, a free refused; never `intact`). Call it inside the read
// section the write is made in, before the write.
inline bool before_state_write(std::atomic<std::uint8_t>& sb, std::uint8_t st) noexcept {
  if ((st & (state::kMask | state::kObserved)) != state::kLive) return true;
  if (st == t_current.live_state) {
    const tag_bias* b = t_current.bias;
    return b == nullptr || b->in_free.load(std::memory_order_relaxed) == 0 ||
           b->freeing.load(std::memory_order_relaxed) != &sb;
  }
  return owner_never_plain(st) || revoke_bias(st >> state::kTagShift);
}

// The owner's side, from its allocation slow path: biases its tag again once
// it has stayed revoked for kRebiasAfterMs. Does nothing inside a read section.
// The common answer (not revoked: nothing to do) inline; the rest out of line.
void rebias_if_due(tag_bias* b) noexcept;
inline void maybe_rebias(tag_bias* b) noexcept {
  if (b != nullptr && b->mode.load(std::memory_order_relaxed) == bias::kRevoked) rebias_if_due(b);
}
// Tests: how long a revoked tag stays revoked (kRebiasAfterMs unless set; 0
// re-biases at every allocation slow path, so races meet biased frees often).
void set_rebias_after_ms_for_testing(std::uint64_t ms) noexcept;

// Registry transitions (registry lock held). A tag taken by a thread alone
// needs none: it is left revoked, and its owner biases it later. A tag given
// to a second thread is revoked for good (bias_tag_shared). A tag given up by
// its last thread: revoked, and no longer shared.
void bias_tag_shared(std::uint32_t tag) noexcept;
void bias_tag_released(std::uint32_t tag, bool still_held) noexcept;
// In a forked child (only the forking thread exists): a revocation or a
// re-bias that another thread had begun never ends there, and a free another
// thread had in flight never clears in_free; both are settled. Where the
// process barrier no longer works, no tag stays biased.
void bias_after_fork(bool barrier_works) noexcept;

}  // namespace dropalloc::core
