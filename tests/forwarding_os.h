// An OS layer that passes every call on to another (the real one, or a fake):
// tests derive from it and override only the calls they count, fail or hook.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include "allocator/os/os.h"

namespace dropalloc::testing {

struct forwarding_os : os::os_interface {
  os::os_interface& real;
  explicit forwarding_os(os::os_interface& r) : real(r) {}
  void* map_arena(std::size_t b, std::size_t a, int* e) noexcept override { return real.map_arena(b, a, e); }
  void unmap_arena(void* p, std::size_t b) noexcept override { real.unmap_arena(p, b); }
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override { return real.extend_arena(p, o, n); }
  void* map_metadata(std::size_t b, int* e) noexcept override { return real.map_metadata(b, e); }
  void unmap_metadata(void* p, std::size_t b) noexcept override { real.unmap_metadata(p, b); }
  int seal_pages(void* p, std::size_t b) noexcept override { return real.seal_pages(p, b); }
  int release_pages(void* p, std::size_t b) noexcept override { return real.release_pages(p, b); }
  int drop_pages(void* p, std::size_t b) noexcept override { return real.drop_pages(p, b); }
  std::size_t resident_bytes(const void* p, std::size_t b) noexcept override { return real.resident_bytes(p, b); }
  backing arena_backing() noexcept override { return real.arena_backing(); }
  int fallback_reason() noexcept override { return real.fallback_reason(); }
  int settle_translations() noexcept override { return real.settle_translations(); }
};

// Its first unmap_arena after `stall` is set waits for `release`: a thread
// preempted (or a slow munmap) in the middle of unmapping a batch it took
// (core/segment.h, retire::batched). `stalled` says it is waiting.
struct stalling_os : forwarding_os {
  using forwarding_os::forwarding_os;
  std::atomic<bool> stall{false}, stalled{false}, release{false};
  void unmap_arena(void* p, std::size_t b) noexcept override {
    if (stall.exchange(false)) {
      stalled.store(true);
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    real.unmap_arena(p, b);
  }
};

}  // namespace dropalloc::testing
