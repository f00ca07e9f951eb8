// A fake OS layer for tests: ordinary private memory, with every call counted
// and failures injectable, so the core's error paths run deterministically.
#pragma once

#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>

#include "allocator/os/os.h"

namespace dropalloc::os {

class fake_os final : public os_interface {
 public:
  // Calls to map_arena / map_metadata that fail, counted from 1; 0 = none.
  std::atomic<int> fail_arena_call{0};
  std::atomic<int> fail_metadata_call{0};
  int fail_errno = ENOMEM;

  std::atomic<int> arena_maps{0}, arena_unmaps{0}, metadata_maps{0}, metadata_unmaps{0};
  std::atomic<int> seals{0}, drops{0}, releases{0};
  std::atomic<std::uint64_t> released_bytes{0};
  std::atomic<std::uint64_t> arena_bytes_mapped{0};
  // Map the next arena where the last one was unmapped (if it is the same
  // size), as the kernel often does: for tests of address reuse.
  // Atomic: unmaps come from whichever thread frees or retires an arena
  // (core/segment.h: a batch may be unmapped by another heap's thread).
  bool reuse_unmapped_arena = false;
  std::atomic<void*> last_unmapped{nullptr};
  std::atomic<std::size_t> last_unmapped_bytes{0};

  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    if (arena_maps.fetch_add(1) + 1 == fail_arena_call.load()) {
      *err = fail_errno;
      return nullptr;
    }
    void* const last = last_unmapped.load();
    if (reuse_unmapped_arena && last != nullptr && last_unmapped_bytes.load() == bytes &&
        reinterpret_cast<std::uintptr_t>(last) % alignment == 0) {
      void* p = mmap(last, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
      if (p == last) {
        last_unmapped.store(nullptr);
        arena_bytes_mapped += bytes;
        return p;
      }
      if (p != MAP_FAILED) munmap(p, bytes);  // a kernel that ignored the flag: fall through
    }
    std::size_t span = bytes + alignment;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
      *err = errno;
      return nullptr;
    }
    auto start = reinterpret_cast<std::uintptr_t>(raw);
    auto aligned = (start + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
    if (aligned > start) munmap(raw, aligned - start);
    if (start + span > aligned + bytes) munmap(reinterpret_cast<void*>(aligned + bytes), start + span - aligned - bytes);
    arena_bytes_mapped += bytes;
    return reinterpret_cast<void*>(aligned);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    ++arena_unmaps;
    arena_bytes_mapped -= bytes;
    munmap(p, bytes);
    last_unmapped = p;
    last_unmapped_bytes = bytes;
  }
  // Calls of extend_arena, and an errno value they fail with (0: none).
  std::atomic<int> extends{0};
  int extend_error = 0;
  int extend_arena(void* p, std::size_t old_bytes, std::size_t new_bytes) noexcept override {
    ++extends;
    if (extend_error != 0) return extend_error;
    if (mremap(p, old_bytes, new_bytes, 0) == MAP_FAILED) return errno;
    arena_bytes_mapped += new_bytes - old_bytes;
    return 0;
  }
  void* map_metadata(std::size_t bytes, int* err) noexcept override {
    if (metadata_maps.fetch_add(1) + 1 == fail_metadata_call.load()) {
      *err = fail_errno;
      return nullptr;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      *err = errno;
      return nullptr;
    }
    return p;
  }
  void unmap_metadata(void* p, std::size_t bytes) noexcept override {
    ++metadata_unmaps;
    munmap(p, bytes);
  }
  // Zero the pages being sealed, as a kernel drop right after the witnesses
  // were recorded would: for tests of what a seal reports then.
  std::atomic<bool> drop_on_seal{false};
  std::atomic<std::size_t> sealed_bytes{0};  // summed over seal_pages() calls
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    ++seals;
    sealed_bytes += bytes;
    if (drop_on_seal.load()) return drop_pages(p, bytes);
    return 0;
  }
  // Run before each release, for tests of what may happen meanwhile.
  void (*on_release)(void* ctx) = nullptr;
  void* on_release_ctx = nullptr;
  int release_pages(void* p, std::size_t bytes) noexcept override {
    ++releases;
    released_bytes += bytes;
    if (on_release != nullptr) on_release(on_release_ctx);
    return madvise(p, bytes, MADV_DONTNEED) == 0 ? 0 : errno;
  }
  int drop_pages(void* p, std::size_t bytes) noexcept override {
    ++drops;
    return madvise(p, bytes, MADV_DONTNEED) == 0 ? 0 : errno;
  }
  std::size_t resident_bytes(const void*, std::size_t) noexcept override { return 0; }
  // Calls of settle_translations(), and a hook run at each before the real
  // barrier (the fake's drops are real MADV_DONTNEEDs, so it needs one):
  // for tests of where in a seal the barrier falls.
  std::atomic<int> settles{0};
  using settle_hook = void (*)(void* ctx);
  settle_hook on_settle = nullptr;
  void* on_settle_ctx = nullptr;
  // Non-zero: every barrier fails with this error (as if its page could not
  // be mapped), and seals must refuse.
  int settle_error = 0;
  int settle_translations() noexcept override {
    ++settles;
    if (on_settle != nullptr) on_settle(on_settle_ctx);
    if (settle_error != 0) return settle_error;
    return translation_barrier();
  }
  backing arena_backing() noexcept override { return reported_backing; }
  // What arena_backing() answers. The fake's drops act like MAP_DROPPABLE's on
  // any page; a test of behaviour that differs between the two says which.
  backing reported_backing = backing::private_fallback;
  int fallback_reason() noexcept override { return -1; }
};

}  // namespace dropalloc::os
