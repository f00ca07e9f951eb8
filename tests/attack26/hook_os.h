// An OS layer over another one whose release_pages runs a hook first, with
// the range: for tests that act in the middle of a release (tests/attack26).
#pragma once

#include <errno.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "allocator/os/os.h"

namespace dropalloc::testing {

struct hook_os final : os::os_interface {
  os::os_interface& real;
  std::atomic<std::uint64_t> released_bytes{0};
  std::atomic<std::uint64_t> releases{0};
  std::atomic<std::int64_t> maps{0};
  using hook_fn = void (*)(void* ctx, void* p, std::size_t bytes);
  std::atomic<hook_fn> on_release{nullptr};
  std::atomic<int> fail_releases{0};
  std::atomic<int> in_hook{0};  // calls inside the hook now
  // Clears the hook and waits for calls inside it (the purger's) to leave.
  void clear_hook() {
    on_release = nullptr;
    while (in_hook.load() != 0) {
    }
  }  // the next this many releases are refused (EAGAIN)
  void* ctx = nullptr;
  explicit hook_os(os::os_interface& r) : real(r) {}
  void* map_arena(std::size_t b, std::size_t a, int* e) noexcept override {
    void* p = real.map_arena(b, a, e);
    if (p != nullptr) ++maps;
    return p;
  }
  void unmap_arena(void* p, std::size_t b) noexcept override {
    --maps;
    real.unmap_arena(p, b);
  }
  int extend_arena(void* p, std::size_t o, std::size_t n) noexcept override { return real.extend_arena(p, o, n); }
  void* map_metadata(std::size_t b, int* e) noexcept override { return real.map_metadata(b, e); }
  void unmap_metadata(void* p, std::size_t b) noexcept override { real.unmap_metadata(p, b); }
  int seal_pages(void* p, std::size_t b) noexcept override { return real.seal_pages(p, b); }
  int release_pages(void* p, std::size_t b) noexcept override {
    if (hook_fn f = on_release.load()) {
      ++in_hook;
      if ((f = on_release.load()) != nullptr) f(ctx, p, b);
      --in_hook;
    }
    int want = fail_releases.load();
    while (want > 0) {
      if (fail_releases.compare_exchange_weak(want, want - 1)) return EAGAIN;
    }
    released_bytes += b;
    ++releases;
    return real.release_pages(p, b);
  }
  int drop_pages(void* p, std::size_t b) noexcept override { return real.drop_pages(p, b); }
  std::size_t resident_bytes(const void* p, std::size_t b) noexcept override { return real.resident_bytes(p, b); }
  dropalloc::backing arena_backing() noexcept override { return real.arena_backing(); }
  int fallback_reason() noexcept override { return real.fallback_reason(); }
  int settle_translations() noexcept override { return real.settle_translations(); }
};

}  // namespace dropalloc::testing
