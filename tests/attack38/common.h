// Attack round 38: the address map's fold (allocator/core/segment.h). Shared
// pieces: spots 64 GiB apart whose 4 MiB steps fold onto one entry, an OS
// layer that places arenas there, and a check of the fold's invariant.
#pragma once

#include <doctest/doctest.h>

#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"

namespace attack38 {

namespace core = dropalloc::core;

constexpr std::uintptr_t kFoldSpan = std::uintptr_t{1}
                                     << (core::kSegmentShift + core::kFoldBits);
static_assert(kFoldSpan == std::uintptr_t{64} << 30);
constexpr std::uintptr_t kStep = std::uintptr_t{1} << core::kSegmentShift;

inline std::uintptr_t fold_index(std::uintptr_t a) {
  return (a >> core::kSegmentShift) & (core::kFoldEntries - 1);
}
inline std::uintptr_t fold_index(const void* p) { return fold_index(reinterpret_cast<std::uintptr_t>(p)); }

inline bool range_free(std::uintptr_t at, std::size_t bytes) {
  void* want = reinterpret_cast<void*>(at);
  void* p = mmap(want, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  bool ok = p == want;
  if (p != MAP_FAILED) munmap(p, bytes);
  return ok;
}

// A 4 MiB-aligned base such that base + k * 64 GiB (k < n), each with
// `bytes` after it, is free: far from the kernel's and the allocator's
// window (40-60 TiB). `salt` moves the search so that tests in one process
// pick different spots.
inline std::uintptr_t free_spots(int n, std::size_t bytes = 64 * kStep, unsigned salt = 0) {
  for (std::uintptr_t base = (std::uintptr_t{40} << 40) + (std::uintptr_t{salt % 512} << 31);
       base < (std::uintptr_t{60} << 40); base += (std::uintptr_t{1} << 40) + (std::uintptr_t{12} << 22)) {
    bool all_free = true;
    for (int i = 0; i < n && all_free; ++i) all_free = range_free(base + i * kFoldSpan, bytes);
    if (all_free) return base;
  }
  return 0;
}

inline void* map_at(std::uintptr_t at, std::size_t bytes) {
  void* want = reinterpret_cast<void*>(at);
  void* p = mmap(want, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == want) return p;
  if (p != MAP_FAILED) munmap(p, bytes);
  return nullptr;
}

// Maps every arena (class arenas and large blocks) at the next free
// 4 MiB-aligned spot from `cursor` on (which the test points into a chosen
// region), and extends in place with mremap. Metadata: as the fake, but
// when `poison_metadata` is set an unmapped header is made PROT_NONE and
// left (never reused): any read of it afterwards faults at once, where a
// munmap would often see the next header land on the same address.
struct placed_os : dropalloc::testing::forwarding_os {
  std::atomic<std::uintptr_t> cursor;
  std::uintptr_t stride;  // distance between successive spots
  bool poison_metadata = false;
  std::atomic<int> placed{0};
  std::atomic<int> poisoned{0};
  placed_os(dropalloc::os::os_interface& real, std::uintptr_t at, std::uintptr_t stride_ = kStep)
      : forwarding_os(real), cursor(at), stride(stride_) {}
  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    for (int tries = 0; tries < 64; ++tries) {
      const std::uintptr_t take = (bytes + alignment + stride - 1) / stride * stride;
      std::uintptr_t at = cursor.fetch_add(take);
      at = (at + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
      if (void* p = map_at(at, bytes)) {
        ++placed;
        return p;
      }
    }
    return forwarding_os::map_arena(bytes, alignment, err);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override { munmap(p, bytes); }
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override {
    return mremap(p, o, n, 0) == MAP_FAILED ? errno : 0;
  }
  void unmap_metadata(void* p, std::size_t b) noexcept override {
    if (poison_metadata) {
      mprotect(p, b, PROT_NONE);
      ++poisoned;
      return;
    }
    forwarding_os::unmap_metadata(p, b);
  }
};

// Maps the arenas at exactly the spots given in turn (one spot: every
// arena there, after the last was unmapped).
struct one_spot_os : dropalloc::testing::forwarding_os {
  std::uintptr_t spot;
  bool poison_metadata = false;
  std::atomic<int> spot_maps{0};
  one_spot_os(dropalloc::os::os_interface& real, std::uintptr_t at) : forwarding_os(real), spot(at) {}
  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    if (spot % alignment == 0) {
      if (void* p = map_at(spot, bytes)) {
        ++spot_maps;
        return p;
      }
    }
    return forwarding_os::map_arena(bytes, alignment, err);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    if (reinterpret_cast<std::uintptr_t>(p) == spot) {
      munmap(p, bytes);
      return;
    }
    forwarding_os::unmap_arena(p, bytes);
  }
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override {
    return mremap(p, o, n, 0) == MAP_FAILED ? errno : 0;
  }
  void unmap_metadata(void* p, std::size_t b) noexcept override {
    if (poison_metadata) {
      mprotect(p, b, PROT_NONE);
      return;
    }
    forwarding_os::unmap_metadata(p, b);
  }
};

// The fold's invariant at a quiescent moment: every entry names nothing or
// a segment that the table names for one of its steps that fold onto the
// entry (so the entry goes when the segment is unregistered), and that
// holds the addresses of that step. Returns the number of entries that break
// it; `named` counts the entries in use.
inline int fold_violations(int* named = nullptr) {
  int bad = 0, used = 0;
  for (std::size_t f = 0; f < core::kFoldEntries; ++f) {
    core::segment* s = core::g_segment_fold[f].load(std::memory_order_acquire);
    if (s == nullptr) continue;
    ++used;
    const auto base = reinterpret_cast<std::uintptr_t>(s->base);
    bool found = false;
    for (std::uintptr_t a = base & ~(kStep - 1); a < base + s->span && !found; a += kStep) {
      if (fold_index(a) == f && core::segment_in_table(a) == s) found = true;
    }
    if (!found) ++bad;
  }
  if (named != nullptr) *named = used;
  return bad;
}

inline void* allocate(core::heap& h, std::size_t bytes, std::size_t alignment = 16) {
  core::alloc_error err = core::alloc_error::none;
  void* p = h.allocate(bytes, alignment, &err);
  return p;
}

}  // namespace attack38
