// Biased frees: revocation, re-biasing and the registry's transitions
// (core/tag_bias.h says why each step is there).
#include "allocator/core/tag_bias.h"

#include <sched.h>
#include <time.h>

#include "allocator/core/grace.h"
#include "allocator/core/heap_internal.h"
#include "allocator/os/os.h"

namespace dropalloc::core {

tag_bias g_tag_bias[state::kTags + 1];

namespace {

std::atomic<std::uint64_t> g_rebias_after_ms{bias::kRebiasAfterMs};

// Marks this thread as revoking (t_current.revoking) for the length of a
// revocation: a signal handler that interrupts it must not wait for a
// revocation (its own, interrupted, would never end).
struct revoking_guard {
  revoking_guard() noexcept {
    t_current.revoking = true;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~revoking_guard() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t_current.revoking = false;
  }
};

// A full fence on every thread of the process. Where the barrier was
// registered but is refused now (a seccomp filter installed since), biasing
// stops for good; the owner's plain store may still sit in its store buffer,
// which drains in well under a microsecond: wait far longer than that (as a
// grace period does in the same case).
void fence_every_thread() noexcept {
  if (grace_internal::g_asymmetric.load(std::memory_order_acquire) && os::process_barrier() == 0) return;
  grace_internal::g_asymmetric.store(false, std::memory_order_seq_cst);
  struct timespec pause = {0, 10 * 1000 * 1000};
  nanosleep(&pause, nullptr);
}

}  // namespace

bool revoke_bias(std::uint32_t tag, std::uint8_t to) noexcept {
  tag_bias& b = g_tag_bias[tag];
  const tag_bias* mine = t_current.bias;
  if (t_current.revoking || (mine != nullptr && mine->in_free.load(std::memory_order_relaxed) != 0)) return false;
  revoking_guard guard;
  for (int spins = 0;; ++spins) {
    std::uint8_t m = b.mode.load(std::memory_order_acquire);
    if (m == bias::kShared || (m == bias::kRevoked && to == bias::kRevoked)) return true;
    if (m == bias::kRevoked) {  // to kShared: nothing in flight to wait for
      if (b.mode.compare_exchange_weak(m, to, std::memory_order_acq_rel)) return true;
      continue;
    }
    if (m == bias::kRevoking) {  // another thread is revoking it: wait for the end
      if (spins > 64) sched_yield();
      continue;
    }
    // kBiased, or kRebiasing (its owner waits out a grace period, and will
    // find this revocation when it tries to finish).
    if (b.mode.compare_exchange_weak(m, bias::kRevoking, std::memory_order_acq_rel)) break;
  }
  fence_every_thread();
  // The owner's free in flight, if any, read `biased` before the fence: wait
  // until its store is visible. It waits for nothing, so this ends as soon as
  // the owner runs again.
  for (int spins = 0; b.in_free.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins > 64) sched_yield();
  }
  b.revoked_ms.store(internal::now_ms(), std::memory_order_relaxed);
  b.mode.store(to, std::memory_order_release);
  return true;
}

void rebias_if_due(tag_bias* b) noexcept {
  if (!grace_internal::g_asymmetric.load(std::memory_order_relaxed)) return;
  // Not from inside a read section: the grace period below would wait for it.
  if (grace_internal::t_overflow_depth != 0 ||
      (grace_internal::t_slot != nullptr && grace_internal::t_slot->epoch.load(std::memory_order_relaxed) != 0)) {
    return;
  }
  if (internal::now_ms() - b->revoked_ms.load(std::memory_order_relaxed) <
      g_rebias_after_ms.load(std::memory_order_relaxed)) {
    return;
  }
  // From kRevoked only: a tag made shared meanwhile is kShared, and stays so.
  std::uint8_t m = bias::kRevoked;
  if (!b->mode.compare_exchange_strong(m, bias::kRebiasing, std::memory_order_acq_rel)) return;
  // Writers that found the tag revoked wrote inside a read section: once
  // those sections are over, no exchange of theirs can race a plain store.
  wait_for_readers();
  m = bias::kRebiasing;
  // Fails if a revoker came meanwhile: the tag then stays revoked (or shared).
  (void)b->mode.compare_exchange_strong(m, bias::kBiased, std::memory_order_acq_rel);
}

void set_rebias_after_ms_for_testing(std::uint64_t ms) noexcept {
  g_rebias_after_ms.store(ms, std::memory_order_relaxed);
}

void bias_tag_shared(std::uint32_t tag) noexcept {
  // Its first holder may be biased.
  if (tag != 0) (void)revoke_bias(tag, bias::kShared);  // not from a signal handler: true
}

void bias_tag_released(std::uint32_t tag, bool still_held) noexcept {
  if (tag == 0 || still_held) return;
  tag_bias& b = g_tag_bias[tag];
  // Called by the last holder at its exit (after its last free: its plain
  // stores are visible before this release store), or in a forked child for
  // a thread that does not exist there.
  b.revoked_ms.store(0, std::memory_order_relaxed);  // a new owner may bias it at once
  b.mode.store(bias::kRevoked, std::memory_order_release);
}

void bias_after_fork(bool barrier_works) noexcept {
  // One thread in the child, in its fork handler: no free is in flight
  // anywhere, and no revocation or re-bias either. Without the barrier no
  // tag is biased again (rebias_if_due).
  for (tag_bias& b : g_tag_bias) {
    b.in_free.store(0, std::memory_order_relaxed);
    const std::uint8_t m = b.mode.load(std::memory_order_relaxed);
    if (!barrier_works || m == bias::kRevoking || m == bias::kRebiasing) {
      b.mode.store(m == bias::kShared ? bias::kShared : bias::kRevoked, std::memory_order_relaxed);
    }
  }
}

}  // namespace dropalloc::core
