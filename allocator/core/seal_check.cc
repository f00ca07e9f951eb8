// Sealing blocks (recording witnesses, MADV_FREE) and the drop check.
#include <atomic>
#include <cerrno>
#include <mutex>

#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"

namespace dropalloc::core {

using internal::read_counter;

namespace {

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

// Bytes from a block's start to the next block's start.
inline std::size_t block_stride(const segment* s) {
  return s->per_page != 0 ? s->block_size : std::size_t{s->pages_per_block} * kPage;
}

}  // namespace

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

}  // namespace dropalloc::core
