// A test OS layer: the private fallback's semantics with real system calls
// (private anonymous arenas, MADV_FREE for seal_pages), plus a hook that parks
// the thread calling seal_pages() *before* it advises, until released. It
// lets a test act between a seal's decision to advise and the advice itself.
#pragma once

#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "allocator/os/os.h"

namespace attack8 {

class parking_os final : public dropalloc::os::os_interface {
 public:
  // The next seal_pages() parks until release() (or a 5 s watchdog).
  void arm() { armed_.store(true); }
  // Waits (up to 5 s) for a thread to park; true if one did.
  bool wait_parked() {
    std::unique_lock<std::mutex> l(m_);
    return cv_.wait_for(l, std::chrono::seconds(5), [&] { return parked_; });
  }
  void release() {
    std::lock_guard<std::mutex> l(m_);
    released_ = true;
    cv_.notify_all();
  }
  std::atomic<int> seals{0};

  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
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
    return reinterpret_cast<void*>(aligned);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override { munmap(p, bytes); }
  void* map_metadata(std::size_t bytes, int* err) noexcept override {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      *err = errno;
      return nullptr;
    }
    return p;
  }
  void unmap_metadata(void* p, std::size_t bytes) noexcept override { munmap(p, bytes); }
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    ++seals;
    if (armed_.exchange(false)) {
      std::unique_lock<std::mutex> l(m_);
      parked_ = true;
      cv_.notify_all();
      cv_.wait_for(l, std::chrono::seconds(5), [&] { return released_; });  // watchdog
    }
    return madvise(p, bytes, MADV_FREE) == 0 ? 0 : errno;
  }
  int release_pages(void* p, std::size_t bytes) noexcept override {
    return madvise(p, bytes, MADV_DONTNEED) == 0 ? 0 : errno;
  }
  int drop_pages(void* p, std::size_t bytes) noexcept override {
    return madvise(p, bytes, MADV_DONTNEED) == 0 ? 0 : errno;
  }
  std::size_t resident_bytes(const void*, std::size_t) noexcept override { return 0; }
  dropalloc::backing arena_backing() noexcept override { return dropalloc::backing::private_fallback; }
  int fallback_reason() noexcept override { return -1; }

 private:
  std::atomic<bool> armed_{false};
  std::mutex m_;
  std::condition_variable cv_;
  bool parked_ = false;
  bool released_ = false;
};

// Reclaim of [p, p + bytes) as memory pressure would do it: MADV_PAGEOUT
// discards lazily-freed (MADV_FREE, not written since) private pages and
// leaves dirty ones (no swap needed for that). Returns 0 or errno.
inline int reclaim(void* p, std::size_t bytes) {
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
  auto a = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{4095};
  auto e = (reinterpret_cast<std::uintptr_t>(p) + bytes + 4095) & ~std::uintptr_t{4095};
  return madvise(reinterpret_cast<void*>(a), e - a, MADV_PAGEOUT) == 0 ? 0 : errno;
}

}  // namespace attack8
